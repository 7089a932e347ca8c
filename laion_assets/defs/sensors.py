"""Sensors: register the source's new, completely written parts as shard partitions and request their runs."""

import json

import dagster as dg

from laion_assets.defs.jobs import shard_job
from laion_assets.defs.partitions import shards
from laion_assets.defs.resources import StorageResource
from laion_assets.paths import resolve
from laion_assets.watch import look


def source_url(source: str) -> str:
    """The watched folder: an fsspec URL as given, a local path resolved against the project folder."""
    return source if "://" in source else str(resolve(source))


@dg.sensor(job=shard_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def new_shards_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Register parts that appeared in the source folder (local or fsspec URL) and index + score each of them.

    A part is picked up only when both files are whole (npy as long as its header says, parquet footer
    present, same row count) and unchanged since the previous tick; the cursor keeps what was seen.
    """
    url = source_url(storage.source)
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
    return dg.SensorResult(
        dynamic_partitions_requests=[shards.build_add_request(found.ready)],
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"shard-{key}") for key in found.ready],
        cursor=cursor,
    )
