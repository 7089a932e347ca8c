"""``aesthetic_scores``: one shard's stored embeddings scored with the active predictors."""

from pathlib import Path

import dagster as dg

from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, V1_RANGE, asset_tags, rounded, table_metadata
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.assets import clip_embeddings
from laion_assets.defs.sources.partitions import shards
from laion_assets.scoring.parts import ScoredPart, score_part
from laion_assets.selection.tags import shard_hint


@dg.asset(
    partitions_def=shards,
    deps=[clip_embeddings],
    group_name="shards",
    kinds={"pytorch", "parquet"},
    owners=OWNERS,
    tags=asset_tags("scoring", "scores"),
    code_version="1",
    description="V1 (`aesthetic`) and V2 (`AESTHETIC_SCORE`) scores of every row of a shard, float32, with the "
    f"identity (kind + sha256) of the predictor that made each column. {V1_RANGE}",
)
def aesthetic_scores(
    context: dg.AssetExecutionContext, storage: StorageResource, predictors: PredictorsResource
) -> dg.MaterializeResult:
    """Score one shard's stored embeddings with the active predictors."""
    key = context.partition_key
    layout = storage.layout
    with as_failure(f"aesthetic_scores (shard {key})"):
        storage.pull(layout.shard_metadata(key))
        indexed = layout.require(layout.shard_metadata(key), f"clip_embeddings for shard {key}", shard_hint(key))
        scored = score_part(
            storage.part(key), indexed, predictors.load(storage.embedding_dim), layout.shard_scores(key)
        )
        storage.push(layout.shard_scores(key))
    return dg.MaterializeResult(
        metadata=scores_metadata(scored, layout.shard_scores(key)), data_version=scores_version(scored)
    )


def scores_metadata(scored: ScoredPart, path: Path) -> dict[str, object]:
    """Metadata of one shard's scores: rows, path, schema and preview, per column its predictor and score summary."""
    metadata: dict[str, object] = {"dagster/row_count": scored.rows, "path": dg.MetadataValue.path(str(path))}
    for column, identity in scored.identities.items():
        metadata[f"predictor/{column}"] = str(identity)
        for stat, value in scored.summary[column].items():
            metadata[f"{column}/{stat}"] = value
    return rounded({**metadata, **table_metadata(path)})


def scores_version(scored: ScoredPart) -> dg.DataVersion:
    """The data version of a shard's scores: which predictors made them (shown per partition in the UI)."""
    return dg.DataVersion(",".join(f"{c}={i.kind}@{i.sha256[:12]}" for c, i in sorted(scored.identities.items())))
