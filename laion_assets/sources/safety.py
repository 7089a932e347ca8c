"""LAION's safety tags from a separate table, joined on ``hash`` as LAION's aesthetic join did.

LAION released ``punsafe``/``pwatermark`` in its "joined" metadata (``URL, TEXT, WIDTH, HEIGHT, similarity, hash,
punsafe, pwatermark``, many parquet files), apart from the embeddings. We de-duplicate those tags by hash (the
first row wins, files in path order), fill a missing ``pwatermark`` with 0.5, sort by hash and store three
row-aligned columns (``hash.npy`` int64, ``punsafe.npy`` and ``pwatermark.npy`` float32). A shard then finds its
rows by binary search over the memory-mapped hashes, so the join never loads the whole table per shard.
Rows whose hash is absent get null safety tags: they are counted and left out of laion_aesthetic/laion_art.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_dir, save_npy
from laion_assets.core.errors import BadInputError, LaionAssetsError, MissingUpstreamError, SourceChangedError
from laion_assets.core.locations import (
    Location,
    changed_fields,
    file_sha256,
    list_files,
    parquet_columns,
    read_parquet,
    stat_fingerprint,
)

MISSING_PWATERMARK = 0.5
INDEX_FILES = ("hash.npy", "punsafe.npy", "pwatermark.npy")
SOURCE_RECORD = "source.json"  # which table files the index was built from (fingerprint and sha256 of each)
NO_SAFETY_ID = "none"  # the safety id of tags whose punsafe/pwatermark come from the metadata itself


@dataclass(frozen=True)
class SafetyIndexSummary:
    """What building the safety index read and kept."""

    files: int
    rows_read: int
    unique_hashes: int
    pwatermark_filled: int


def _read_safety_file(path: Location) -> pl.DataFrame:
    columns = parquet_columns(path)
    if "hash" not in columns:
        raise BadInputError(
            f"{path}: safety table has no 'hash' column (columns: {columns}); LAION's joined metadata keys "
            "every row by hash = mmh3.hash64(url + text)"
        )
    if "punsafe" not in columns:
        raise BadInputError(f"{path}: safety table has no 'punsafe' column (columns: {columns})")
    wanted = ["hash", "punsafe"] + (["pwatermark"] if "pwatermark" in columns else [])
    frame = read_parquet(path, columns=wanted)
    if "pwatermark" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float32).alias("pwatermark"))
    try:
        return frame.select(
            pl.col("hash").cast(pl.Int64), pl.col("punsafe").cast(pl.Float32), pl.col("pwatermark").cast(pl.Float32)
        )
    except pl.exceptions.PolarsError as exc:
        raise BadInputError(f"{path}: safety columns have the wrong type: {exc}") from exc


def _table_files(source: Location) -> list[Location]:
    if not source.exists():
        raise MissingUpstreamError(f"{source}: safety table folder not found (the `safety` setting points there)")
    files = list_files(source, ".parquet") if source.is_dir() else [source]
    if not files:
        raise BadInputError(f"{source}: no parquet files found for the safety table")
    return files


def _relative(path: Location, source: Location) -> str:
    return path.name if path == source else str(path)[len(str(source).rstrip("/")) + 1 :]


def build_safety_index(source: Location, out: Path) -> SafetyIndexSummary:
    """Read every parquet file below ``source`` and write the sorted, de-duplicated index into ``out``.

    The index records, in ``source.json``, each table file's size, mtime or etag and sha256 as read, so later steps
    can tell whether the table changed since and a release names exactly the table it joined.
    """
    files = _table_files(source)
    record = []
    for f in files:
        before = stat_fingerprint(f)
        record.append({"path": _relative(f, source), **before, "sha256": file_sha256(f)})
    frame = pl.concat([_read_safety_file(f) for f in files])
    rows = frame.height
    unique = frame.unique(subset=["hash"], keep="first", maintain_order=True)
    filled = int(unique["pwatermark"].null_count())
    unique = unique.with_columns(pl.col("pwatermark").fill_null(MISSING_PWATERMARK)).sort("hash")
    for f, entry in zip(files, record, strict=True):
        if stat_fingerprint(f) != {k: entry[k] for k in entry if k not in ("path", "sha256")}:
            raise BadInputError(f"{f}: changed while safety_tags read it; run again once the table is complete")
    with atomic_dir(out) as tmp:
        for name in ("hash", "punsafe", "pwatermark"):
            save_npy(unique[name].to_numpy(), tmp / f"{name}.npy")
        (tmp / SOURCE_RECORD).write_text(json.dumps({"source": str(source), "files": record}, indent=2, sort_keys=True))
    return SafetyIndexSummary(len(files), rows, unique.height, filled)


@dataclass(frozen=True)
class SafetySource:
    """The table a safety index was built from: its location and each file's fingerprint and sha256."""

    source: str
    files: list[dict[str, object]]

    @property
    def id(self) -> str:
        """A digest of the table's content (file names and sha256), independent of where it lies."""
        content = sorted((str(f["path"]), str(f["sha256"])) for f in self.files)
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]

    @classmethod
    def read(cls, folder: Path) -> SafetySource:
        """The record ``build_safety_index`` wrote in ``folder``; raises naming it when there is none."""
        path = folder / SOURCE_RECORD
        if not path.is_file():
            raise MissingUpstreamError(
                f"safety_tags is not materialized (or was built by an older laion-assets): {path} is missing; "
                "run `dagster asset materialize --select safety_tags`"
            )
        return cls(**json.loads(path.read_text()))

    def changes(self, source: Location) -> list[str]:
        """How the table at ``source`` differs from what was indexed (files added, removed or rewritten)."""
        try:
            now = {_relative(f, source): f for f in _table_files(source)}
        except LaionAssetsError as exc:
            return [str(exc)]
        recorded = {str(f["path"]): f for f in self.files}
        changes = [f"{rel} added" for rel in sorted(set(now) - set(recorded))]
        changes += [f"{rel} removed" for rel in sorted(set(recorded) - set(now))]
        for rel in sorted(set(now) & set(recorded)):
            fields = changed_fields(recorded[rel], now[rel])
            if fields:
                changes.append(f"{rel} changed ({', '.join(fields)})")
        if str(source) != self.source:
            changes.insert(0, f"the safety setting now points to {source}, the index was built from {self.source}")
        return changes


def check_safety_current(source: Location | None, folder: Path) -> str:
    """The safety id the tags must record: the index's, checked unchanged against ``source`` (or "none")."""
    if source is None:
        return NO_SAFETY_ID
    changes = SafetySource.read(folder).changes(source)
    if changes:
        raise SourceChangedError(
            f"the safety table changed since safety_tags indexed it ({'; '.join(changes[:5])}); re-materialize "
            "safety_tags (and aesthetic_tags after it)"
        )
    return SafetySource.read(folder).id


@dataclass(frozen=True)
class SafetyIndex:
    """The memory-mapped safety index: sorted hashes with their punsafe and pwatermark."""

    hashes: np.ndarray
    punsafe: np.ndarray
    pwatermark: np.ndarray

    @classmethod
    def open(cls, folder: Path) -> SafetyIndex:
        """Memory-map an index written by :func:`build_safety_index`."""
        for name in INDEX_FILES:
            if not (folder / name).is_file():
                raise MissingUpstreamError(
                    f"safety_tags is not materialized yet ({folder / name} is missing): "
                    "run `dagster asset materialize --select safety_tags`."
                )
        return cls(*(np.load(folder / name, mmap_mode="r") for name in INDEX_FILES))

    def lookup(self, hashes: np.ndarray) -> tuple[pl.Series, pl.Series]:
        """Return (punsafe, pwatermark) for each hash, null where the hash has no safety tags."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if self.hashes.shape[0] == 0:
            return pl.Series("punsafe", [None] * len(hashes), pl.Float32), pl.Series(
                "pwatermark", [None] * len(hashes), pl.Float32
            )
        pos = np.searchsorted(self.hashes, hashes)
        pos_clipped = np.minimum(pos, self.hashes.shape[0] - 1)
        found = self.hashes[pos_clipped] == hashes
        punsafe = np.where(found, self.punsafe[pos_clipped], np.nan).astype(np.float32)
        pwatermark = np.where(found, self.pwatermark[pos_clipped], np.nan).astype(np.float32)
        return (
            pl.Series("punsafe", punsafe).fill_nan(None),
            pl.Series("pwatermark", pwatermark).fill_nan(None),
        )
