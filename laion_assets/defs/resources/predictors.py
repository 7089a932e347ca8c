"""The active aesthetic predictors: V1 (``aesthetic``) and V2 (``AESTHETIC_SCORE``)."""

from functools import lru_cache
from pathlib import Path

import dagster as dg

from laion_assets.paths import resolve
from laion_assets.predictors import CLIP_L14_DIM, Predictor, load_predictor

V1_COLUMN = "aesthetic"
V2_COLUMN = "AESTHETIC_SCORE"


@lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, size: int, dim: int) -> Predictor:
    # Keyed on mtime and size too, so replacing a weights file in place loads the new one.
    return load_predictor(path, dim)


def load_cached(path: str | Path, dim: int = CLIP_L14_DIM) -> Predictor:
    """Load a predictor once per process (per file version)."""
    path = resolve(path)
    stat = path.stat() if path.exists() else None
    if stat is None:
        return load_predictor(path, dim)  # raises the clear "not found" error
    return _cached(path, stat.st_mtime_ns, stat.st_size, dim)


class PredictorsResource(dg.ConfigurableResource):
    """Weights files of the V1 and V2 predictors (LAION's released heads by default)."""

    v1_weights: str = "data/models/sa_0_4_vit_l_14_linear.pth"
    v2_weights: str = "data/models/sac+logos+ava1-l14-linearMSE.pth"

    def load(self, dim: int = CLIP_L14_DIM) -> dict[str, Predictor]:
        """Return ``{score column: predictor}`` for every active predictor."""
        return {V1_COLUMN: load_cached(self.v1_weights, dim), V2_COLUMN: load_cached(self.v2_weights, dim)}
