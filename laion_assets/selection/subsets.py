"""LAION's subset rules as lazy polars queries over the aesthetic-tags table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import atomic_dir, naming_write_errors
from laion_assets.core.errors import OutputWriteError
from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS
from laion_assets.selection.tags import BUILT_FROM, recorded_ids, write_built_from
from laion_assets.selection.thresholds import PUNSAFE_MAX, PWATERMARK_MAX, V1Subset, V2Subset
from laion_assets.sources.metadata import ENGLISH, missing_url


def english_rows(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Keep English rows: ``LANGUAGE == "en"``; a null LANGUAGE is unknown, not English.

    A source without a language column has its declared language filled in at indexing (``metadata.read_metadata``),
    so laion2B-en's rows arrive here as English.
    """
    return tags.filter(pl.col("LANGUAGE") == ENGLISH)


def publishable(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Drop rows with a null or blank URL: img2dataset cannot fetch them, so no published subset carries them."""
    return tags.filter(~missing_url())


def v2_subset(tags: pl.LazyFrame, subset: V2Subset) -> pl.LazyFrame:
    """``improved_aesthetics_{t}plus``: English rows with a URL and ``AESTHETIC_SCORE >= t``, V2 subset columns."""
    return (
        publishable(english_rows(tags))
        .filter(pl.col("AESTHETIC_SCORE") >= subset.threshold)
        .select([pl.col(name).cast(dtype) for name, dtype in V2_SUBSET_COLUMNS.items()])
    )


def _safe() -> pl.Expr:
    return (pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX)


def safe_unique(tags: pl.LazyFrame) -> pl.LazyFrame:
    """LAION's V1 pre-filter: ``punsafe < 0.5``, ``pwatermark < 0.8`` (and a URL), then one row per hash (the first)."""
    return publishable(tags.filter(_safe())).unique(subset=["hash"], keep="first", maintain_order=True)


def v1_subset(tags: pl.LazyFrame, subset: V1Subset, filtered: bool = False) -> pl.LazyFrame:
    """laion-aesthetic / laion-art: safe, de-duplicated rows with ``aesthetic > t``, LAION's column order.

    ``filtered=True`` only selects the columns, for rows already chosen by :func:`v1_keep_rows`.
    """
    if not filtered:
        tags = safe_unique(tags).filter(pl.col("aesthetic") > subset.threshold)
    return tags.select([pl.col(name).cast(dtype) for name, dtype in V1_SUBSET_COLUMNS.items()])


def rule_funnel(files: Sequence[Path], rule: V1Subset | V2Subset, rows: int) -> dict[str, int]:
    """Where a rule's candidates went: rows meeting the score threshold, and how many each filter dropped.

    ``rows`` is the written subset's row count; for V1 the rows lost to de-duplication are what remains.
    """
    tags = pl.scan_parquet(list(files))
    url = ~missing_url()
    if isinstance(rule, V2Subset):
        candidate = pl.col("AESTHETIC_SCORE") >= rule.threshold
        english = (pl.col("LANGUAGE") == ENGLISH).fill_null(False)
        counts = tags.select(
            candidate.sum().alias("candidates"),
            (candidate & ~english).sum().alias("dropped_by_language"),
            (candidate & english & ~url).sum().alias("dropped_without_url"),
        )
        return {k: int(v) for k, v in counts.collect().row(0, named=True).items()}
    candidate = pl.col("aesthetic") > rule.threshold
    tagged = pl.col("punsafe").is_not_null() & pl.col("pwatermark").is_not_null()
    safe = _safe().fill_null(False)
    counts = tags.select(
        candidate.sum().alias("candidates"),
        (candidate & ~tagged).sum().alias("dropped_without_safety_tags"),
        (candidate & tagged & ~safe).sum().alias("dropped_unsafe_or_watermarked"),
        (candidate & safe & ~url).sum().alias("dropped_without_url"),
        (candidate & safe & url).sum().alias("kept_before_dedup"),
    )
    funnel = {k: int(v) for k, v in counts.collect().row(0, named=True).items()}
    funnel["dropped_by_language"] = 0  # laion-aesthetic and laion-art were cut from every language
    funnel["dropped_duplicate_hash"] = funnel.pop("kept_before_dedup") - rows
    return funnel


SUBSET_FILE = "part-00000.parquet"


def write_subset(query: pl.LazyFrame, folder: Path, tags_id: str | None = None) -> Path:
    """Stream a subset query into ``folder/part-00000.parquet``; the folder is replaced only on success.

    ``tags_id`` (the tags table the query reads) is recorded beside the file, in the same folder swap.
    """
    with atomic_dir(folder) as tmp:
        target = tmp / SUBSET_FILE
        try:
            with naming_write_errors(target):
                query.sink_parquet(target, compression="zstd", compression_level=3, statistics=True)
        except pl.exceptions.ComputeError as exc:  # a full disk can also surface as a broken parquet footer
            raise OutputWriteError(f"{target}: writing failed: {exc}; nothing was replaced") from exc
        if tags_id is not None:
            write_built_from(tmp / BUILT_FROM, tags_id)
    return folder / SUBSET_FILE


def subset_rows(path: Path) -> int:
    """Row count of a written subset file (read from its footer)."""
    return pq.ParquetFile(path).metadata.num_rows


def top_rows(path: Path, column: str, n: int = 10) -> pl.DataFrame:
    """The n highest-scoring rows of a subset file, for previews."""
    return pl.scan_parquet(path).sort(column, descending=True).head(n).collect()


def rule_violations(path: Path, rule: V1Subset | V2Subset) -> int:
    """Count rows of a written subset that break its rule (threshold, URL, safety, duplicates)."""
    frame = pl.scan_parquet(path)
    if isinstance(rule, V2Subset):
        # The V2 columns carry no LANGUAGE: the language rule is checked by the recount (``audit``) instead.
        bad = (pl.col("AESTHETIC_SCORE") < rule.threshold) | missing_url()
        return int(frame.filter(bad.fill_null(True)).select(pl.len()).collect().item())
    bad = (
        (pl.col("aesthetic") <= rule.threshold)
        | (pl.col("punsafe") >= PUNSAFE_MAX)
        | (pl.col("pwatermark") >= PWATERMARK_MAX)
        | missing_url()
    ).fill_null(True)
    counts = frame.select(bad.sum().alias("bad"), (pl.len() - pl.col("hash").n_unique()).alias("dups")).collect()
    return int(counts["bad"].item() + counts["dups"].item())


def v1_keep_rows(files: Sequence[Path], rule: V1Subset) -> list[np.ndarray]:
    """Row numbers, per tags file, of the rows in a V1 subset (safe, first per hash, ``aesthetic > t``).

    Only narrow columns of one file are read at a time and three arrays kept (hash, safe, score), so the
    de-duplication by hash across the whole table costs about 13 bytes a row, whatever the captions and URLs weigh.
    """
    hashes, safe, scores, sizes = [], [], [], []
    for path in files:
        narrow = pl.read_parquet(path, columns=["hash", "punsafe", "pwatermark", "aesthetic", "URL"])
        ok = (_safe() & ~missing_url()).fill_null(False)
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


def write_v1_subset(files: Sequence[Path], rule: V1Subset, folder: Path, tags_id: str | None = None) -> Path:
    """Write a V1 subset one tags file at a time (the same rows as :func:`v1_subset`), memory bounded by one part."""
    schema = pl.DataFrame(schema=V1_SUBSET_COLUMNS).to_arrow().schema
    with atomic_dir(folder) as tmp:
        with pq.ParquetWriter(tmp / SUBSET_FILE, schema, compression="zstd", compression_level=3) as writer:
            for path, rows in zip(files, v1_keep_rows(files, rule), strict=True):
                if rows.size:
                    part = pl.read_parquet(path)[rows]
                    writer.write_table(v1_subset(part.lazy(), rule, filtered=True).collect().to_arrow().cast(schema))
        if tags_id is not None:
            write_built_from(tmp / BUILT_FROM, tags_id)
    return folder / SUBSET_FILE


def write_rule(files: Sequence[Path], rule: V1Subset | V2Subset, folder: Path) -> Path:
    """Write one subset of the tags table (given as its part files) into ``folder/part-00000.parquet``.

    The folder also records which tags table it was cut from, so a release never pairs it with another one.
    """
    tags_id = recorded_ids(files)
    if isinstance(rule, V2Subset):
        return write_subset(v2_subset(pl.scan_parquet(list(files)), rule), folder, tags_id)
    return write_v1_subset(files, rule, folder, tags_id)
