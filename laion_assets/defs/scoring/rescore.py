"""``rescored_shards``: re-score, in one run with the models loaded once, every shard the active predictors outdate.

Each re-scored shard is recorded as a materialization of its ``aesthetic_scores`` partition (same metadata and
data version as the per-shard asset), so the UI shows per shard which predictor scored it. The asset only
materializes when it re-scored something; when nothing is stale it says so and yields nothing, so the
release-level assets downstream of it in the ``rescore`` job are skipped.

With a watermark head configured, the shards whose ``pwatermark`` it outdates are re-scored from their downloaded
images too (``laion_assets/defs/images/rescore_watermark.py``); shards without images are reported as needing them.
"""

import dagster as dg

from laion_assets.defs.errors import as_failure
from laion_assets.defs.images.rescore_watermark import rescore_watermarks
from laion_assets.defs.metadata import OWNERS, asset_tags
from laion_assets.defs.resources import PredictorsResource, StorageResource, WatermarkResource
from laion_assets.defs.scoring.assets import aesthetic_scores, scores_metadata, scores_version
from laion_assets.defs.sources.partitions import shards
from laion_assets.scoring.rescoring import UNINDEXED, identity_table, rescore, shard_states, summarize


@dg.asset(
    deps=[aesthetic_scores],
    group_name="shards",
    kinds={"pytorch", "parquet"},
    owners=OWNERS,
    tags=asset_tags("scoring", "scores"),
    code_version="1",
    output_required=False,
    description="Re-scores the shards whose scores were made by predictors other than the active ones "
    "(predictors.yaml), all in one run; records each as an aesthetic_scores partition materialization. With a "
    "watermark head configured, also re-scores from their images the shards whose pwatermark it outdates.",
)
def rescored_shards(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    predictors: PredictorsResource,
    watermark: WatermarkResource,
):
    """Find the stale shards, re-score them with the active predictors loaded once, and report per shard."""
    layout = storage.layout
    keys = sorted(context.instance.get_dynamic_partitions(shards.name))
    with as_failure("rescored_shards"):
        loaded = predictors.load(storage.embedding_dim)
        active = {column: p.identity for column, p in loaded.items()}
        storage.pull(*(p for key in keys for p in (layout.shard_metadata(key), layout.shard_scores(key))))
        before = shard_states(keys, layout, active)
        unindexed = [s.key for s in before if s.status == UNINDEXED]
        if unindexed:
            context.log.warning(f"shards {unindexed} have no clip_embeddings yet; their shard runs build them")
        stale = [s for s in before if s.needs_scores]
        for state in stale:
            context.log.info(f"shard {state.key}: {state.reason}")
        parts = storage.parts([s.key for s in stale]) if stale else {}
        for scored in rescore([s.key for s in stale], layout, parts, loaded):
            storage.push(layout.shard_scores(scored.key))
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=aesthetic_scores.key,
                    partition=scored.key,
                    metadata={
                        **scores_metadata(scored, layout.shard_scores(scored.key)),
                        "rescored_by_run": context.run.run_id,
                        "data_version": scores_version(scored).value,
                    },
                )
            )
        watermarked = rescore_watermarks(context, storage, watermark, keys)
        if not stale and not watermarked.rescored:
            context.log.info(
                f"nothing stale: all {len(keys) - len(unindexed)} indexed shard(s) are scored by "
                + ", ".join(f"{c}={i}" for c, i in active.items())
                + (f", pwatermark={watermark.identity()}" if watermarked.before else "")
                + "; nothing re-scored, release-level assets left as they are"
            )
            return
        after = shard_states(keys, layout, active)
    columns = list(active)
    yield dg.MaterializeResult(
        metadata={
            "rescored": dg.MetadataValue.json([s.key for s in stale]),
            "rescored_count": len(stale),
            "shards": dg.MetadataValue.json(summarize(after)),
            **{f"predictor/{c}": str(i) for c, i in active.items()},
            "per_shard": dg.MetadataValue.md(identity_table(after, columns)),
            "before": dg.MetadataValue.md(identity_table(before, columns)),
            **watermarked.metadata(),
        }
    )
