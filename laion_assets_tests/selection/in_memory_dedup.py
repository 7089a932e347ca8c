"""The V1 de-duplication as it was before it streamed (every safe hash in memory), kept only to compare against.

``subsets.v1_keep_rows`` replaced it on the asset path; the tests and ``bench/release.py`` check that both pick the
same rows in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.selection.thresholds import PUNSAFE_MAX, PWATERMARK_MAX, V1Subset
from laion_assets.sources.metadata import missing_url


def in_memory_keep_rows(files: Sequence[Path], rule: V1Subset) -> list[np.ndarray]:
    """Row numbers, per tags file, of the rows in a V1 subset: np.unique over every safe hash of the table."""
    hashes, safe, scores, sizes = [], [], [], []
    for path in files:
        narrow = pl.read_parquet(path, columns=["hash", "punsafe", "pwatermark", "aesthetic", "URL"])
        ok = ((pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX) & ~missing_url()).fill_null(
            False
        )
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
