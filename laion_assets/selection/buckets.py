"""LAION's aesthetic bucket embeddings and the aesthetic-guided query of clip-retrieval.

For k in 0..9, ``rating{k}`` is the L2-normalised sum of the embeddings whose V1 score s has
``k <= s <= k + 1``; both edges are inclusive (as LAION did), so a score of exactly 5.0 counts in buckets 4
and 5. Each is saved as float32 with shape (1, d).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from laion_assets.core.atomic import save_npy
from laion_assets.sources.embeddings import iter_chunks, l2_normalize

N_BUCKETS = 10


def bucket_membership(scores: np.ndarray) -> np.ndarray:
    """Return an (n, 10) float32 0/1 matrix: row i is in bucket k when ``k <= s_i <= k + 1``."""
    ks = np.arange(N_BUCKETS, dtype=np.float32)
    s = np.asarray(scores, dtype=np.float32)[:, None]
    return ((s >= ks) & (s <= ks + 1)).astype(np.float32)


class BucketAccumulator:
    """Sums embeddings per bucket across chunks and shards, then normalises them."""

    def __init__(self, dim: int) -> None:
        self.sums = np.zeros((N_BUCKETS, dim), dtype=np.float64)
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)

    def add(self, embeddings: np.ndarray, scores: np.ndarray) -> None:
        """Add a chunk of float32 embeddings with their V1 scores."""
        member = bucket_membership(scores)
        self.sums += (member.T @ np.asarray(embeddings, dtype=np.float32)).astype(np.float64)
        self.counts += member.sum(axis=0).astype(np.int64)

    def vectors(self) -> np.ndarray:
        """Return the (10, d) float32 bucket embeddings; an empty bucket stays a zero vector."""
        return l2_normalize(self.sums).astype(np.float32)


def save_buckets(vectors: np.ndarray, folder: str | Path) -> list[Path]:
    """Write ``rating{k}.npy`` (float32, shape (1, d)) for each bucket into ``folder``."""
    folder = Path(folder)
    return [save_npy(vectors[k : k + 1].astype(np.float32), folder / f"rating{k}.npy") for k in range(len(vectors))]


def aesthetic_query(query: np.ndarray, rating: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """clip-retrieval's aesthetic-guided query: ``(q + w * rating[k]) / ||q + w * rating[k]||``."""
    return l2_normalize(np.asarray(query, dtype=np.float32) + weight * np.asarray(rating, dtype=np.float32).reshape(-1))


def accumulate_part(acc: BucketAccumulator, embeddings: np.ndarray, scores: np.ndarray) -> None:
    """Add one (memory-mapped) part and its V1 scores to ``acc``, chunk by chunk."""
    for start, chunk in iter_chunks(embeddings):
        acc.add(chunk, scores[start : start + chunk.shape[0]])
