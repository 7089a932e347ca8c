"""Train a predictor as an asset, make it active, and see it outdate the shards and change the histogram."""

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from laion_assets.core.paths import V2_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, URL_ASSETS, default_resources
from laion_assets.defs.jobs import rescore_job
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.scoring.training import TrainingConfig, aesthetic_predictor_trained
from laion_assets.demos.local import QUIET, run_graph
from laion_assets.scoring.active import activate, read_active, write_active
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.rescoring import stale_shards
from laion_assets.sources.embeddings import open_embeddings
from laion_assets.sources.layout import discover_parts


def ratings_parquet(sample, path):
    """AVA-style ratings over the sample's embeddings: a rescaled V2 score (so the trained head differs)."""
    v2 = load_predictor(V2_WEIGHTS)
    emb = np.concatenate([np.asarray(open_embeddings(p.embeddings), dtype=np.float32) for p in discover_parts(sample)])
    ratings = 0.5 * v2.score(emb) + 3.0
    pl.DataFrame({"embedding": emb.tolist(), "rating": ratings}).write_parquet(path)
    return path


def latest(instance, key):
    return instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.metadata


def test_trained_predictor_becomes_active_and_outdates_every_shard(small_sample, tmp_path):
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    config_file = write_active(read_active(), tmp_path / "predictors.yaml")
    predictors = PredictorsResource(config_file=str(config_file))
    resources = {**default_resources(), "storage": storage, "predictors": predictors}
    ratings = ratings_parquet(small_sample, tmp_path / "ratings.parquet")
    with dg.instance_for_test() as instance:
        run_graph(instance, storage, predictors)
        keys = sorted(instance.get_dynamic_partitions("shards"))
        train = {"ratings": str(ratings), "epochs": 3, "threads": 1}
        result = dg.materialize(
            [aesthetic_predictor_trained],
            instance=instance,
            resources=resources,
            run_config={"ops": {"aesthetic_predictor_trained": {"config": train}}, **QUIET},
        )
        assert result.success
        meta = latest(instance, "aesthetic_predictor_trained")
        assert meta["val_rows"].value == 60 and meta["train_rows"].value == 1140
        for name in ("val_mse", "val_mae", "val_spearman"):
            assert np.isfinite(meta[name].value)
        assert meta["predicted_vs_true"].value.startswith("![predicted vs true](data:image/png;base64,")
        weights = meta["path"].value
        assert Image.open(meta["plot_path"].value).format == "PNG"
        report = json.loads(open(weights.replace(".pth", ".json")).read())
        assert report["identity"] == meta["predictor"].value

        # Making it active outdates every shard scored by the released V2, and only through configuration.
        assert stale_shards(keys, storage.layout, predictors.identities()) == []
        activate("AESTHETIC_SCORE", weights, config_file)
        assert str(predictors.identities()["AESTHETIC_SCORE"]) == meta["predictor"].value
        assert stale_shards(keys, storage.layout, predictors.identities()) == keys

        defs = dg.Definitions(
            assets=[*URL_ASSETS, *ASSETS], asset_checks=CHECKS, jobs=[rescore_job], resources=resources
        )
        assert defs.resolve_job_def("rescore").execute_in_process(instance=instance, run_config=QUIET).success
        histogram = latest(instance, "score_histogram")
        assert histogram["predictor_changed"].value == ["AESTHETIC_SCORE"]
        assert histogram["predictor/AESTHETIC_SCORE"].value == meta["predictor"].value
        document = json.loads(storage.layout.histogram_history_path.read_text())
        assert document["previous"]["identities"]["AESTHETIC_SCORE"] == str(load_predictor(V2_WEIGHTS).identity)
        assert document["previous"]["counts"]["AESTHETIC_SCORE"] != document["counts"]["AESTHETIC_SCORE"]
        assert Image.open(histogram["plot_path"].value).format == "PNG"

        # Retraining with the same ratings and seed writes the same file (same name, same bytes, same identity),
        # so nothing becomes stale.
        trained_bytes = open(weights, "rb").read()
        again = dg.materialize(
            [aesthetic_predictor_trained],
            instance=instance,
            resources=resources,
            run_config={"ops": {"aesthetic_predictor_trained": {"config": train}}, **QUIET},
        )
        assert again.success
        assert latest(instance, "aesthetic_predictor_trained")["path"].value == weights
        assert latest(instance, "aesthetic_predictor_trained")["predictor"].value == meta["predictor"].value
        assert open(weights, "rb").read() == trained_bytes
        assert stale_shards(keys, storage.layout, predictors.identities()) == []


def test_sac_database_needs_its_embeddings(tmp_path):
    from laion_assets.core.errors import BadInputError
    from laion_assets.defs.scoring.training import load_ratings

    with pytest.raises(BadInputError, match=r"sac\.sqlite: a SAC database needs sac_embeddings"):
        load_ratings(TrainingConfig(ratings=str(tmp_path / "sac.sqlite")))
