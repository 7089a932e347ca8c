"""LAION's aesthetic-tags table: every shard's metadata joined row by row with its hash and scores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from laion_assets.core.atomic import atomic_dir, atomic_path, write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import stat_fingerprint
from laion_assets.core.outputs import OutputLayout
from laion_assets.scoring.parts import IDENTITY_KEY, read_identities
from laion_assets.selection.safety_columns import SAFETY_COLUMNS, SafetySources, choose, origin_counts
from laion_assets.selection.schemas import SCORE_COLUMNS, TAGS_COLUMNS
from laion_assets.sources.indexing import VALIDATION_ID_KEY, Validation
from laion_assets.sources.metadata import missing_url
from laion_assets.sources.safety import NO_SAFETY_ID, SafetyIndex

# Each tags part records what it was built from for its own shard (its validation, its scores' predictors, the
# safety table joined and the sha256 of its two input files' rows), digested into its part id; the id of the whole table
# (all shards' validations, the predictors and the safety table: ``tags_table_id``) and every part's id live in one
# sidecar, ``tags/_table.json``, written last inside the folder swap (content only, no paths or times: rebuilds in
# two folders agree byte for byte). A rebuild carries over a part whose inputs did not change, so one changed shard
# rewrites one part; a hidden ``.tags-inputs.json`` beside the folder remembers the input files' fingerprints, so
# only files written since are hashed again. Outputs computed from the tags record the table id they read
# (``built_from``).
TAGS_ID_KEY = "laion_assets.tags_id"  # the table id: in the sidecar (in part footers only in tables built before it)
PART_ID_KEY = "laion_assets.tags_part_id"
SAFETY_ID_KEY = "laion_assets.safety_id"
BUILT_FROM = ".built-from"
TABLE_FILE = "_table.json"
# Bump when a part's content would differ for the same inputs (columns, casts, join): every part is then rewritten.
PART_FORMAT = 2


def tags_table_id(
    validation_ids: Mapping[str, str],
    identities: Mapping[str, str],
    safety_id: str,
    sources: SafetySources | None = None,
) -> str:
    """The id of a tags table: a digest of what it was built from (no paths or times, so rebuilds agree)."""
    content: dict[str, object] = {"shards": dict(sorted(validation_ids.items())),
                                  "predictors": dict(sorted(identities.items())), "safety": safety_id}  # fmt: skip
    if sources is not None and sources != SafetySources():  # the default keeps the ids of tables built before
        content["safety_sources"] = sources.as_dict()
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def tags_part_id(
    key: str,
    validation_id: str,
    identities: Mapping[str, str],
    safety_id: str,
    inputs: Mapping[str, str],
    sources: SafetySources | None = None,
) -> str:
    """The id of one tags part: its shard, validation, predictors, safety table and sources, input files' sha256."""
    content = {
        "format": PART_FORMAT,
        "key": key,
        "validation": validation_id,
        "predictors": dict(sorted(identities.items())),
        "safety": safety_id,
        "safety_sources": (sources or SafetySources()).as_dict(),
        "inputs": dict(sorted(inputs.items())),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _footer(path: Path) -> dict[bytes, bytes]:
    return pq.read_schema(path).metadata or {}


def read_table_record(folder: Path) -> dict | None:
    """The sidecar a tags folder records (None when there is none); raises naming it when it is unreadable."""
    path = Path(folder) / TABLE_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable ({exc}); re-materialize aesthetic_tags") from exc
    if not isinstance(record, dict) or not isinstance(record.get("parts"), dict) or "table_id" not in record:
        raise BadInputError(f"{path}: not a tags table record; re-materialize aesthetic_tags")
    return record


def _check_parts_belong(files: Sequence[Path], folder: Path, record: Mapping) -> None:
    """Every file is a part the sidecar lists, with the part id it lists, and no listed part is missing."""
    listed: Mapping[str, Mapping] = record["parts"]
    keys = {Path(f).stem.removeprefix("part-"): Path(f) for f in files}
    missing = sorted(set(listed) - set(keys))
    if missing:
        raise BadInputError(
            f"{folder}: the tags table lists part(s) {missing[:10]} that are not there (removed or not pulled); "
            "re-materialize aesthetic_tags"
        )
    for key, path in sorted(keys.items()):
        entry = listed.get(key)
        found = _footer(path).get(PART_ID_KEY.encode(), b"").decode()
        if entry is None or found != entry.get("part_id"):
            why = (
                "is not one of its parts"
                if entry is None
                else f"records part {found or 'none'}, not {entry.get('part_id')}"
            )
            raise BadInputError(
                f"{path}: mixed tags table: this file {why} of table {record['table_id']} ({folder / TABLE_FILE}); "
                "re-materialize aesthetic_tags"
            )


def recorded_ids(files: Sequence[Path], key: str = TAGS_ID_KEY) -> str:
    """The id the tags table records under ``key`` (the table id by default, ``SAFETY_ID_KEY``, or a footer key).

    Reads the table's sidecar and checks that ``files`` are exactly its parts (each with the part id it lists);
    raises naming the file when a part is missing, foreign or rebuilt apart from the table. A table built before
    the sidecar records the id in every part's footer instead: those must all agree.
    """
    if not files:
        raise BadInputError("aesthetic_tags: no tags parts given; re-materialize aesthetic_tags")
    folders = {Path(f).parent for f in files}
    folder = Path(files[0]).parent
    record = read_table_record(folder) if len(folders) == 1 else None
    if record is not None:
        _check_parts_belong(files, folder, record)
        if key == TAGS_ID_KEY:
            return str(record["table_id"])
        if key == SAFETY_ID_KEY:
            return str(record["safety_id"])
    if record is None and len(folders) == 1 and any(PART_ID_KEY.encode() in _footer(f) for f in files):
        raise BadInputError(
            f"{folder}: the tags parts belong to a table whose record {TABLE_FILE} is missing (a half-copied "
            "folder?); re-materialize aesthetic_tags"
        )
    found = {_footer(f).get(key.encode(), b"").decode() for f in files}
    if len(found) != 1 or "" in found or len(folders) != 1:
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
    """Row counts of the tags table, per shard and in all, and which parts a rebuild wrote or carried over."""

    rows: int
    per_shard: dict[str, dict[str, int]]
    identities: dict[str, str]
    without_safety_tags: int = 0
    without_url: int = 0
    without_caption: int = 0
    duplicate_rows_within_shards: int = 0
    duplicate_rows: int = 0
    table_id: str = ""
    origins: dict[str, int] = field(default_factory=dict)  # rows per origin: {"punsafe/computed": n, …}
    rewritten: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def parquet_data_sha256(path: Path) -> str:
    """sha256 of a parquet file's rows: its column chunks and its schema, without its footer's key-value entries.

    The footer of an indexed metadata file records the validation with the source's paths and times, which differ
    between two data roots of the same content; the part id names what was validated by the validation id instead.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - 8, 0))
        tail = f.read(8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise BadInputError(f"{path}: not a parquet file; re-materialize the asset that writes it")
        end = size - 8 - int.from_bytes(tail[:4], "little")
        digest = hashlib.sha256(pq.read_schema(path).remove_metadata().to_string().encode())
        f.seek(0)
        while f.tell() < end:
            digest.update(f.read(min(1 << 20, end - f.tell())))
    return digest.hexdigest()


def _input_record(path: Path, before: Mapping | None) -> dict[str, object]:
    """A file's fingerprint and data sha256, taken from ``before`` when the fingerprint did not change."""
    now = stat_fingerprint(path)
    if before is not None and all(before.get(k) == v for k, v in now.items()) and before.get("sha256"):
        return {**now, "sha256": before["sha256"]}
    # Rewritten (or pulled again) since: only the content says whether it changed.
    return {**now, "sha256": parquet_data_sha256(path)}


def _seen_path(layout: OutputLayout) -> Path:
    """Where this working copy keeps its input files' fingerprints and sha256 (beside ``tags/``, never in it)."""
    return layout.tags_dir.with_name(f".{layout.tags_dir.name}-inputs.json")


def _read_seen(layout: OutputLayout) -> dict:
    """The input files' fingerprints and sha256 the last build saw; empty when unknown (everything is hashed)."""
    try:
        seen = json.loads(_seen_path(layout).read_text())
    except (OSError, ValueError):
        return {}
    return seen if isinstance(seen, dict) else {}


def _seen_entry(seen: Mapping, key: str, name: str) -> Mapping | None:
    entry = seen.get(key)
    found = entry.get(name) if isinstance(entry, dict) else None
    return found if isinstance(found, dict) else None


def _write_seen(layout: OutputLayout, fingerprints: Mapping[str, object]) -> None:
    """Remember the input files' fingerprints and sha256, so the next build hashes only the files written since."""
    try:
        with atomic_path(_seen_path(layout)) as tmp:
            tmp.write_text(json.dumps(fingerprints, sort_keys=True))
    except OSError:  # only a cache: without it the next build hashes its inputs again
        pass


def _carry_over(source: Path, target: Path) -> None:
    """Put an unchanged part into the new folder without rewriting it: a hard link, or a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(source, target)


def _kept_entry(old: Mapping | None, part_id: str, old_part: Path) -> Mapping | None:
    """The previous table's entry for a part when that part is still the one wanted (same part id, file intact)."""
    if old is None or old.get("part_id") != part_id or not old_part.is_file():
        return None
    try:
        recorded = _footer(old_part).get(PART_ID_KEY.encode(), b"").decode()
    except (OSError, pa.ArrowException):
        return None
    return old if recorded == part_id and isinstance(old.get("counts"), dict) else None


def _aligned(path: Path, frame: pl.DataFrame, meta: pl.DataFrame, meta_path: Path, step: str, key: str) -> None:
    """Raise naming ``path`` when its rows are not ``meta``'s rows (same count, same hashes in the same order)."""
    if meta.height != frame.height:
        raise BadInputError(
            f"{path}: {frame.height} rows but {meta_path} has {meta.height}; re-materialize {step} for shard {key}"
        )
    if not meta["hash"].equals(frame["hash"]):
        raise BadInputError(
            f"{path}: hashes are not row-aligned with {meta_path}; re-materialize {step} for shard {key}"
        )


def _write_part(
    key: str, validation: Validation, layout: OutputLayout, safety: SafetyIndex | None, recorded: dict[str, str],
    target: Path, sources: SafetySources,
) -> dict[str, int]:  # fmt: skip
    """Join one shard's metadata, scores and safety values into ``target``; returns its row counts."""
    meta_path = layout.require(layout.shard_metadata(key), f"clip_embeddings for shard {key}")
    scores_path = layout.require(layout.shard_scores(key), f"aesthetic_scores for shard {key}")
    meta = pl.read_parquet(meta_path)
    provided = dict(zip(SAFETY_COLUMNS, safety.lookup(meta["hash"].to_numpy()), strict=True)) if safety else {}
    scores = pl.read_parquet(scores_path)
    _aligned(scores_path, scores, meta, meta_path, "aesthetic_scores", key)
    computed = {"punsafe": scores["punsafe"] if "punsafe" in scores.columns else None, "pwatermark": None}
    watermark_path = layout.shard_watermark(key)
    if watermark_path.is_file():
        watermark = pl.read_parquet(watermark_path, columns=["hash", "pwatermark"])
        _aligned(watermark_path, watermark, meta, meta_path, "image_embeddings", key)
        computed["pwatermark"] = watermark["pwatermark"]
    chosen = []
    for column, source in sources.as_dict().items():
        chosen.extend(choose(column, provided.get(column, meta[column]), computed[column], source))
    score_columns = [c for c in SCORE_COLUMNS if c != "hash"]
    table = (
        meta.with_columns(chosen)
        .hstack(scores.select(score_columns))
        .select([pl.col(name).cast(dtype) for name, dtype in TAGS_COLUMNS.items()])
    )
    write_parquet(table.to_arrow(), target, recorded)
    counts = table.select(
        (pl.col("punsafe").is_null() | pl.col("pwatermark").is_null()).sum().alias("without_safety_tags"),
        missing_url().sum().alias("without_url"),
        pl.col("TEXT").is_null().sum().alias("without_caption"),
        (pl.len() - pl.col("hash").n_unique()).alias("duplicate_rows"),
    ).row(0, named=True)
    return {"metadata": meta.height, "scores": scores.height, "tags": table.height, **counts, **origin_counts(table)}


def build_tags(
    validations: Mapping[str, Validation],
    layout: OutputLayout,
    safety: SafetyIndex | None = None,
    safety_id: str = NO_SAFETY_ID,
    fetch: Callable[[Path], object] | None = None,
    sources: SafetySources | None = None,
) -> TagsSummary:
    """Join each shard's metadata with its scores (row-aligned, hashes checked) into ``tags/part-{key}.parquet``.

    ``validations`` are the shards that passed the gate (``gating.gate_shards``), each part recording the
    validation it was built from. LAION's punsafe/pwatermark (*provided*) come from its separate safety table
    (joined on hash) when a ``safety`` index is given, else from the metadata itself; our heads' (*computed*) from
    the shard's scores (``punsafe``) and its ``watermark.parquet`` (``pwatermark``); ``sources`` says which to use
    per column (:mod:`laion_assets.selection.safety_columns`) and each row records which it got. Rows without
    safety tags, without a URL or without a caption are counted, and so are repeated hashes, within a shard and
    across the whole table.

    Incremental: a part of the previous table whose part id is unchanged (same validation, predictors, safety table
    and input file contents) is carried over as it is (hard-linked); only the others are written. The new folder,
    its sidecar last, replaces the old one in one rename, so a failure leaves the previous table whole. ``fetch``
    brings a part that is about to be carried over into the working copy first (a remote data root's pull; the
    previous table's ``_table.json`` must be pulled before).
    """
    if not validations:
        raise BadInputError(
            "no shards are registered: register the source's parts first (`laion-assets register SOURCE`, "
            "or turn on new_shards_sensor)"
        )
    sources = sources or SafetySources()
    shard_ids: dict[str, dict[str, str]] = {}
    identities: dict[str, str] = {}
    for key in sorted(validations):  # every shard must be scored by the same heads; the table id names them
        scores_path = layout.require(layout.shard_scores(key), f"aesthetic_scores for shard {key}")
        scored = [scores_path]
        if layout.shard_watermark(key).is_file():  # the watermark head's file, for URL shards it scored
            scored.append(layout.shard_watermark(key))
        shard_ids[key] = {}
        for path in scored:
            for column, identity in ((c, str(i)) for c, i in read_identities(path).items()):
                shard_ids[key][column] = identity
                if identities.setdefault(column, identity) != identity:
                    raise BadInputError(
                        f"{path}: {column} was scored by {identity} but other shards by "
                        f"{identities[column]}; re-score the stale shards first"
                    )
    table_id = tags_table_id({k: v.id for k, v in validations.items()}, identities, safety_id, sources)
    try:
        previous = read_table_record(layout.tags_dir) if layout.tags_dir.is_dir() else None
    except BadInputError:
        previous = None  # an unreadable record: nothing is carried over, the whole table is rebuilt
    old_parts: Mapping[str, Mapping] = previous["parts"] if previous else {}
    seen = _read_seen(layout)
    fingerprints: dict[str, dict[str, dict[str, object]]] = {}
    per_shard: dict[str, dict[str, int]] = {}
    parts: dict[str, dict[str, object]] = {}
    rewritten: list[str] = []
    kept: list[str] = []
    with atomic_dir(layout.tags_dir) as tmp:
        for key, validation in sorted(validations.items()):
            old = old_parts.get(key)
            files = [
                ("metadata", layout.shard_metadata(key), "clip_embeddings"),
                ("scores", layout.shard_scores(key), "aesthetic_scores"),
            ]
            if layout.shard_watermark(key).is_file():
                files.append(("watermark", layout.shard_watermark(key), "image_embeddings"))
            inputs = {
                name: _input_record(layout.require(path, f"{step} for shard {key}"), _seen_entry(seen, key, name))
                for name, path, step in files
            }
            part_id = tags_part_id(
                key,
                validation.id,
                shard_ids[key],
                safety_id,
                {n: str(r["sha256"]) for n, r in inputs.items()},
                sources,
            )
            fingerprints[key] = inputs
            target = tmp / f"part-{key}.parquet"
            if fetch is not None and isinstance(old, Mapping) and old.get("part_id") == part_id:
                fetch(layout.tags_part(key))  # only parts that will be carried over are brought down
            carried = _kept_entry(old, part_id, layout.tags_part(key))
            if carried is not None:
                _carry_over(layout.tags_part(key), target)
                counts = {k: int(v) for k, v in carried["counts"].items()}
                kept.append(key)
            else:
                # The validation's id only (content hashes and settings, no paths or times): tags stay reproducible.
                recorded = {
                    IDENTITY_KEY: json.dumps(shard_ids[key], sort_keys=True),
                    VALIDATION_ID_KEY: validation.id,
                    SAFETY_ID_KEY: safety_id,
                    PART_ID_KEY: part_id,
                }
                counts = _write_part(key, validation, layout, safety, recorded, target, sources)
                rewritten.append(key)
            per_shard[key] = counts
            parts[key] = {
                "part_id": part_id,
                "validation_id": validation.id,
                "inputs": {name: record["sha256"] for name, record in inputs.items()},
                "counts": counts,
            }
        distinct = pl.scan_parquet(sorted(tmp.glob("part-*.parquet"))).select(pl.col("hash").n_unique()).collect()
        record = {"format": PART_FORMAT, "table_id": table_id, "safety_id": safety_id,
                  "safety_sources": sources.as_dict(), "predictors": dict(sorted(identities.items())),
                  "parts": parts}  # fmt: skip
        (tmp / TABLE_FILE).write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")  # last: names the parts
    _write_seen(layout, fingerprints)
    totals = {name: sum(c.get(name, 0) for c in per_shard.values()) for name in next(iter(per_shard.values()))}
    return TagsSummary(
        rows=totals["tags"],
        per_shard=per_shard,
        identities=identities,
        without_safety_tags=totals["without_safety_tags"],
        without_url=totals["without_url"],
        without_caption=totals["without_caption"],
        duplicate_rows_within_shards=totals["duplicate_rows"],
        duplicate_rows=totals["tags"] - int(distinct.item()),
        table_id=table_id,
        origins={name: totals[name] for name in totals if "/" in name},
        rewritten=tuple(rewritten),
        kept=tuple(kept),
        removed=tuple(sorted(set(old_parts) - set(validations))),
    )


def safety_columns_record(folder: Path) -> dict[str, dict[str, object]]:
    """Per safety column: its configured source, the rows provided and computed, and the head that computed them.

    Read from the tags table's record (``_table.json``); what a release manifest and card say about punsafe and
    pwatermark. A table built before sources were chosen reports the default source and no counts.
    """
    record = read_table_record(folder) or {}
    sources = SafetySources.from_dict(record.get("safety_sources")).as_dict()
    parts = record.get("parts", {}).values()
    heads = record.get("predictors", {})
    out: dict[str, dict[str, object]] = {}
    for column, source in sources.items():
        entry: dict[str, object] = {"from": source}
        for origin in ("provided", "computed"):
            entry[f"{origin}_rows"] = sum(int(p.get("counts", {}).get(f"{column}/{origin}", 0)) for p in parts)
        entry["head"] = heads.get(column)
        out[column] = entry
    return out


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
