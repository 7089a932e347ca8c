"""The active aesthetic predictors: V1 (``aesthetic``) and V2 (``AESTHETIC_SCORE``)."""

from functools import lru_cache
from pathlib import Path

import dagster as dg

from laion_assets.active import read_active
from laion_assets.paths import resolve
from laion_assets.predictors import CLIP_L14_DIM, Predictor, PredictorIdentity, load_predictor

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
    """Weights files of the V1 and V2 predictors; empty means "as ``predictors.yaml`` says" (LAION's released heads)."""

    v1_weights: str = ""
    v2_weights: str = ""
    config_file: str = "predictors.yaml"

    def weights(self) -> dict[str, str]:
        """Return ``{score column: weights path}``: explicit settings win over the predictors file."""
        v1, v2 = self.v1_weights, self.v2_weights
        if not (v1 and v2):
            active = read_active(resolve(self.config_file))
            v1, v2 = v1 or active[V1_COLUMN], v2 or active[V2_COLUMN]
        return {V1_COLUMN: v1, V2_COLUMN: v2}

    def load(self, dim: int = CLIP_L14_DIM) -> dict[str, Predictor]:
        """Return ``{score column: predictor}`` for every active predictor."""
        return {column: load_cached(path, dim) for column, path in self.weights().items()}

    def identities(self, dim: int = CLIP_L14_DIM) -> dict[str, PredictorIdentity]:
        """Return ``{score column: identity}`` of the active predictors."""
        return {column: predictor.identity for column, predictor in self.load(dim).items()}
