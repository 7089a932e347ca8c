"""CPU cost of the NSFW head (``punsafe``) per million rows, beside the V1 linear head, as ``HeadScores`` runs them.

Scores 2,048-row float32 chunks (the fused pass's chunk size) with one BLAS thread (``limit_threads``, as
``aesthetic_scores`` and ``laion-assets score`` do), cycling over a pool of distinct chunks so that no matrix is
generated inside the measurement. Prints CPU seconds (process, ``os.times``) per 1M rows and the load average.

    python bench/nsfw.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from laion_assets.core.paths import NSFW_L14_WEIGHTS, V1_WEIGHTS
from laion_assets.core.threads import limit_threads
from laion_assets.scoring.predictors import load_for_column
from laion_assets.scoring.stored import SCORE_CHUNK_ROWS


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    """Measure both heads on the same chunks, one after the other, in one run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((16, SCORE_CHUNK_ROWS, 768)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=2, keepdims=True)
    heads = {
        "punsafe": load_for_column(NSFW_L14_WEIGHTS, "punsafe"),
        "aesthetic": load_for_column(V1_WEIGHTS, "aesthetic"),
    }
    chunks = -(-args.rows // SCORE_CHUNK_ROWS)
    print(f"load average before: {os.getloadavg()}")
    with limit_threads():
        for name, head in heads.items():
            started = cpu()
            for i in range(chunks):
                head.score(pool[i % len(pool)])
            seconds = cpu() - started
            per_million = seconds * 1_000_000 / (chunks * SCORE_CHUNK_ROWS)
            print(
                f"{name}: {seconds:.2f} s CPU for {chunks * SCORE_CHUNK_ROWS:,} rows = {per_million:.2f} s per 1M rows"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
