"""The user's commands, run as a user runs them: the dagster CLI with no -m flag, on a persistent instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from laion_assets.paths import PROJECT_DIR

BIN = Path(sys.executable).parent


@pytest.fixture
def env(tmp_path, small_sample):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_MODULE_NAME": "laion_assets.definitions",
        "LAION_ASSETS_SOURCE": str(small_sample),
        "LAION_ASSETS_DATA_ROOT": str(tmp_path / "out"),
        "PYTHONPATH": str(PROJECT_DIR),
    }


def run(args, env, cwd=PROJECT_DIR):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_materialize_subset_without_m_flag(env, tmp_path):
    select = [str(BIN / "dagster"), "asset", "materialize", "--select", "subset_6_5plus"]
    # Nothing materialized yet: one clear sentence naming what is missing and the command that builds it.
    first = run(select, env)
    assert first.returncode != 0
    assert "aesthetic_tags is not materialized yet" in first.stdout + first.stderr
    assert "run `make demo`" in first.stdout + first.stderr

    demo = run([sys.executable, "-m", "laion_assets.demo", "--source", env["LAION_ASSETS_SOURCE"], "--data-root",
                env["LAION_ASSETS_DATA_ROOT"]], env)  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "subset_6_5plus" in demo.stdout

    second = run(select, env)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    # Runs persist in DAGSTER_HOME: the demo's materialization and the CLI's are both recorded there.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(dg.AssetKey("subset_6_5plus"), limit=10).records
        assert len(records) == 2
    assert (tmp_path / "out" / "subsets" / "subset_6_5plus" / "part-00000.parquet").is_file()


def test_activate_script_points_the_cli_at_the_project(tmp_path):
    venv = tmp_path / "repo" / ".venv"
    (venv / "bin").mkdir(parents=True)
    activate = venv / "bin" / "activate"
    activate.write_text(f'VIRTUAL_ENV="{venv}"\nexport VIRTUAL_ENV\n')
    subprocess.run(["bash", str(PROJECT_DIR / "scripts" / "patch-activate.sh"), str(activate)], check=True)
    subprocess.run(["bash", str(PROJECT_DIR / "scripts" / "patch-activate.sh"), str(activate)], check=True)
    assert activate.read_text().count("laion-assets: dagster project and instance") == 1  # idempotent
    out = subprocess.run(["bash", "-c", f". {activate} && echo $DAGSTER_MODULE_NAME $DAGSTER_HOME"],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out == ["laion_assets.definitions", str(tmp_path / "repo" / ".dagster")]
    assert (tmp_path / "repo" / ".dagster" / "dagster.yaml").is_symlink()
