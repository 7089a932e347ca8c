"""Per-shard assets: ``clip_embeddings`` (validate + index a stored part) and ``aesthetic_scores``."""

from pathlib import Path

import dagster as dg

from laion_assets.defs.assets.images import image_embeddings
from laion_assets.defs.errors import as_failure
from laion_assets.defs.partitions import shards
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.errors import BadInputError
from laion_assets.shards import ScoredPart, index_part, score_part
from laion_assets.tags import shard_hint


@dg.asset(
    partitions_def=shards,
    deps=[image_embeddings],
    group_name="shards",
    kinds={"numpy", "parquet"},
    code_version="1",
    description="A stored clip-retrieval part, validated (width, dtype, rows, norms, finite values) and indexed "
    "by LAION's hash of url + caption; records each file's size, mtime/etag and sha256 so that release-level steps "
    "read only what was validated.",
)
def clip_embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Validate one stored part and write its metadata with the LAION hash."""
    key = context.partition_key
    with as_failure(f"clip_embeddings (shard {key})"):
        part = storage.part(key)
        out = storage.layout.shard_metadata(key)
        try:
            indexed = index_part(part, out, storage.embedding_dim, storage.swap_stored_metadata, storage.language)
        except BadInputError as exc:
            raise BadInputError(
                f"{exc}. Fix or replace the part and materialize this shard again, or leave shard {key} out of "
                f'the release with `resources: {{release_config: {{config: {{exclude_shards: ["{key}"]}}}}}}`'
            ) from exc
        storage.push(out)
    context.log.info(f"shard {key}: {indexed.rows} rows, {indexed.duplicate_hashes} duplicate hashes")
    validation = indexed.validation
    assert validation is not None  # index_part always records one
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": indexed.rows,
            "dim": indexed.stats.dim,
            "dtype": indexed.stats.dtype,
            "norm_min": indexed.stats.norm_min,
            "norm_max": indexed.stats.norm_max,
            "duplicate_hashes": indexed.duplicate_hashes,
            "rows_without_url": indexed.rows_without_url,
            "rows_without_caption": indexed.rows_without_caption,
            "declared_language": storage.language or "(none)",
            "embeddings_sha256": str(validation.embeddings["sha256"]),
            "metadata_sha256": str(validation.metadata["sha256"]),
            "validation": validation.id,
            "languages": dg.MetadataValue.json(indexed.languages),
            "embeddings": dg.MetadataValue.path(str(part.embeddings)),
            "source_metadata": dg.MetadataValue.path(str(part.metadata)),
            "path": dg.MetadataValue.path(str(out)),
        }
    )


@dg.asset(
    partitions_def=shards,
    deps=[clip_embeddings],
    group_name="shards",
    kinds={"pytorch", "parquet"},
    code_version="1",
    description="V1 (`aesthetic`) and V2 (`AESTHETIC_SCORE`) scores of every row of a shard, float32, with the "
    "identity (kind + sha256) of the predictor that made each column.",
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
    """Metadata of one shard's scores: rows, path, and per column its predictor identity and score summary."""
    metadata: dict[str, object] = {"dagster/row_count": scored.rows, "path": dg.MetadataValue.path(str(path))}
    for column, identity in scored.identities.items():
        metadata[f"predictor/{column}"] = str(identity)
        for stat, value in scored.summary[column].items():
            metadata[f"{column}/{stat}"] = value
    return metadata


def scores_version(scored: ScoredPart) -> dg.DataVersion:
    """The data version of a shard's scores: which predictors made them (shown per partition in the UI)."""
    return dg.DataVersion(",".join(f"{c}={i.kind}@{i.sha256[:12]}" for c, i in sorted(scored.identities.items())))
