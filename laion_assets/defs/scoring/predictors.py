"""The active aesthetic predictors: V1 (``aesthetic``) and V2 (``AESTHETIC_SCORE``)."""

from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from laion_assets.core.paths import resolve
from laion_assets.scoring.active import read_active, read_forced
from laion_assets.scoring.predictors import CLIP_L14_DIM, Predictor, PredictorIdentity, load_for_column

V1_COLUMN = "aesthetic"
V2_COLUMN = "AESTHETIC_SCORE"


@lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, size: int, column: str, dim: int, force: bool) -> Predictor:
    # Keyed on mtime and size too, so replacing a weights file in place loads the new one.
    return load_for_column(path, column, dim, force)


def load_cached(path: str | Path, column: str, dim: int = CLIP_L14_DIM, force: bool = False) -> Predictor:
    """Load the predictor of ``column`` once per process (per file version), refusing a misfit unless ``force``."""
    path = resolve(path)
    stat = path.stat() if path.exists() else None
    if stat is None:
        return load_for_column(path, column, dim, force)  # raises the clear "not found" error
    return _cached(path, stat.st_mtime_ns, stat.st_size, column, dim, force)


class PredictorsResource(dg.ConfigurableResource):
    """Weights files of the V1 and V2 predictors; empty means "as ``predictors.yaml`` says" (LAION's released heads)."""

    v1_weights: str = Field(default="", description="V1 head for `aesthetic` (empty: as config_file says)")
    v2_weights: str = Field(default="", description="V2 head for `AESTHETIC_SCORE` (empty: as config_file says)")
    config_file: str = Field(default="predictors.yaml", description="score column -> weights file, plus `force`")
    force: bool = Field(
        default=False,
        description="Use every configured head even if it does not fit its column (a V2 head as `aesthetic`, a V1 "
        "head as `AESTHETIC_SCORE`, simulacra's heads, NaN/Inf in the weights). The release's manifest and card then "
        "say it was forced. Per column: the config file's `force` list (`laion-assets activate ... --force`).",
    )

    def weights(self) -> dict[str, str]:
        """Return ``{score column: weights path}``: explicit settings win over the predictors file."""
        v1, v2 = self.v1_weights, self.v2_weights
        if not (v1 and v2):
            active = read_active(resolve(self.config_file))
            v1, v2 = v1 or active[V1_COLUMN], v2 or active[V2_COLUMN]
        return {V1_COLUMN: v1, V2_COLUMN: v2}

    def forced(self) -> list[str]:
        """Score columns whose weights are used even if they do not fit: all with ``force``, else the file's list."""
        if self.force:
            return [V1_COLUMN, V2_COLUMN]
        explicit = {V1_COLUMN: self.v1_weights, V2_COLUMN: self.v2_weights}
        if all(explicit.values()):
            return []
        # The file's force list only covers the columns whose weights come from the file.
        return [c for c in read_forced(resolve(self.config_file)) if not explicit[c]]

    def load(self, dim: int = CLIP_L14_DIM) -> dict[str, Predictor]:
        """Return ``{score column: predictor}`` for every active predictor."""
        forced = self.forced()
        return {column: load_cached(path, column, dim, column in forced) for column, path in self.weights().items()}

    def identities(self, dim: int = CLIP_L14_DIM) -> dict[str, PredictorIdentity]:
        """Return ``{score column: identity}`` of the active predictors."""
        return {column: predictor.identity for column, predictor in self.load(dim).items()}
