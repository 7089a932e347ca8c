"""LAION's subset rules as lazy polars queries over the aesthetic-tags table."""

from __future__ import annotations

from pathlib import Path

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


def v1_subset(tags: pl.LazyFrame, subset: V1Subset) -> pl.LazyFrame:
    """laion-aesthetic / laion-art: safe, de-duplicated rows with ``aesthetic > t``, LAION's column order."""
    if "LANGUAGE" not in tags.collect_schema().names():
        tags = tags.with_columns(pl.lit(None, dtype=pl.String).alias("LANGUAGE"))
    return (
        safe_unique(tags)
        .filter(pl.col("aesthetic") > subset.threshold)
        .select([pl.col(name).cast(dtype) for name, dtype in V1_SUBSET_COLUMNS.items()])
    )


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
