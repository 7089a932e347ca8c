"""Jobs: the per-shard steps, and everything release-level downstream of the tags."""

import dagster as dg

SHARD_ASSETS = dg.AssetSelection.assets("images", "image_embeddings", "clip_embeddings", "aesthetic_scores")
PUBLISH_ASSETS = dg.AssetSelection.assets("hf_release")
# LAION-POP needs a concept collection and a VLM: its own job, never part of the release or rescore runs.
POP_ASSETS = dg.AssetSelection.groups("pop")

shard_job = dg.define_asset_job(
    "shard_job",
    selection=SHARD_ASSETS,
    description="Download and embed (URL sources), index and score one shard.",
)
release_job = dg.define_asset_job(
    "release_job",
    selection=(dg.AssetSelection.assets("safety_tags") | dg.AssetSelection.assets("aesthetic_tags").downstream())
    - PUBLISH_ASSETS
    - POP_ASSETS,
    description="Rebuild the tags table and everything computed from it (subsets, buckets, histogram, KV, "
    "galleries, the release folder); pushing to the Hub is the separate publish_job.",
)
publish_job = dg.define_asset_job(
    "publish_job", selection=PUBLISH_ASSETS, description="Push the release folder to its Hugging Face dataset repo."
)
rescore_job = dg.define_asset_job(
    "rescore",
    selection=(dg.AssetSelection.assets("rescored_shards") | dg.AssetSelection.assets("aesthetic_tags").downstream())
    - PUBLISH_ASSETS
    - POP_ASSETS,
    description="Re-score, in one run, only the shards the active predictors outdate, then rebuild the tags and "
    "everything computed from them; when nothing is stale it does nothing and says so.",
)
pop_job = dg.define_asset_job(
    "pop_job",
    selection=POP_ASSETS,
    description="LAION-POP: concepts, centroids, the kNN selection, its images and VLM captions (needs knn_index).",
)
