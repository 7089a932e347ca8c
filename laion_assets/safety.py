"""LAION's safety tags from a separate table, joined on ``hash`` as LAION's aesthetic join did.

LAION released ``punsafe``/``pwatermark`` in its "joined" metadata (``URL, TEXT, WIDTH, HEIGHT, similarity, hash,
punsafe, pwatermark``, many parquet files), apart from the embeddings. We de-duplicate those tags by hash (the
first row wins, files in path order), fill a missing ``pwatermark`` with 0.5, sort by hash and store three
row-aligned columns (``hash.npy`` int64, ``punsafe.npy`` and ``pwatermark.npy`` float32). A shard then finds its
rows by binary search over the memory-mapped hashes, so the join never loads the whole table per shard.
Rows whose hash is absent get null safety tags: they are counted and left out of laion_aesthetic/laion_art.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.atomic import atomic_dir, save_npy
from laion_assets.errors import BadInputError, MissingUpstreamError
from laion_assets.locations import Location, list_files, parquet_columns, read_parquet

MISSING_PWATERMARK = 0.5
INDEX_FILES = ("hash.npy", "punsafe.npy", "pwatermark.npy")


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


def build_safety_index(source: Location, out: Path) -> SafetyIndexSummary:
    """Read every parquet file below ``source`` and write the sorted, de-duplicated index into ``out``."""
    if not source.exists():
        raise MissingUpstreamError(f"{source}: safety table folder not found (the `safety` setting points there)")
    files = list_files(source, ".parquet") if source.is_dir() else [source]
    if not files:
        raise BadInputError(f"{source}: no parquet files found for the safety table")
    frame = pl.concat([_read_safety_file(f) for f in files])
    rows = frame.height
    unique = frame.unique(subset=["hash"], keep="first", maintain_order=True)
    filled = int(unique["pwatermark"].null_count())
    unique = unique.with_columns(pl.col("pwatermark").fill_null(MISSING_PWATERMARK)).sort("hash")
    with atomic_dir(out) as tmp:
        for name in ("hash", "punsafe", "pwatermark"):
            save_npy(unique[name].to_numpy(), tmp / f"{name}.npy")
    return SafetyIndexSummary(len(files), rows, unique.height, filled)


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
