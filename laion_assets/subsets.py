"""LAION's subset rules as lazy polars queries over the aesthetic-tags table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.atomic import atomic_dir
from laion_assets.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS
from laion_assets.thresholds import ENGLISH, PUNSAFE_MAX, PWATERMARK_MAX, V1Subset, V2Subset


def english_rows(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Keep English rows; a table without a LANGUAGE column is taken as all English (laion2B-en)."""
    if "LANGUAGE" not in tags.collect_schema().names():
        return tags
    return tags.filter(pl.col("LANGUAGE") == ENGLISH)


def v2_subset(tags: pl.LazyFrame, subset: V2Subset) -> pl.LazyFrame:
    """``improved_aesthetics_{t}plus``: English rows with ``AESTHETIC_SCORE >= t``, V2 subset columns."""
    return (
        english_rows(tags)
        .filter(pl.col("AESTHETIC_SCORE") >= subset.threshold)
        .select([pl.col(name).cast(dtype) for name, dtype in V2_SUBSET_COLUMNS.items()])
    )


def safe_unique(tags: pl.LazyFrame) -> pl.LazyFrame:
    """LAION's V1 pre-filter: ``punsafe < 0.5`` and ``pwatermark < 0.8``, then one row per hash (the first)."""
    return tags.filter((pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX)).unique(
        subset=["hash"], keep="first", maintain_order=True
    )


def v1_subset(tags: pl.LazyFrame, subset: V1Subset, filtered: bool = False) -> pl.LazyFrame:
    """laion-aesthetic / laion-art: safe, de-duplicated rows with ``aesthetic > t``, LAION's column order.

    ``filtered=True`` only selects the columns, for rows already chosen by :func:`v1_keep_rows`.
    """
    if "LANGUAGE" not in tags.collect_schema().names():
        tags = tags.with_columns(pl.lit(None, dtype=pl.String).alias("LANGUAGE"))
    if not filtered:
        tags = safe_unique(tags).filter(pl.col("aesthetic") > subset.threshold)
    return tags.select([pl.col(name).cast(dtype) for name, dtype in V1_SUBSET_COLUMNS.items()])


SUBSET_FILE = "part-00000.parquet"


def write_subset(query: pl.LazyFrame, folder: Path) -> Path:
    """Stream a subset query into ``folder/part-00000.parquet``; the folder is replaced only on success."""
    with atomic_dir(folder) as tmp:
        query.sink_parquet(tmp / SUBSET_FILE, compression="zstd", compression_level=3, statistics=True)
    return folder / SUBSET_FILE


def subset_rows(path: Path) -> int:
    """Row count of a written subset file (read from its footer)."""
    return pq.ParquetFile(path).metadata.num_rows


def top_rows(path: Path, column: str, n: int = 10) -> pl.DataFrame:
    """The n highest-scoring rows of a subset file, for previews."""
    return pl.scan_parquet(path).sort(column, descending=True).head(n).collect()


def rule_violations(path: Path, rule: V1Subset | V2Subset) -> int:
    """Count rows of a written subset that break its rule (threshold, language, safety, duplicates)."""
    frame = pl.scan_parquet(path)
    if isinstance(rule, V2Subset):
        bad = pl.col("AESTHETIC_SCORE") < rule.threshold
        return int(frame.filter(bad | pl.col("AESTHETIC_SCORE").is_null()).select(pl.len()).collect().item())
    bad = (
        (pl.col("aesthetic") <= rule.threshold)
        | (pl.col("punsafe") >= PUNSAFE_MAX)
        | (pl.col("pwatermark") >= PWATERMARK_MAX)
        | pl.col("aesthetic").is_null()
    )
    counts = frame.select(bad.sum().alias("bad"), (pl.len() - pl.col("hash").n_unique()).alias("dups")).collect()
    return int(counts["bad"].item() + counts["dups"].item())


def v1_keep_rows(files: Sequence[Path], rule: V1Subset) -> list[np.ndarray]:
    """Row numbers, per tags file, of the rows in a V1 subset (safe, first per hash, ``aesthetic > t``).

    Only four narrow columns of every file are held at once, so the de-duplication by hash across the whole table
    costs about 17 bytes a row, whatever the captions and URLs weigh.
    """
    hashes, safe, scores, sizes = [], [], [], []
    for path in files:
        narrow = pl.read_parquet(path, columns=["hash", "punsafe", "pwatermark", "aesthetic"])
        ok = ((pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX)).fill_null(False)
        safe.append(narrow.select(ok).to_series().to_numpy())
        hashes.append(narrow["hash"].to_numpy())
        scores.append(narrow["aesthetic"].cast(pl.Float32).fill_null(np.nan).to_numpy())
        sizes.append(narrow.height)
    if not sizes:
        return []
    safe_rows = np.flatnonzero(np.concatenate(safe))
    _, first = np.unique(np.concatenate(hashes)[safe_rows], return_index=True)  # first occurrence of each hash
    keep = np.sort(safe_rows[first])
    keep = keep[np.concatenate(scores)[keep] > rule.threshold]
    bounds = np.cumsum([0, *sizes])
    return [keep[(keep >= lo) & (keep < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def write_v1_subset(files: Sequence[Path], rule: V1Subset, folder: Path) -> Path:
    """Write a V1 subset one tags file at a time (the same rows as :func:`v1_subset`), memory bounded by one part."""
    schema = pl.DataFrame(schema=V1_SUBSET_COLUMNS).to_arrow().schema
    with atomic_dir(folder) as tmp:
        with pq.ParquetWriter(tmp / SUBSET_FILE, schema, compression="zstd", compression_level=3) as writer:
            for path, rows in zip(files, v1_keep_rows(files, rule), strict=True):
                if rows.size:
                    part = pl.read_parquet(path)[rows]
                    writer.write_table(v1_subset(part.lazy(), rule, filtered=True).collect().to_arrow().cast(schema))
    return folder / SUBSET_FILE


def write_rule(files: Sequence[Path], rule: V1Subset | V2Subset, folder: Path) -> Path:
    """Write one subset of the tags table (given as its part files) into ``folder/part-00000.parquet``."""
    if isinstance(rule, V2Subset):
        return write_subset(v2_subset(pl.scan_parquet(list(files)), rule), folder)
    return write_v1_subset(files, rule, folder)
