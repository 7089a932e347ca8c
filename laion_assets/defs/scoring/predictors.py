"""The active predictors: V1 (``aesthetic``), V2 (``AESTHETIC_SCORE``) and, when configured, NSFW (``punsafe``)."""

from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from laion_assets.core.paths import resolve
from laion_assets.scoring.active import read_active, read_forced
from laion_assets.scoring.predictors import CLIP_L14_DIM, Predictor, PredictorIdentity, load_for_column

V1_COLUMN = "aesthetic"
V2_COLUMN = "AESTHETIC_SCORE"
NSFW_COLUMN = "punsafe"


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
    """Weights of the V1, V2 and NSFW heads; empty means "as ``predictors.yaml`` says" (LAION's released heads)."""

    v1_weights: str = Field(default="", description="V1 head for `aesthetic` (empty: as config_file says)")
    v2_weights: str = Field(default="", description="V2 head for `AESTHETIC_SCORE` (empty: as config_file says)")
    nsfw_weights: str = Field(
        default="",
        description="LAION's CLIP-based NSFW detector (.npz) for `punsafe` (empty: as config_file says; a config "
        "file without `punsafe` means it is not computed)",
    )
    config_file: str = Field(default="predictors.yaml", description="score column -> weights file, plus `force`")
    force: bool = Field(
        default=False,
        description="Use every configured head even if it does not fit its column (a V2 head as `aesthetic`, a V1 "
        "head as `AESTHETIC_SCORE`, simulacra's heads, NaN/Inf in the weights). The release's manifest and card then "
        "say it was forced. Per column: the config file's `force` list (`laion-assets activate ... --force`).",
    )

    def _explicit(self) -> dict[str, str]:
        return {V1_COLUMN: self.v1_weights, V2_COLUMN: self.v2_weights, NSFW_COLUMN: self.nsfw_weights}

    def _reads_file(self) -> bool:
        # The file is needed for a required head not set here; for `punsafe` only when it exists (optional), so
        # explicit V1 and V2 weights keep working without any predictors file.
        if not (self.v1_weights and self.v2_weights):
            return True
        return not self.nsfw_weights and resolve(self.config_file).is_file()

    def weights(self) -> dict[str, str]:
        """Return ``{score column: weights path}``: explicit settings win over the predictors file.

        ``punsafe`` is there when ``nsfw_weights`` is set or the file maps it (it is optional in the file).
        """
        explicit = self._explicit()
        active = read_active(resolve(self.config_file)) if self._reads_file() else {}
        chosen = {column: path or active.get(column, "") for column, path in explicit.items()}
        return {column: path for column, path in chosen.items() if path}

    def forced(self) -> list[str]:
        """Score columns whose weights are used even if they do not fit: all with ``force``, else the file's list."""
        if self.force:
            return list(self.weights())
        explicit = self._explicit()
        if not self._reads_file():
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
