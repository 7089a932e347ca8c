"""A concept collection for the demos: noisy copies of a few embeddings of a clip-retrieval folder.

LAION's concepts were 4.25 M Midjourney images embedded with CLIP; the demos have none, so they plant concepts near
chosen rows of their own embeddings (one cluster per chosen row), which laion_pop must then find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from laion_assets.core.atomic import save_npy
from laion_assets.pop.concepts import embedding_files
from laion_assets.sources.embeddings import l2_normalize


def write_planted_concepts(
    folder: str | Path, out: str | Path, clusters: int = 8, per_cluster: int = 24, noise: float = 0.15, seed: int = 0
) -> list[int]:
    """Write ``out/img_emb/img_emb_0.npy``: ``per_cluster`` noisy unit copies of each of ``clusters`` rows of the
    clip-retrieval ``folder`` (chosen spread out, seeded); returns the chosen rows (positions over all its files)."""
    vectors = np.concatenate([np.load(p).astype(np.float32) for p in embedding_files(str(folder))])
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(vectors)))]
    while len(chosen) < min(clusters, len(vectors)):  # farthest-first: the concepts are distinct
        nearest = (vectors @ vectors[chosen].T).max(axis=1)
        chosen.append(int(np.argmin(nearest)))
    centres = vectors[chosen]
    copies = centres[:, None, :] + noise * l2_normalize(rng.normal(size=(len(chosen), per_cluster, vectors.shape[1])))
    concepts = l2_normalize(copies.reshape(-1, vectors.shape[1])).astype(np.float16)
    target = Path(out) / "img_emb" / "img_emb_0.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_npy(concepts[rng.permutation(len(concepts))], target)
    return chosen
