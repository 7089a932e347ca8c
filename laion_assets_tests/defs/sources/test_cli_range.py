"""Acceptance 1: 200 shards materialized by ONE ``dagster asset materialize --partition-range`` command, as one run.

The README's "Many shards in one run" block runs exactly as written (``laion-assets register``, then the range
command) in a shell set up as activation sets it up (``DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME``, a
``DAGSTER_HOME``), against a generated source of 200 tiny parts; the instance's event log must then hold one run
and one materialization per partition of each asset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.demos.sample import SampleSpec, write_sample
from laion_assets_tests.fresh_copy import section_commands

PARTS = 200
SECTION = "Many shards in one run"


def test_the_readme_range_command_is_one_run_with_a_materialization_per_partition(tmp_path: Path):
    lines = section_commands(SECTION)
    assert [line.split()[:2] for line in lines] == [["laion-assets", "register"], ["dagster", "asset"]]
    assert "--select clip_embeddings,aesthetic_scores --partition-range 00000...00199" in lines[1]
    source, data_root, home = tmp_path / "source", tmp_path / "out", tmp_path / "home"
    write_sample(source, SampleSpec(parts=PARTS, rows_per_part=3, seed=5))
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    venv_bin = str(Path(sys.executable).parent)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LAION_ASSETS_", "PYTEST_"))
    }  # what an activated shell has, with this checkout on the path and the source set as the README says
    env.update(
        PATH=os.pathsep.join([venv_bin, env.get("PATH", "")]),
        PYTHONPATH=str(PROJECT_DIR),
        DAGSTER_HOME=str(home),
        DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME="laion_assets.definitions",
        LAION_ASSETS_SOURCE=str(source),
        LAION_ASSETS_DATA_ROOT=str(data_root),
    )
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"`{line}` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
    keys = [f"{k:05d}" for k in range(PARTS)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/asset_partition_range_start"] == "00000"
        for step in ("clip_embeddings", "aesthetic_scores"):
            logged = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            mats = [e.dagster_event.event_specific_data.materialization for e in logged]
            mats = [m for m in mats if m.asset_key == dg.AssetKey(step)]
            assert sorted(m.partition for m in mats) == keys  # one per partition, none twice
            for m in mats:
                expected = data_root / "shards" / m.partition
                assert m.metadata["path"].value.startswith(str(expected))
                assert m.metadata["dagster/row_count"].value == 3
            status = instance.get_status_by_partition(
                dg.AssetKey(step), keys, dg.DynamicPartitionsDefinition(name="shards")
            )
            assert set(status.values()) == {AssetPartitionStatus.MATERIALIZED}
    assert len(list(data_root.glob("shards/*/scores.parquet"))) == PARTS
