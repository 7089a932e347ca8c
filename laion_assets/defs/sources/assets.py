"""``clip_embeddings``: stored parts validated and indexed, one shard partition each, many shards per run."""

from collections.abc import Sequence

import dagster as dg

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.defs.errors import as_failure
from laion_assets.defs.images.assets import image_embeddings
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded, table_metadata
from laion_assets.defs.resources import StorageResource
from laion_assets.defs.sources.batch import ShardDone, process_shards, shards_result
from laion_assets.defs.sources.partitions import SHARD_BACKFILL_POLICY, shards
from laion_assets.selection.gating import indexed_current
from laion_assets.sources.indexing import Validation, index_part
from laion_assets.sources.layout import Part


class ShardRunConfig(dg.Config):
    """Run config of the per-shard steps."""

    redo: bool = False
    """Redo every shard of the run, also those whose outputs already record the same inputs (skipped otherwise)."""


def missing_part(storage: StorageResource, key: str) -> MissingUpstreamError:
    """The error of a registered shard whose part the source does not have (any more)."""
    return MissingUpstreamError(f"{storage.parts_source}: no part with key {key!r} (is the shard still registered?)")


def _exclude_hint(exc: BadInputError, key: str) -> BadInputError:
    return BadInputError(
        f"{exc}. Fix or replace the part and materialize this shard again, or leave shard {key} out of "
        f'the release with `resources: {{release_config: {{config: {{exclude_shards: ["{key}"]}}}}}}`'
    )


def _common(storage: StorageResource, part: Part, key: str, validation: Validation) -> dict[str, object]:
    out = storage.layout.shard_metadata(key)
    return {
        "dagster/row_count": validation.rows,
        "declared_language": storage.language or "(none)",
        "embeddings_sha256": str(validation.embeddings["sha256"]),
        "metadata_sha256": str(validation.metadata["sha256"]),
        "validation": validation.id,
        "embeddings": dg.MetadataValue.path(str(part.embeddings)),
        "source_metadata": dg.MetadataValue.path(str(part.metadata)),
        "path": dg.MetadataValue.path(str(out)),
    }


def shows_preview(keys: Sequence[str], key: str) -> bool:
    """Whether a shard's materialization carries the schema and preview: one shard per run is enough to show them.

    Reading and storing them for every partition of a 2,300-shard run costs about as much again as Dagster's own
    events per partition (a footer and five rows read, ~7 KB more per event), for previews of identical tables.
    """
    return key == keys[0]


def index_shard(
    storage: StorageResource, parts: dict[str, Part], key: str, redo: bool, preview: bool = True
) -> ShardDone:
    """Validate and index one shard's part, or, when its indexed metadata still records it, say so and keep it.

    ``preview`` adds the written file's column schema and first rows (see :func:`shows_preview`).
    """
    part = parts.get(key)
    if part is None:
        raise missing_part(storage, key)
    out = storage.layout.shard_metadata(key)
    storage.pull(out)  # a remote data root: what an earlier run (maybe another machine) recorded
    if not redo:
        current = indexed_current(out, part, storage.shard_settings)
        if current is not None:
            metadata = {**_common(storage, part, key, current), "up_to_date": True}
            metadata.update(table_metadata(out) if preview else {})
            message = f"shard {key}: already validated (same files, same settings): kept, {current.rows} rows"
            return ShardDone(rounded(metadata), message, skipped=True)
    try:
        indexed = index_part(part, out, storage.embedding_dim, storage.swap_stored_metadata, storage.language)
    except BadInputError as exc:
        raise _exclude_hint(exc, key) from exc
    storage.push(out)
    validation = indexed.validation
    assert validation is not None  # index_part always records one
    metadata = {
        **_common(storage, part, key, validation),
        "dim": indexed.stats.dim,
        "dtype": indexed.stats.dtype,
        "norm_min": indexed.stats.norm_min,
        "norm_max": indexed.stats.norm_max,
        "duplicate_hashes": indexed.duplicate_hashes,
        "rows_without_url": indexed.rows_without_url,
        "rows_without_caption": indexed.rows_without_caption,
        "languages": dg.MetadataValue.json(indexed.languages),
        **(table_metadata(out) if preview else {}),
    }
    message = f"shard {key}: {indexed.rows} rows, {indexed.duplicate_hashes} duplicate hashes"
    return ShardDone(rounded(metadata), message)


@dg.asset(
    partitions_def=shards,
    backfill_policy=SHARD_BACKFILL_POLICY,
    deps=[image_embeddings],
    group_name="shards",
    kinds={"numpy", "parquet"},
    owners=OWNERS,
    tags=asset_tags("sources", "embeddings"),
    code_version="1",
    description="A stored clip-retrieval part, validated (width, dtype, rows, norms, finite values) and indexed "
    "by LAION's hash of url + caption; records each file's size, mtime/etag and sha256 so that release-level steps "
    "read only what was validated. A run may hold many shards (a backfill is one run): the source is listed once, "
    "shards are validated storage.workers at a time, and a shard whose indexed metadata already records the same "
    "files and settings is kept (config `redo: true` validates it again).",
)
def clip_embeddings(
    context: dg.AssetExecutionContext, config: ShardRunConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Validate the run's stored parts and write their metadata with the LAION hash."""
    keys = context.partition_keys
    step = "clip_embeddings"
    with as_failure(f"{step} (shard {keys[0]})" if len(keys) == 1 else step):
        parts, workers = storage.parts(keys), storage.shard_workers
    done = process_shards(
        context,
        step,
        keys,
        lambda key: index_shard(storage, parts, key, config.redo, shows_preview(keys, key)),
        workers,
    )
    return shards_result(context, done)
