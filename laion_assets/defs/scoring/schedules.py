"""Schedules: ``rescore`` weekly by default (cron from ``LAION_ASSETS_RESCORE_CRON``), skipped when nothing is stale."""

import dagster as dg

from laion_assets.core.errors import LaionAssetsError
from laion_assets.defs.jobs import rescore_job
from laion_assets.defs.resources import PredictorsResource, StorageResource, WatermarkResource
from laion_assets.defs.sources.partitions import shards
from laion_assets.images.watermark_scores import NEEDS_IMAGES
from laion_assets.scoring.rescoring import stale_shards

DEFAULT_RESCORE_CRON = "0 3 * * 0"  # Sundays 03:00
# The one setting read when the code location loads: a schedule's cron is part of its definition, not run config.
RESCORE_CRON = dg.EnvVar("LAION_ASSETS_RESCORE_CRON").get_value(DEFAULT_RESCORE_CRON) or DEFAULT_RESCORE_CRON


def build_rescore_schedule(cron: str = RESCORE_CRON) -> dg.ScheduleDefinition:
    """The rescore schedule on ``cron``; it requests a run only when some shard is stale."""

    @dg.schedule(
        name="rescore_schedule",
        cron_schedule=cron,
        job=rescore_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Run `rescore` on `{cron}` when the active predictors outdate some shard.",
    )
    def _rescore_schedule(
        context: dg.ScheduleEvaluationContext,
        storage: StorageResource,
        predictors: PredictorsResource,
        watermark: WatermarkResource,
    ) -> dg.RunRequest | dg.SkipReason:
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        try:
            active = predictors.identities(storage.embedding_dim)
            stale = stale_shards(keys, storage.layout, active)
            # pwatermark: shards the watermark head outdates that have images to re-score from (none when off).
            marks = watermark.states(storage, keys)
            stale = sorted(set(stale) | {s.key for s in marks if s.needs_scores})
        except LaionAssetsError as exc:
            return dg.SkipReason(f"cannot check the shards: {exc}")
        if not stale:
            lacking = [s.key for s in marks if s.status == NEEDS_IMAGES]
            return dg.SkipReason(
                f"nothing stale: all {len(keys)} registered shard(s) are scored by the active predictors"
                + (f"; {len(lacking)} need images for pwatermark (`laion-assets stale`)" if lacking else "")
            )
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        return dg.RunRequest(
            run_key=f"rescore-{tick}",
            tags={"laion_assets/stale_shards": ",".join(stale)[:1000], "laion_assets/stale_count": str(len(stale))},
        )

    return _rescore_schedule


rescore_schedule = build_rescore_schedule()
