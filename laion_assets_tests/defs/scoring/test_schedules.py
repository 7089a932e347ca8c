"""Acceptance 2 (schedule): the rescore schedule, evaluated with Dagster's context builder on a real instance."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg

from laion_assets.core.paths import PROJECT_DIR, V2_RELU_WEIGHTS
from laion_assets.definitions import ASSETS, default_resources
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.scoring.schedules import DEFAULT_RESCORE_CRON, build_rescore_schedule, rescore_schedule
from laion_assets.demos.local import run_graph

TICK = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def evaluate(schedule, instance, storage, predictors):
    # As a context manager, so the resources it builds are torn down (else Dagster's current defs-state storage
    # keeps pointing at this test's instance after it is gone).
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=TICK,
        resources={**default_resources(), "storage": storage, "predictors": predictors},
    ) as context:
        tick = schedule.evaluate_tick(context)
    return list(tick.run_requests or []), tick.skip_message


def test_schedule_skips_when_nothing_is_stale_and_requests_a_rescore_after_a_switch(small_sample, tmp_path):
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    with dg.instance_for_test() as instance:
        run_graph(instance, storage, PredictorsResource())
        requests, skip = evaluate(rescore_schedule, instance, storage, PredictorsResource())
        assert requests == []
        assert skip.startswith("nothing stale: all 3 registered shard(s)")

        relu = PredictorsResource(v2_weights=str(V2_RELU_WEIGHTS))
        requests, skip = evaluate(rescore_schedule, instance, storage, relu)
        assert skip is None and len(requests) == 1
        request = requests[0]
        assert request.tags["laion_assets/stale_shards"] == "00000,00001,00002"
        assert request.run_key == f"rescore-{TICK.isoformat()}"
        # The request launches the rescore job on the instance, which re-scores the three shards.
        defs = dg.Definitions(
            assets=ASSETS,
            schedules=[rescore_schedule],
            resources={**default_resources(), "storage": storage, "predictors": relu},
        )
        result = defs.resolve_job_def("rescore").execute_in_process(instance=instance, tags=request.tags)
        rescored = [
            e.event_specific_data.materialization.partition
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("aesthetic_scores")
        ]
        assert sorted(rescored) == ["00000", "00001", "00002"]
        requests, skip = evaluate(rescore_schedule, instance, storage, relu)
        assert requests == [] and skip.startswith("nothing stale")


def test_schedule_is_weekly_by_default_and_its_cron_is_configurable():
    assert rescore_schedule.job_name == "rescore"
    assert rescore_schedule.cron_schedule == DEFAULT_RESCORE_CRON == "0 3 * * 0"
    assert rescore_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert build_rescore_schedule("15 1 * * *").cron_schedule == "15 1 * * *"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "LAION_ASSETS_RESCORE_CRON": "0 4 * * 1"}
    code = (
        "from laion_assets.definitions import defs; print(defs.resolve_schedule_def('rescore_schedule').cron_schedule)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "0 4 * * 1"


def test_schedule_says_why_it_cannot_check(tmp_path):
    storage = StorageResource(source=str(tmp_path / "src"), data_root=str(tmp_path / "out"))
    with dg.instance_for_test() as instance:
        requests, skip = evaluate(
            rescore_schedule, instance, storage, PredictorsResource(config_file=str(tmp_path / "missing.yaml"))
        )
    assert requests == []
    assert "missing.yaml: active-predictors file not found" in skip
