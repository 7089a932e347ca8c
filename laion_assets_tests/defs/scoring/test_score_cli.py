"""`laion-assets score` as the README shows it, against the `aesthetic_scores` asset on the same parts (acceptance 3).

The README's commands run exactly as written, in bash, in a fresh copy of the project whose ``data/sample`` is the
small test sample; the asset is materialized in process on the same folder. The CLI's scores must equal the asset's
bit for bit: the same ``hash`` column and the very same float32 values.
"""

from __future__ import annotations

import shutil
import subprocess

import dagster as dg
import numpy as np
import polars as pl
import pytest

from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.sources.layout import discover_parts
from laion_assets_tests.fresh_copy import copy_project, make_venv, section_commands, user_env

SECTION = "Scoring a folder without Dagster: `laion-assets score`"


@pytest.fixture(scope="module")
def cli_and_asset(tmp_path_factory, small_sample_session):
    copy = copy_project(tmp_path_factory.mktemp("project"))
    venv = make_venv(copy)
    shutil.copytree(small_sample_session, copy / "data" / "sample")
    env = user_env(PATH=f"{venv / 'bin'}:{user_env()['PATH']}")
    runs = []
    for line in section_commands(SECTION):
        runs.append(
            subprocess.run(["bash", "-c", line], cwd=copy, env=env, capture_output=True, text=True, timeout=300)
        )
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(copy / "data" / "sample"), data_root=str(tmp_path_factory.mktemp("out")))
    register_shards(instance, storage.source)
    resources = {**default_resources(), "storage": storage, "predictors": PredictorsResource()}
    parts = discover_parts(copy / "data" / "sample")
    for part in parts:
        assert dg.materialize(
            [*ASSETS, *CHECKS], selection=["clip_embeddings", "aesthetic_scores"], partition_key=part.key,
            instance=instance, resources=resources,
        ).success  # fmt: skip
    return copy, runs, storage, parts


def bits(column: pl.Series) -> np.ndarray:
    return column.to_numpy().view(np.uint32)


def test_the_readme_commands_run_as_written(cli_and_asset):
    _, runs, _, _ = cli_and_asset
    assert len(runs) == 2 and all("laion-assets score" in r.args[2] for r in runs)
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert "[3/3] part" in runs[0].stderr and "rows/s" in runs[0].stderr
    assert "2 part(s) of" in runs[1].stderr


def test_cli_scores_equal_the_asset_bit_for_bit(cli_and_asset):
    copy, _, storage, parts = cli_and_asset
    for part in parts:
        asset = pl.read_parquet(storage.layout.shard_scores(part.key))
        cli = pl.read_parquet(copy / "data" / "out" / "scores" / f"scores_{part.number}.parquet")
        assert cli.columns == asset.columns == ["hash", "aesthetic", "AESTHETIC_SCORE", "punsafe"]
        assert cli["hash"].dtype == pl.Int64 and cli["hash"].equals(asset["hash"])
        for name in ("aesthetic", "AESTHETIC_SCORE", "punsafe"):
            assert cli[name].dtype == pl.Float32
            assert np.array_equal(bits(cli[name]), bits(asset[name])), f"part {part.number}: {name} differs"
    v2 = sorted((copy / "data" / "out" / "scores-v2").iterdir())
    assert [p.name for p in v2] == ["scores_0.parquet", "scores_1.parquet"]
    for path, part in zip(v2, parts, strict=False):
        only = pl.read_parquet(path)
        assert only.columns == ["hash", "AESTHETIC_SCORE"]
        asset = pl.read_parquet(storage.layout.shard_scores(part.key))
        assert np.array_equal(bits(only["AESTHETIC_SCORE"]), bits(asset["AESTHETIC_SCORE"]))
