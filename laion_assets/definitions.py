"""The laion_assets code location: ``dagster dev`` and ``dagster asset materialize`` load ``defs`` from here."""

import dagster as dg

from laion_assets.defs.assets.rescore import rescored_shards
from laion_assets.defs.assets.shards import aesthetic_scores, clip_embeddings
from laion_assets.defs.assets.stats import bucket_embeddings, score_histogram
from laion_assets.defs.assets.subsets import SUBSET_ASSETS, SUBSET_CHECKS, subsets_nested
from laion_assets.defs.assets.tags import aesthetic_tags, row_counts_conserved, scores_finite
from laion_assets.defs.assets.training import aesthetic_predictor_trained
from laion_assets.defs.jobs import release_job, rescore_job, shard_job
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.schedules import rescore_schedule
from laion_assets.defs.sensors import new_shards_sensor

ASSETS = [clip_embeddings, aesthetic_scores, aesthetic_tags, *SUBSET_ASSETS, bucket_embeddings, score_histogram]
# Issue 4: batched re-scoring of stale shards, and training a predictor.
ASSETS += [rescored_shards, aesthetic_predictor_trained]
CHECKS = [scores_finite, row_counts_conserved, *SUBSET_CHECKS, subsets_nested]


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources with their defaults: the shipped sample, ``data/out`` and LAION's released predictors."""
    return {"storage": StorageResource(), "predictors": PredictorsResource()}


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[shard_job, release_job, rescore_job],
    schedules=[rescore_schedule],
    sensors=[new_shards_sensor],
    resources=default_resources(),
)
