"""Jobs: the per-shard steps, and everything release-level downstream of the tags."""

import dagster as dg

from laion_assets.defs.partitions import shards

SHARD_ASSETS = dg.AssetSelection.assets("clip_embeddings", "aesthetic_scores")

shard_job = dg.define_asset_job(
    "shard_job", selection=SHARD_ASSETS, partitions_def=shards, description="Index and score one shard."
)
release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.assets("aesthetic_tags").downstream(),
    description="Rebuild the tags table and everything computed from it (subsets, buckets, histogram).",
)
rescore_job = dg.define_asset_job(
    "rescore",
    selection=dg.AssetSelection.assets("rescored_shards") | dg.AssetSelection.assets("aesthetic_tags").downstream(),
    description="Re-score, in one run, only the shards the active predictors outdate, then rebuild the tags and "
    "everything computed from them; when nothing is stale it does nothing and says so.",
)
