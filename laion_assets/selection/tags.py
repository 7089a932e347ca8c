"""LAION's aesthetic-tags table: every shard's metadata joined row by row with its hash and scores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import atomic_dir, write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import OutputLayout
from laion_assets.scoring.parts import IDENTITY_KEY, read_identities
from laion_assets.selection.schemas import TAGS_COLUMNS
from laion_assets.sources.indexing import VALIDATION_ID_KEY, Validation
from laion_assets.sources.metadata import missing_url
from laion_assets.sources.safety import NO_SAFETY_ID, SafetyIndex

# Every tags part records the id of the whole table (its shards' validations, the predictors and the safety table)
# and of the safety table it joined; outputs computed from the tags record the table id they read (``built_from``).
TAGS_ID_KEY = "laion_assets.tags_id"
SAFETY_ID_KEY = "laion_assets.safety_id"
BUILT_FROM = ".built-from"


def tags_table_id(validation_ids: Mapping[str, str], identities: Mapping[str, str], safety_id: str) -> str:
    """The id of a tags table: a digest of what it was built from (no paths or times, so rebuilds agree)."""
    content = {"shards": dict(sorted(validation_ids.items())), "predictors": dict(sorted(identities.items())),
               "safety": safety_id}  # fmt: skip
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def recorded_ids(files: Sequence[Path], key: str = TAGS_ID_KEY) -> str:
    """The id every tags part records under ``key``; raises when a part records none or they disagree."""
    found = {(pq.read_schema(f).metadata or {}).get(key.encode(), b"").decode() for f in files}
    if len(found) != 1 or "" in found:
        folder = Path(files[0]).parent if files else "aesthetic_tags"
        raise BadInputError(
            f"{folder}: the tags parts do not record one table id (built by an older laion-assets, or mixed); "
            "re-materialize aesthetic_tags"
        )
    return found.pop()


def built_from_path(output: Path) -> Path:
    """Where an output records the tags table it was computed from: inside a folder, else a hidden sibling."""
    return output / BUILT_FROM if output.is_dir() else output.with_name(f".{output.name}{BUILT_FROM}")


def write_built_from(record: Path, tags_id: str) -> None:
    """Record the tags table id an output was computed from (write it after the output it describes)."""
    record.write_text(tags_id + "\n")


def read_built_from(output: Path) -> str | None:
    """The tags table id an output records, or None."""
    record = built_from_path(output)
    return record.read_text().strip() if record.is_file() else None


def shard_hint(key: str) -> str:
    """The command that builds one shard's per-shard assets."""
    return f"run `dagster asset materialize --select clip_embeddings,aesthetic_scores --partition {key}`"


@dataclass(frozen=True)
class TagsSummary:
    """Row counts of the tags table, per shard and in all."""

    rows: int
    per_shard: dict[str, dict[str, int]]
    identities: dict[str, str]
    without_safety_tags: int = 0
    without_url: int = 0
    without_caption: int = 0
    duplicate_rows_within_shards: int = 0
    duplicate_rows: int = 0


def build_tags(
    validations: Mapping[str, Validation],
    layout: OutputLayout,
    safety: SafetyIndex | None = None,
    safety_id: str = NO_SAFETY_ID,
) -> TagsSummary:
    """Join each shard's metadata with its scores (row-aligned, hashes checked) into ``tags/part-{key}.parquet``.

    ``validations`` are the shards that passed the gate (``gating.gate_shards``), each part recording the
    validation it was built from. With a ``safety`` index, punsafe/pwatermark come from LAION's separate safety
    table (joined on hash); without one they are the metadata's own. Rows without safety tags, without a URL or
    without a caption are counted, and so are repeated hashes, within a shard and across the whole table.
    """
    if not validations:
        raise BadInputError(
            "no shards are registered: register the source's parts first (`laion-assets register SOURCE`, "
            "or turn on new_shards_sensor)"
        )
    per_shard: dict[str, dict[str, int]] = {}
    identities: dict[str, str] = {}
    for key in sorted(validations):  # every shard must be scored by the same predictors; the table id names them
        scores_path = layout.require(layout.shard_scores(key), f"aesthetic_scores for shard {key}")
        for column, identity in read_identities(scores_path).items():
            if identities.setdefault(column, str(identity)) != str(identity):
                raise BadInputError(
                    f"{scores_path}: {column} was scored by {identity} but other shards by "
                    f"{identities[column]}; re-score the stale shards first"
                )
    table_id = tags_table_id({k: v.id for k, v in validations.items()}, identities, safety_id)
    totals = dict.fromkeys(("rows", "safety", "url", "caption", "dups"), 0)
    with atomic_dir(layout.tags_dir) as tmp:
        for key, validation in sorted(validations.items()):
            meta_path = layout.require(layout.shard_metadata(key), f"clip_embeddings for shard {key}")
            scores_path = layout.require(layout.shard_scores(key), f"aesthetic_scores for shard {key}")
            meta = pl.read_parquet(meta_path)
            if safety is not None:
                meta = meta.with_columns(*safety.lookup(meta["hash"].to_numpy()))
            scores = pl.read_parquet(scores_path)
            if meta.height != scores.height:
                raise BadInputError(
                    f"{scores_path}: {scores.height} rows but {meta_path} has {meta.height}; "
                    f"re-materialize aesthetic_scores for shard {key}"
                )
            if not meta["hash"].equals(scores["hash"]):
                raise BadInputError(f"{scores_path}: hashes are not row-aligned with {meta_path}")
            shard_ids = {k: str(v) for k, v in read_identities(scores_path).items()}
            table = meta.hstack(scores.drop("hash")).select(
                [pl.col(name).cast(dtype) for name, dtype in TAGS_COLUMNS.items()]
            )
            # The validation's id only (content hashes and settings, no paths or times): tags stay reproducible.
            recorded = {
                IDENTITY_KEY: json.dumps(shard_ids, sort_keys=True),
                VALIDATION_ID_KEY: validation.id,
                TAGS_ID_KEY: table_id,
                SAFETY_ID_KEY: safety_id,
            }
            write_parquet(table.to_arrow(), tmp / f"part-{key}.parquet", recorded)
            counts = table.select(
                pl.col("punsafe").is_null().sum().alias("without_safety_tags"),
                missing_url().sum().alias("without_url"),
                pl.col("TEXT").is_null().sum().alias("without_caption"),
                (pl.len() - pl.col("hash").n_unique()).alias("duplicate_rows"),
            ).row(0, named=True)
            per_shard[key] = {"metadata": meta.height, "scores": scores.height, "tags": table.height, **counts}
            totals["rows"] += table.height
            totals["safety"] += counts["without_safety_tags"]
            totals["url"] += counts["without_url"]
            totals["caption"] += counts["without_caption"]
            totals["dups"] += counts["duplicate_rows"]
        distinct = pl.scan_parquet(sorted(tmp.glob("part-*.parquet"))).select(pl.col("hash").n_unique()).collect()
    return TagsSummary(
        rows=totals["rows"],
        per_shard=per_shard,
        identities=identities,
        without_safety_tags=totals["safety"],
        without_url=totals["url"],
        without_caption=totals["caption"],
        duplicate_rows_within_shards=totals["dups"],
        duplicate_rows=totals["rows"] - int(distinct.item()),
    )


def tag_files(layout: OutputLayout) -> list[Path]:
    """The tags table's part files in shard order; raises naming the folder when it is not built."""
    folder = layout.require(layout.tags_dir, "aesthetic_tags")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise BadInputError(f"{folder}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    return files


def scan_tags(layout: OutputLayout) -> pl.LazyFrame:
    """Lazily scan the tags table in shard order; raises naming the folder when it is not built."""
    return pl.scan_parquet(tag_files(layout))
