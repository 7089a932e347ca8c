"""``clip_embeddings``: one stored part validated and indexed, per shard partition."""

import dagster as dg

from laion_assets.core.errors import BadInputError
from laion_assets.defs.errors import as_failure
from laion_assets.defs.images.assets import image_embeddings
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded, table_metadata
from laion_assets.defs.resources import StorageResource
from laion_assets.defs.sources.partitions import shards
from laion_assets.sources.indexing import index_part


@dg.asset(
    partitions_def=shards,
    deps=[image_embeddings],
    group_name="shards",
    kinds={"numpy", "parquet"},
    owners=OWNERS,
    tags=asset_tags("sources", "embeddings"),
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
        metadata=rounded(
            {
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
                **table_metadata(out),
            }
        )
    )
