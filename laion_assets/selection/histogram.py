"""LAION's score histogram: ten integer buckets ``'0-1' … '9-10'`` printed as millions (``'2.66M'``).

A score s falls in bucket ``floor(s)`` clipped to 0..9, so scores below 0 count in ``'0-1'`` and scores of
10 or more in ``'9-10'``; every row is counted exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

N_BUCKETS = 10
LABELS = tuple(f"{k}-{k + 1}" for k in range(N_BUCKETS))


def integer_buckets(scores: np.ndarray) -> np.ndarray:
    """Return each score's bucket index, ``clip(floor(s), 0, 9)``."""
    return np.clip(np.floor(np.asarray(scores, dtype=np.float64)), 0, N_BUCKETS - 1).astype(np.int64)


def histogram_counts(scores: np.ndarray) -> dict[str, int]:
    """Count scores per integer bucket, keyed ``'0-1' … '9-10'``."""
    counts = np.bincount(integer_buckets(scores), minlength=N_BUCKETS)
    return {label: int(c) for label, c in zip(LABELS, counts, strict=True)}


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Add two histograms bucket by bucket."""
    return {label: a.get(label, 0) + b.get(label, 0) for label in LABELS}


def millions(count: int) -> str:
    """Format a count LAION-style: ``2660000 -> '2.66M'``."""
    return f"{count / 1e6:.2f}M"


def laion_text(counts: dict[str, int]) -> str:
    """Render counts as LAION printed them: ``{'0-1': '2.66M', …}``."""
    return repr({label: millions(counts.get(label, 0)) for label in LABELS})


def bucket_sentence(low: float, high: float, count: int, total: int) -> str:
    """LAION's gallery heading: ``In bucket a - b there is P.PP% (N.NNM) samples:``."""
    share = 100.0 * count / total if total else 0.0
    return f"In bucket {low:g} - {high:g} there is {share:.2f}% ({millions(count)}) samples:"


def lazy_counts(frame: pl.LazyFrame, column: str) -> dict[str, int]:
    """Histogram of one score column of a (lazy, possibly huge) table, computed by the streaming engine."""
    bucket = pl.col(column).cast(pl.Float64).floor().clip(0, N_BUCKETS - 1).cast(pl.Int64).alias("bucket")
    counted = frame.select(bucket).group_by("bucket").len().collect(engine="streaming")
    found = dict(zip(counted["bucket"].to_list(), counted["len"].to_list(), strict=True))
    return {label: int(found.get(k, 0)) for k, label in enumerate(LABELS)}


def histogram_document(frame: pl.LazyFrame, columns: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """Counts and LAION's text of each score column: ``{"counts": {col: {...}}, "laion": {col: "..."}}``."""
    counts = {column: lazy_counts(frame, column) for column in columns}
    return {"counts": counts, "laion": {column: laion_text(c) for column, c in counts.items()}}


def write_histogram(document: dict, path: Path) -> Path:
    """Write a histogram document as stable JSON (sorted keys, fixed indent) atomically."""
    from laion_assets.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path
