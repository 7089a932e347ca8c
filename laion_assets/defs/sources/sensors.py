"""Sensors: register the source's new, completely written parts as shard partitions and request their runs."""

import json

import dagster as dg

from laion_assets.core.errors import LaionAssetsError
from laion_assets.defs.jobs import shard_job
from laion_assets.defs.resources import StorageResource
from laion_assets.defs.sources.partitions import new_shard_keys, shards
from laion_assets.sources.watch import look


def _requests(keys: list[str], cursor: str | None) -> dg.SensorResult:
    return dg.SensorResult(
        dynamic_partitions_requests=[shards.build_add_request(keys)],
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"shard-{key}") for key in keys],
        cursor=cursor,
    )


@dg.sensor(job=shard_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def new_shards_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Register parts that appeared in the source folder (local or fsspec URL) and index + score each of them.

    A part is picked up only when both files are whole (npy as long as its header says, parquet footer
    present, same row count) and unchanged since the previous tick; the cursor keeps what was seen.
    With a URL source (``storage.urls``), each new URL shard file is registered as it appears.
    """
    if storage.url_mode:
        try:
            new = new_shard_keys(context.instance, storage.shard_source)
        except LaionAssetsError as exc:
            return dg.SensorResult(skip_reason=str(exc), cursor=context.cursor)
        if not new:
            return dg.SensorResult(skip_reason=f"no new URL shards in {storage.shard_source}", cursor=context.cursor)
        return _requests(new, context.cursor)
    source = storage.source_value
    url = source if "://" in source else str(storage.source_path)
    previous = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(shards.name))
    try:
        found = look(url, known, previous)
    except (OSError, ValueError) as exc:
        return dg.SensorResult(skip_reason=f"{url}: cannot list the source folder: {exc}", cursor=context.cursor)
    cursor = json.dumps(found.settling, sort_keys=True)
    for key, reason in sorted(found.waiting.items()):
        context.log.info(f"part {key} not picked up yet: {reason}")
    if not found.ready:
        waiting = f"; {len(found.waiting)} part(s) still being written or settling" if found.waiting else ""
        return dg.SensorResult(skip_reason=f"no new complete parts in {url}{waiting}", cursor=cursor)
    return _requests(found.ready, cursor)
