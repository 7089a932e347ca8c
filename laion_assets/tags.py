"""LAION's aesthetic-tags table: every shard's metadata joined row by row with its hash and scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from laion_assets.atomic import atomic_dir, write_parquet
from laion_assets.errors import BadInputError
from laion_assets.outputs import OutputLayout, require
from laion_assets.safety import SafetyIndex
from laion_assets.schemas import TAGS_COLUMNS
from laion_assets.shards import IDENTITY_KEY, read_identities


def shard_hint(key: str) -> str:
    """The command that builds one shard's per-shard assets."""
    return f"run `dagster asset materialize --select clip_embeddings,aesthetic_scores --partition {key}` or `make demo`"


@dataclass(frozen=True)
class TagsSummary:
    """Row counts of the tags table, per shard and in all."""

    rows: int
    per_shard: dict[str, dict[str, int]]
    identities: dict[str, str]
    without_safety_tags: int = 0


def build_tags(keys: Sequence[str], layout: OutputLayout, safety: SafetyIndex | None = None) -> TagsSummary:
    """Join each shard's metadata with its scores (row-aligned, hashes checked) into ``tags/part-{key}.parquet``.

    With a ``safety`` index, punsafe/pwatermark come from LAION's separate safety table (joined on hash);
    without one they are the metadata's own. Rows left without safety tags are counted.
    """
    if not keys:
        raise BadInputError("no shards are registered: register the source's parts first (`make demo` does)")
    per_shard: dict[str, dict[str, int]] = {}
    identities: dict[str, str] = {}
    total = missing_safety = 0
    with atomic_dir(layout.tags_dir) as tmp:
        for key in keys:
            meta_path = require(layout.shard_metadata(key), f"clip_embeddings for shard {key}", shard_hint(key))
            scores_path = require(layout.shard_scores(key), f"aesthetic_scores for shard {key}", shard_hint(key))
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
            for column, identity in shard_ids.items():
                if identities.setdefault(column, identity) != identity:
                    raise BadInputError(
                        f"{scores_path}: {column} was scored by {identity} but other shards by "
                        f"{identities[column]}; re-score the stale shards first"
                    )
            table = meta.hstack(scores.drop("hash")).select(
                [pl.col(name).cast(dtype) for name, dtype in TAGS_COLUMNS.items()]
            )
            recorded = json.dumps(shard_ids, sort_keys=True)
            write_parquet(table.to_arrow(), tmp / f"part-{key}.parquet", {IDENTITY_KEY: recorded})
            unsafe_unknown = int(table["punsafe"].null_count())
            per_shard[key] = {
                "metadata": meta.height,
                "scores": scores.height,
                "tags": table.height,
                "without_safety_tags": unsafe_unknown,
            }
            total += table.height
            missing_safety += unsafe_unknown
    return TagsSummary(total, per_shard, identities, missing_safety)


def tag_files(layout: OutputLayout) -> list[Path]:
    """The tags table's part files in shard order; raises naming the folder when it is not built."""
    folder = require(layout.tags_dir, "aesthetic_tags")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise BadInputError(f"{folder}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    return files


def scan_tags(layout: OutputLayout) -> pl.LazyFrame:
    """Lazily scan the tags table in shard order; raises naming the folder when it is not built."""
    return pl.scan_parquet(tag_files(layout))
