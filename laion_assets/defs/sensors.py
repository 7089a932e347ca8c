"""Sensors: register the source's new parts as shard partitions and request their per-shard runs."""

import dagster as dg

from laion_assets.defs.jobs import shard_job
from laion_assets.defs.partitions import new_shard_keys, shards
from laion_assets.defs.resources import StorageResource
from laion_assets.errors import LaionAssetsError


@dg.sensor(job=shard_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def new_shards_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Register parts that appeared in the source folder and index + score each of them."""
    try:
        new = new_shard_keys(context.instance, storage.shard_source)
    except LaionAssetsError as exc:
        return dg.SensorResult(skip_reason=str(exc))
    if not new:
        return dg.SensorResult(skip_reason=f"no new parts in {storage.shard_source}")
    return dg.SensorResult(
        dynamic_partitions_requests=[shards.build_add_request(new)],
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"shard-{key}") for key in new],
    )
