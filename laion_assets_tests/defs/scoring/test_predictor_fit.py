"""Predictors that fit their column, through the resource: a head swap or NaN weights stop ``aesthetic_scores``
with one clear sentence; forcing them in config runs, and the release's manifest and card say it was forced.
Forced NaN weights get past loading, but the scores check still keeps NaN scores out of the outputs."""

import json

import dagster as dg
import torch

from laion_assets.core.paths import V2_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.demos.local import QUIET, run_graph
from laion_assets.release.verify import verify_release
from laion_assets.scoring.active import activate, read_active, write_active
from laion_assets.scoring.parts import read_identities
from laion_assets.scoring.predictors import load_predictor


def score_shard(storage, predictors, instance, key="00000"):
    return dg.materialize(
        [*ASSETS, *CHECKS],
        selection=["clip_embeddings", "aesthetic_scores"],
        partition_key=key,
        instance=instance,
        resources={**default_resources(), "storage": storage, "predictors": predictors},
        run_config=QUIET,
        raise_on_error=False,
    )


def failure_text(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def test_head_swap_is_refused_and_a_forced_release_says_so(small_sample, tmp_path):
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    swapped = PredictorsResource(v1_weights=str(V2_WEIGHTS))  # the V2 file configured as `aesthetic`
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", ["00000"])
        result = score_shard(storage, swapped, instance)
        assert not result.success
        text = failure_text(result)
        assert f"{V2_WEIGHTS}: refused as the predictor of 'aesthetic': its kind is v2-mlp-linear, " in text
        assert "but 'aesthetic' takes v1-linear" in text and "`force: true`" in text
        assert not storage.layout.shard_scores("00000").exists()

        forced = PredictorsResource(v1_weights=str(V2_WEIGHTS), force=True)
        run_graph(instance, storage, forced)
        v2 = load_predictor(V2_WEIGHTS).identity
        assert read_identities(storage.layout.shard_scores("00000"))["aesthetic"] == v2
        folder = storage.layout.release_dir("v0.1.0")
        entry = json.loads((folder / "manifest.json").read_text())["predictors"]["aesthetic"]
        assert entry["identity"] == str(v2) and entry["forced"] is True
        assert entry["misfit"] == ["its kind is v2-mlp-linear, but 'aesthetic' takes v1-linear"]
        card = (folder / "README.md").read_text()
        assert "> **Warning: `aesthetic` was scored by a forced predictor**" in card
        assert verify_release(folder, small_sample).ok


def test_nan_weights_are_refused_and_a_per_column_force_reaches_the_scores_check(small_sample, tmp_path):
    state = torch.load(V2_WEIGHTS, map_location="cpu", weights_only=True)
    state["layers.0.bias"][17] = float("nan")
    nan_file = tmp_path / "nan_v2.pth"
    torch.save(state, nan_file)
    config = write_active({**read_active(), "AESTHETIC_SCORE": str(nan_file)}, tmp_path / "predictors.yaml")
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    predictors = PredictorsResource(config_file=str(config))
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", ["00000"])
        result = score_shard(storage, predictors, instance)
        assert not result.success
        assert (
            f"{nan_file}: refused as the predictor of 'AESTHETIC_SCORE': tensor layers.0.bias holds 1 NaN/Inf "
            "value(s) of 1024" in failure_text(result)
        )
        assert not storage.layout.shard_scores("00000").exists()
        # `laion-assets activate AESTHETIC_SCORE FILE --force` writes the force into the predictors file.
        activate("AESTHETIC_SCORE", str(nan_file), config, force=True)
        assert predictors.forced() == ["AESTHETIC_SCORE"]
        # Forced, the weights load; the scores check still keeps NaN scores out of every output.
        result = score_shard(storage, predictors, instance)
        assert not result.success
        text = failure_text(result)
        assert "refused as the predictor" not in text and "row 0 scored non-finite by 'AESTHETIC_SCORE'" in text
        assert not storage.layout.shard_scores("00000").exists()
