"""k-means over the concept vectors (faiss), as LAION did for LAION-POP (10,000 centroids of 4.25 M CLIP vectors).

Training runs on at most ``k * max_points_per_centroid`` seeded rows (faiss's own cap, 256 per centroid); then
every concept vector is assigned to its nearest centroid, which gives the cluster sizes and the inertia (the sum
of squared distances to the assigned centroid over all rows). Spherical k-means by default: CLIP vectors are
compared by inner product, and the centroids are L2-normalised so they query the kNN index like any embedding.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.pop.concepts import Concepts, iter_vectors, sample_vectors
from laion_assets.sources.embeddings import l2_normalize

LAION_K = 10_000


@dataclass(frozen=True)
class KmeansParams:
    """How the centroids are trained."""

    k: int = LAION_K
    niter: int = 20
    seed: int = 0
    spherical: bool = True
    max_points_per_centroid: int = 256
    nredo: int = 1  # restarts from other seeds, the lowest objective kept (faiss's nredo)

    def to_dict(self) -> dict[str, object]:
        """The parameters as recorded."""
        return asdict(self)


@dataclass(frozen=True)
class Centroids:
    """Trained centroids (k, d) float32, with the training's and the full assignment's figures."""

    vectors: np.ndarray
    sizes: np.ndarray  # concept vectors assigned to each centroid (all rows, not only the training sample)
    inertia: float
    training_rows: int
    objective: list[float]  # faiss's objective per iteration on the training sample
    seconds: float

    def summary(self) -> dict[str, object]:
        """Cluster-size figures for metadata: min, median, max, mean and how many are empty."""
        sizes = self.sizes
        return {
            "k": len(sizes),
            "inertia": self.inertia,
            "training_rows": self.training_rows,
            "sizes_min": int(sizes.min()),
            "sizes_median": float(np.median(sizes)),
            "sizes_max": int(sizes.max()),
            "sizes_mean": float(sizes.mean()),
            "empty_clusters": int((sizes == 0).sum()),
        }


def train_centroids(concepts: Concepts, params: KmeansParams) -> Centroids:
    """Train ``params.k`` centroids on the collection and assign every concept vector to its nearest one."""
    import faiss

    if params.k < 1:
        raise BadInputError(f"pop_centroids: k must be at least 1, got {params.k}")
    if params.k > concepts.rows:
        raise BadInputError(
            f"pop_centroids: k={params.k} centroids but the concept collection ({concepts.source}) has only "
            f"{concepts.rows} vectors: lower k (LAION used 10,000 for 4.25 M concept images)"
        )
    start = time.perf_counter()
    sample = sample_vectors(concepts, params.k * params.max_points_per_centroid, params.seed)
    kmeans = faiss.Kmeans(
        concepts.dim,
        params.k,
        niter=params.niter,
        seed=params.seed,
        spherical=params.spherical,
        max_points_per_centroid=params.max_points_per_centroid,
        nredo=params.nredo,
        verbose=False,
    )
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    vectors = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    if params.spherical:
        vectors = l2_normalize(vectors).astype(np.float32)
    sizes, inertia = assign(concepts, vectors)
    objective = [float(x) for x in kmeans.obj] if kmeans.obj is not None else []
    return Centroids(vectors, sizes, inertia, len(sample), objective, time.perf_counter() - start)


def assign(concepts: Concepts, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    """Cluster sizes and inertia: every concept vector to its nearest centroid (squared L2 distance)."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    sizes = np.zeros(len(centroids), dtype=np.int64)
    inertia = 0.0
    for _, chunk in iter_vectors(concepts):
        distances, labels = index.search(np.ascontiguousarray(chunk), 1)
        sizes += np.bincount(labels[:, 0], minlength=len(centroids))
        inertia += float(distances[:, 0].astype(np.float64).sum())
    return sizes, inertia
