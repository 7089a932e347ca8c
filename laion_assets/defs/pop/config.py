"""LAION-POP's recipe in one resource: the concept collection, the k-means, the selection rule, the downloads."""

import os

import dagster as dg
from pydantic import Field

from laion_assets.core.errors import BadInputError
from laion_assets.pop.centroids import LAION_K, KmeansParams
from laion_assets.pop.selection import PART_ROWS, PopParams

CONCEPTS_ENV = "LAION_ASSETS_POP_CONCEPTS"
_RULE = PopParams()


class PopResource(dg.ConfigurableResource):
    """LAION-POP's settings (LAION's values by default; the README says where each comes from)."""

    concepts: str = Field(
        default="",
        description="clip-retrieval folder of the concept images' CLIP embeddings (img_emb/img_emb_N.npy), a path "
        f"or fsspec URL; empty: ${CONCEPTS_ENV}",
    )
    k: int = Field(default=LAION_K, description="k-means centroids (LAION: 10,000 of 4.25 M concept vectors)")
    niter: int = Field(default=KmeansParams.niter, description="k-means iterations")
    nredo: int = Field(default=KmeansParams.nredo, description="k-means restarts (the lowest objective is kept)")
    seed: int = Field(default=0, description="seeds the k-means initialisation and its training sample")
    max_points_per_centroid: int = Field(
        default=KmeansParams.max_points_per_centroid, description="training sample cap per centroid (faiss's)"
    )
    neighbours: int = Field(default=_RULE.neighbours, description="nearest neighbours asked per centroid")
    aesthetic_column: str = Field(
        default=_RULE.aesthetic_column, description="AESTHETIC_SCORE (LAION's V2 predictor) or aesthetic (V1)"
    )
    min_aesthetic: float = Field(
        default=_RULE.min_aesthetic, description="rows need aesthetic_column >= this (LAION's post: 'at least 0.5')"
    )
    min_side: int = Field(default=_RULE.min_side, description="rows need min(WIDTH, HEIGHT) >= this (LAION: 768)")
    max_pwatermark: float = Field(default=_RULE.max_pwatermark, description="rows need pwatermark < this")
    guidance_score: int | None = Field(
        default=_RULE.guidance_score, description="aesthetic guidance of each centroid's query: bucket 0-9, or null"
    )
    guidance_weight: float = Field(default=_RULE.guidance_weight, description="weight of rating{guidance_score}")
    part_rows: int = Field(default=PART_ROWS, description="rows per laion_pop part (one img2dataset shard each)")
    check_centroids: int = Field(default=32, description="centroids laion_pop's check recounts from the index")
    image_size: int = Field(default=768, description="pop_images: img2dataset image_size (keep_ratio: short side)")
    resize_mode: str = Field(default="keep_ratio", description="pop_images: img2dataset resize_mode")

    def concepts_folder(self) -> str:
        """The concept folder: this resource's ``concepts``, else the environment's; neither is an error."""
        folder = self.concepts or os.environ.get(CONCEPTS_ENV, "")
        if not folder:
            raise BadInputError(
                f"pop_concepts: no concept collection configured: set the pop resource's `concepts` or ${CONCEPTS_ENV} "
                "to a clip-retrieval folder of CLIP embeddings (img_emb/img_emb_N.npy) of your concept images"
            )
        return folder

    def kmeans(self) -> KmeansParams:
        """The k-means parameters."""
        return KmeansParams(self.k, self.niter, self.seed, True, self.max_points_per_centroid, self.nredo)

    def rule(self) -> PopParams:
        """The selection rule."""
        return PopParams(
            neighbours=self.neighbours,
            aesthetic_column=self.aesthetic_column,
            min_aesthetic=self.min_aesthetic,
            min_side=self.min_side,
            max_pwatermark=self.max_pwatermark,
            guidance_score=self.guidance_score,
            guidance_weight=self.guidance_weight,
        )
