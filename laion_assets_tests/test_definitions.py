"""The code location loads cheaply and reads its settings when a run uses them, not when it is imported.

Importing ``laion_assets.definitions`` (what ``dagster asset list``, ``dg check defs`` and every code server do)
must import no torch and read none of the storage settings from the environment: the storage resource reads
``LAION_ASSETS_SOURCE`` / ``LAION_ASSETS_DATA_ROOT`` / ``LAION_ASSETS_SAFETY`` through ``dg.EnvVar`` when a run
uses it, so a variable set for a run takes effect in that run, and a value given as run config still wins.
"""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.core.settings import DATA_ROOT, SAFETY, SOURCE
from laion_assets.definitions import defs, register_shards, shard_job

# A schedule's cron and an asset's backfill policy are part of the definitions themselves (Dagster has no EnvVar for
# them), so the variables of ours read when the code location loads are the rescore schedule's
# (laion_assets/defs/scoring/schedules.py) and the shards per backfill run (laion_assets/defs/sources/partitions.py).
READ_AT_LOAD = {"LAION_ASSETS_RESCORE_CRON", "LAION_ASSETS_SHARDS_PER_RUN"}

# Run in a fresh interpreter: os.environ is replaced by one that records every variable asked for by name
# (``get``, ``getenv``, ``dg.EnvVar``, ``in``, and ``[]`` from our own modules), then the definitions are imported.
# Copies of the whole environment made by libraries (fsspec's config, urllib's proxy scan, ``platform``) go key by
# key and read no setting: they are left out. Afterwards the storage resource of ``defs`` resolves its source,
# which must be recorded (the recorder sees what the resource reads).
RECORD_IMPORT = """
import json, os, sys

PACKAGE = os.path.join(sys.argv[1], "laion_assets", "")

class Recording(os._Environ):
    read = set()
    def get(self, key, default=None):
        Recording.read.add(key)
        return super().get(key, default)
    def __contains__(self, key):
        Recording.read.add(key)
        return super().__contains__(key)
    def __getitem__(self, key):
        frame = sys._getframe(1)
        while frame.f_code.co_filename in ("<frozen os>", "<frozen _collections_abc>"):
            frame = frame.f_back
        if frame.f_code.co_filename.startswith(PACKAGE):
            Recording.read.add(key)
        return super().__getitem__(key)

os.environ = Recording(os.environ._data, os.environ.encodekey, os.environ.decodekey, os.environ.encodevalue,
                       os.environ.decodevalue)
import laion_assets.definitions as location
at_import = sorted(Recording.read)
heavy = sorted(m for m in ("torch", "open_clip", "torchvision", "img2dataset", "webdataset") if m in sys.modules)
Recording.read.clear()
source = location.defs.resources["storage"].source_value
print(json.dumps({"at_import": at_import, "heavy": heavy, "at_use": sorted(Recording.read), "source": source}))
"""


def test_importing_the_definitions_reads_no_setting_and_imports_no_torch(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), SOURCE.env: str(tmp_path / "from-env")}
    env.update({DATA_ROOT.env: str(tmp_path / "out"), SAFETY.env: str(tmp_path / "safety")})
    out = subprocess.run(
        [sys.executable, "-c", RECORD_IMPORT, str(PROJECT_DIR)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {key for key in seen["at_import"] if key.startswith("LAION_ASSETS_")}
    assert ours <= READ_AT_LOAD, f"read from the environment at import: {sorted(ours - READ_AT_LOAD)}"
    assert seen["heavy"] == [], f"imported at load: {seen['heavy']}"
    # The same recorder sees the resource read its variable when it is used, and the value comes through.
    assert SOURCE.env in seen["at_use"] and seen["source"] == str(tmp_path / "from-env")


def test_the_environment_takes_effect_when_a_run_executes(small_sample_session: Path, tmp_path: Path, monkeypatch):
    """``defs`` was imported before these variables were set: the run still reads and writes where they say."""
    env_root, flag_root = tmp_path / "from-env", tmp_path / "from-config"
    monkeypatch.setenv(SOURCE.env, str(small_sample_session))
    monkeypatch.setenv(DATA_ROOT.env, str(env_root))
    monkeypatch.delenv(SAFETY.env, raising=False)
    job = defs.resolve_job_def(shard_job.name)
    selection = [dg.AssetKey("clip_embeddings"), dg.AssetKey("aesthetic_scores")]
    with dg.instance_for_test() as instance:
        register_shards(instance, small_sample_session)
        result = job.execute_in_process(instance=instance, partition_key="00000", asset_selection=selection)
        assert result.success
        assert (env_root / "shards" / "00000" / "scores.parquet").is_file()
        # Run config (what a flag or the launchpad gives) beats the environment.
        config = {"resources": {"storage": {"config": {"data_root": str(flag_root)}}}}
        result = job.execute_in_process(
            run_config=config, instance=instance, partition_key="00000", asset_selection=selection
        )
        assert result.success
    assert (flag_root / "shards" / "00000" / "scores.parquet").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from-config", "from-env"]
