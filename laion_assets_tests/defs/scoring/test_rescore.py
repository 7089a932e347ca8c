"""Acceptance 1: switching the active predictor outdates exactly the shards scored by another one; ``rescore``
re-scores those (and only those) in one run, rebuilds the release, and a second ``rescore`` does nothing."""

import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from laion_assets.core.paths import V2_RELU_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.jobs import rescore_job
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.demos.local import QUIET, run_graph
from laion_assets.scoring.active import read_active, write_active
from laion_assets.scoring.parts import read_identities
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.rescoring import CURRENT, STALE, shard_states
from laion_assets.sources.embeddings import open_embeddings
from laion_assets.sources.layout import discover_parts


def rescore(instance, storage, predictors, raise_on_error=True):
    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[rescore_job],
        resources={**default_resources(), "storage": storage, "predictors": predictors},
    )
    return defs.resolve_job_def("rescore").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=raise_on_error
    )


def rescored_partitions(result):
    return sorted(
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("aesthetic_scores")
    )


def materialized(result):
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture
def predictors_file(tmp_path):
    path = tmp_path / "predictors.yaml"
    write_active(read_active(), path)  # the repo's active predictors: LAION's released V1 and V2
    return path


def test_switching_predictor_rescores_exactly_the_outdated_shards(small_sample, tmp_path, predictors_file):
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    layout = storage.layout
    released = PredictorsResource(config_file=str(predictors_file))
    relu = str(V2_RELU_WEIGHTS)
    with dg.instance_for_test() as instance:
        run_graph(instance, storage, released)
        keys = sorted(instance.get_dynamic_partitions("shards"))
        assert keys == ["00000", "00001", "00002"]
        # Shard 00001 was already scored by the ReLU V2 (e.g. a partial earlier switch): it must stay as it is.
        dg.materialize(
            ASSETS,
            selection=["aesthetic_scores"],
            partition_key="00001",
            instance=instance,
            resources={**default_resources(), "storage": storage, "predictors": PredictorsResource(v2_weights=relu)},
            run_config=QUIET,
        )
        kept_bytes = layout.shard_scores("00001").read_bytes()
        subset_before = pl.read_parquet(layout.subset_dir("subset_4_5plus") / "part-00000.parquet")

        # The switch is configuration: the predictors file now names the ReLU V2.
        write_active({**read_active(predictors_file), "AESTHETIC_SCORE": relu}, predictors_file)
        active = released.identities()
        assert active["AESTHETIC_SCORE"].kind == "v2-mlp-relu"
        states = {s.key: s.status for s in shard_states(keys, layout, active)}
        assert states == {"00000": STALE, "00001": CURRENT, "00002": STALE}

        result = rescore(instance, storage, released)
        assert result.success
        assert rescored_partitions(result) == ["00000", "00002"]
        assert {"rescored_shards", "aesthetic_tags", "subset_4_5plus", "laion_art", "score_histogram"} <= materialized(
            result
        )
        assert layout.shard_scores("00001").read_bytes() == kept_bytes
        for key in keys:
            assert read_identities(layout.shard_scores(key)) == active
        # The per-partition record shows which predictor scored each shard.
        record = instance.get_latest_materialization_event(dg.AssetKey("aesthetic_scores"))
        assert record.asset_materialization.metadata["predictor/AESTHETIC_SCORE"].value == str(
            active["AESTHETIC_SCORE"]
        )

        # Subsets now follow the ReLU V2's scores of the stored embeddings.
        relu_predictor = load_predictor(relu)
        expected = []
        for part in discover_parts(small_sample):
            meta = pl.read_parquet(layout.shard_metadata(part.key))
            scores = relu_predictor.score(np.asarray(open_embeddings(part.embeddings)))
            expected.append(meta.with_columns(pl.Series("AESTHETIC_SCORE", scores)))
        table = pl.concat(expected)
        want = table.filter((pl.col("LANGUAGE") == "en") & (pl.col("AESTHETIC_SCORE") >= 4.5))
        subset_after = pl.read_parquet(layout.subset_dir("subset_4_5plus") / "part-00000.parquet")
        assert subset_after["hash"].to_list() == want["hash"].to_list()
        np.testing.assert_allclose(subset_after["AESTHETIC_SCORE"], want["AESTHETIC_SCORE"], atol=1e-5)
        assert set(subset_after["hash"]) != set(subset_before["hash"])

        # Nothing is stale now: the second run re-scores nothing and leaves the release as it is.
        subset_mtime = (layout.subset_dir("subset_4_5plus") / "part-00000.parquet").stat().st_mtime_ns
        again = rescore(instance, storage, released)
        assert again.success
        assert rescored_partitions(again) == []
        assert materialized(again) == set()
        skipped = {e.step_key for e in again.all_events if e.event_type_value == "STEP_SKIPPED"}
        assert "aesthetic_tags" in skipped and "subset_4_5plus" in skipped
        logs = [e.message for e in instance.all_logs(again.run_id) if e.message]
        assert any("nothing stale" in m for m in logs)
        assert (layout.subset_dir("subset_4_5plus") / "part-00000.parquet").stat().st_mtime_ns == subset_mtime


def test_rescore_fails_clearly_when_a_stale_shard_lost_its_source(small_sample, tmp_path):
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    with dg.instance_for_test() as instance:
        run_graph(instance, storage, PredictorsResource())
        shutil.rmtree(small_sample / "img_emb")
        (small_sample / "img_emb").mkdir()
        result = rescore(instance, storage, PredictorsResource(v2_weights=str(V2_RELU_WEIGHTS)), False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "metadata/metadata_0.parquet: unpaired part 0" in failure.event_specific_data.error.message
