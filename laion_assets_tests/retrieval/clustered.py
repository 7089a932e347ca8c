"""Generated CLIP-like embeddings: unit vectors around a few hundred centres, with a decaying spectrum of spread.

Real CLIP embeddings sit in clusters (subjects, styles) and vary along a few directions much more than the rest
(their PCA spectrum decays); isotropic noise in 768 dimensions would make every neighbour nearly equidistant, which
no real set is. So each vector is ``centre + noise @ basis``, with the noise's variance along a random orthonormal
basis falling as ``1 / i``, normalised to unit length, stored float16 like the embeddings LAION ships.
"""

from __future__ import annotations

import numpy as np


def clustered_embeddings(
    rows: int, dim: int, *, centres: int = 300, seed: int = 0, spread: float = 0.6, block: int = 20000
) -> np.ndarray:
    """``rows`` x ``dim`` float16 unit vectors from a seeded mixture of ``centres`` clusters on the sphere."""
    rng = np.random.default_rng(seed)
    middles = rng.standard_normal((centres, dim)).astype(np.float32)
    middles /= np.linalg.norm(middles, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = np.arange(1, dim + 1, dtype=np.float64) ** -0.5
    scales *= spread / np.sqrt((scales**2).sum())
    basis = (scales[:, None] * rotation.T).astype(np.float32)
    out = np.empty((rows, dim), dtype=np.float16)
    for start in range(0, rows, block):
        n = min(block, rows - start)
        x = middles[rng.integers(0, centres, n)] + rng.standard_normal((n, dim), dtype=np.float32) @ basis
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + n] = x
    return out
