"""The laion_assets code location: ``dagster dev``, ``dg dev``, ``dagster asset materialize`` load ``defs`` from here.

It is also the public surface the front ends (``laion_assets/cli.py``, ``laion_assets/demos/``) use instead of
reaching into ``laion_assets/defs/``: ``defs`` and its jobs, the resource classes and :func:`default_resources`,
and :func:`register_shards` / :func:`source_keys` for the shard partitions. Importing it reads no setting from
the environment (the storage resource reads its variables through ``dg.EnvVar`` when a run uses it) and imports
no torch, so listing the assets stays quick.
"""

from collections.abc import Mapping

import dagster as dg

from laion_assets.defs import resources
from laion_assets.defs.images.assets import image_embeddings, images
from laion_assets.defs.jobs import pop_job, publish_job, release_job, rescore_job, shard_job
from laion_assets.defs.pop.assets import POP_ASSETS, POP_CHECKS
from laion_assets.defs.release.assets import RELEASE_ASSETS, RELEASE_CHECKS
from laion_assets.defs.resources import (
    ClipResource,
    DownloaderResource,
    HfResource,
    PopResource,
    PredictorsResource,
    ReleaseResource,
    StorageResource,
    VlmResource,
    WatermarkResource,
)
from laion_assets.defs.retrieval.assets import knn_index, knn_index_complete
from laion_assets.defs.scoring.assets import aesthetic_scores
from laion_assets.defs.scoring.rescore import rescored_shards
from laion_assets.defs.scoring.schedules import rescore_schedule
from laion_assets.defs.scoring.training import aesthetic_predictor_trained
from laion_assets.defs.selection.stats import bucket_embeddings, score_histogram
from laion_assets.defs.selection.subsets import SUBSET_ASSETS, SUBSET_CHECKS, subsets_nested
from laion_assets.defs.selection.tags import aesthetic_tags, row_counts_conserved, safety_tags, scores_finite
from laion_assets.defs.sources.assets import clip_embeddings
from laion_assets.defs.sources.partitions import register_shards, source_keys
from laion_assets.defs.sources.sensors import new_shards_sensor

# What the front ends may use: the resource classes, the jobs, the definitions and the shard partitions' helpers.
__all__ = [
    *resources.__all__,
    "ASSETS",
    "CHECKS",
    "POP_ASSETS",
    "POP_CHECKS",
    "URL_ASSETS",
    "build_defs",
    "default_resources",
    "defs",
    "pop_job",
    "publish_job",
    "register_shards",
    "release_job",
    "rescore_job",
    "shard_job",
    "source_keys",
]

ASSETS = [
    clip_embeddings,
    aesthetic_scores,
    safety_tags,
    aesthetic_tags,
    *SUBSET_ASSETS,
    bucket_embeddings,
    score_histogram,
]
ASSETS += RELEASE_ASSETS
# The kNN index over the released shards' embeddings (`laion-assets serve` answers queries on it).
ASSETS += [knn_index]
# Batched re-scoring of stale shards, and training a predictor.
ASSETS += [rescored_shards, aesthetic_predictor_trained]
# The URL front (img2dataset, CLIP) is kept apart so that materializing ASSETS needs no downloader or clip resource.
URL_ASSETS = [images, image_embeddings]
# LAION-POP (concept centroids -> kNN selection -> images -> VLM captions) needs a concept collection, the
# downloader and a VLM: kept apart like the URL front, run by its own job (pop_job).
CHECKS = [scores_finite, row_counts_conserved, *SUBSET_CHECKS, subsets_nested]
CHECKS += RELEASE_CHECKS + [knn_index_complete]


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources with their defaults: the shipped sample, ``data/out`` and LAION's released predictors."""
    return {
        "storage": StorageResource(),
        "predictors": PredictorsResource(),
        "release_config": ReleaseResource(),
        # No token bound here: hf_release reads HF_TOKEN when it runs, so launch-time `hf` config (which replaces
        # bound values) cannot drop it, and the token never enters stored run config.
        "hf": HfResource(),
        "downloader": DownloaderResource(),
        "clip": ClipResource(),
        # Off unless weights are given (LAION's watermark_model_v1.pt, or 'random' for demos).
        "watermark": WatermarkResource(),
        # LAION-POP: the concept folder comes from $LAION_ASSETS_POP_CONCEPTS when not configured; LLaVA 1.5 by default.
        "pop": PopResource(),
        "vlm": VlmResource(),
    }


def build_defs(
    resources: Mapping[str, dg.ConfigurableResource] | None = None, executor: dg.ExecutorDefinition | None = None
) -> dg.Definitions:
    """The code location's definitions, with ``resources`` in place of the defaults of the same keys.

    ``defs`` is this with the defaults; the demos run the very same jobs with the resources they configure.
    ``executor`` (default: Dagster's multiprocess one) runs every job's steps; ``laion_assets.definitions_k8s``
    passes dagster-k8s's.
    """
    return dg.Definitions(
        assets=[*URL_ASSETS, *ASSETS, *POP_ASSETS],
        asset_checks=[*CHECKS, *POP_CHECKS],
        jobs=[shard_job, release_job, rescore_job, publish_job, pop_job],
        schedules=[rescore_schedule],
        sensors=[new_shards_sensor],
        resources={**default_resources(), **(resources or {})},
        executor=executor,
    )


defs = build_defs()
