"""The URL front wired in Dagster: img2dataset downloads, CLIP embeddings with a tiny model, then the spine."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from laion_assets.definitions import ASSETS, CHECKS, URL_ASSETS
from laion_assets.defs.assets.images import image_embeddings
from laion_assets.defs.partitions import register_shards
from laion_assets.defs.resources import ClipResource, DownloaderResource, PredictorsResource, StorageResource
from laion_assets.defs.sensors import new_shards_sensor
from laion_assets.layout import discover_parts
from laion_assets.paths import MODELS_DIR
from laion_assets.url_demo import ImageServer, serve_images, url_frame, write_images

SHARD_STEPS = ["images", "image_embeddings", "clip_embeddings", "aesthetic_scores"]
TINY = str(MODELS_DIR / "tiny-clip" / "tiny-clip-768.json")


@dataclass
class Chain:
    root: Path
    server: ImageServer
    instance: dg.DagsterInstance
    resources: dict
    first: dict[str, dg.ExecuteInProcessResult]


def _materialize(chain_resources: dict, instance: dg.DagsterInstance, key: str, selection: list[str]):
    return dg.materialize(
        [*URL_ASSETS, *ASSETS, *CHECKS],
        selection=selection,
        partition_key=key,
        instance=instance,
        resources=chain_resources,
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("chain")
    names = write_images(root / "served", 12, seed=5)
    with serve_images(root / "served", slow_seconds=1.0) as server:
        urls = root / "urls"
        urls.mkdir()
        shard0 = [server.url(n) for n in names[:5]] + [server.url(names[5], "slow")]
        shard1 = [server.url(n) for n in names[6:11]] + [server.url(names[11], "missing")]
        url_frame(shard0, seed=0).write_parquet(urls / "part-00000.parquet")
        url_frame(shard1, seed=1).write_csv(urls / "part-00001.csv")
        instance = dg.DagsterInstance.ephemeral()
        resources = {
            "storage": StorageResource(urls=str(urls), data_root=str(root / "out")),
            "predictors": PredictorsResource(),
            "downloader": DownloaderResource(processes_count=1, thread_count=8, timeout=5, min_success_rate=0.9),
            "clip": ClipResource(model=TINY, pretrained="none", device="cpu", batch_size=4, num_workers=1),
        }
        assert register_shards(instance, resources["storage"].shard_source) == ["00000", "00001"]
        first = {key: _materialize(resources, instance, key, SHARD_STEPS) for key in ("00000", "00001")}
        yield Chain(root, server, instance, resources, first)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_images_metadata_carries_img2dataset_stats(chain: Chain) -> None:
    meta0, meta1 = (_metadata(chain.first[k], "images") for k in ("00000", "00001"))
    assert (meta0["urls"], meta0["successes"], meta0["failures"], meta0["attempts"]) == (6, 6, 0, 1)
    assert meta0["attempt/count"] == 6 and meta0["attempt/status"] == {"success": 6}
    assert meta0["attempt/duration_s"] >= 1.0  # the slow URL took a second
    assert (meta1["successes"], meta1["failures"], meta1["attempt/failed_to_download"]) == (5, 1, 1)
    assert meta1["failures_by_reason"] == {"HTTP Error 404: Not Found": 1}
    assert Path(meta1["path"], "attempt-000", "00000.tar").is_file()


def test_success_rate_check_warns_under_the_floor(chain: Chain) -> None:
    ok = chain.first["00000"].get_asset_check_evaluations()
    (low,) = chain.first["00001"].get_asset_check_evaluations()
    assert [e.passed for e in ok] == [True]
    assert not low.passed and low.severity == dg.AssetCheckSeverity.WARN
    assert low.description == "83.3% of 6 URLs fetched (floor 90%)"
    assert chain.first["00001"].success  # a warning does not fail the run


def test_embeddings_are_clip_retrieval_layout_and_indexed(chain: Chain) -> None:
    storage = chain.resources["storage"]
    parts = discover_parts(storage.layout.embedded_dir)
    assert [(p.key, p.text_embeddings is not None) for p in parts] == [("00000", True), ("00001", True)]
    for part, rows in zip(parts, (6, 5), strict=True):
        emb = np.load(part.embeddings)
        assert emb.dtype == np.float16 and emb.shape == (rows, 768)
        np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
        meta = pl.read_parquet(part.metadata)
        assert meta.height == rows and meta["key"].n_unique() == rows
        indexed = pl.read_parquet(storage.layout.shard_metadata(part.key))
        assert indexed["URL"].to_list() == meta["URL"].to_list()  # clip_embeddings indexed this very part
    emb_meta = _metadata(chain.first["00000"], "image_embeddings")
    assert emb_meta["skipped_images"] == 0 and emb_meta["dtype"] == "float32" and emb_meta["device"] == "cpu"
    assert _metadata(chain.first["00000"], "clip_embeddings")["dagster/row_count"] == 6


def test_scores_tags_and_subsets_materialize_from_them(chain: Chain) -> None:
    scores = pl.read_parquet(chain.resources["storage"].layout.shard_scores("00001"))
    assert scores.height == 5 and scores["AESTHETIC_SCORE"].is_finite().all()
    release = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=dg.AssetSelection.assets("aesthetic_tags").downstream(),
        instance=chain.instance,
        resources={k: chain.resources[k] for k in ("storage", "predictors")},
    )
    assert release.success
    assert _metadata(release, "aesthetic_tags")["dagster/row_count"] == 11
    assert all(e.passed for e in release.get_asset_check_evaluations())
    subset = _metadata(release, "subset_4_5plus")["dagster/row_count"]
    assert 0 <= subset <= 11


def test_rematerializing_retries_only_failures_and_skips_finished_shards(chain: Chain) -> None:
    chain.server.requests.clear()
    again0 = _materialize(chain.resources, chain.instance, "00000", ["images"])
    assert chain.server.requests == []
    meta0 = _metadata(again0, "images")
    assert (meta0["attempts"], meta0["downloaded_now"], meta0["successes"]) == (1, 0, 6)
    again1 = _materialize(chain.resources, chain.instance, "00001", ["images"])
    assert [p.split("/")[1] for p in chain.server.requests] == ["missing"]
    meta1 = _metadata(again1, "images")
    assert (meta1["attempts"], meta1["downloaded_now"], meta1["successes"]) == (2, 1, 5)


def test_embedding_steps_share_the_gpu_pool() -> None:
    assert image_embeddings.op.pool == "gpu"


def test_stored_mode_is_unchanged(small_sample: Path, tmp_path: Path) -> None:
    resources = {
        "storage": StorageResource(source=str(small_sample), data_root=str(tmp_path / "out")),
        "predictors": PredictorsResource(),
        "downloader": DownloaderResource(),
        "clip": ClipResource(),  # never loaded: nothing to embed
    }
    instance = dg.DagsterInstance.ephemeral()
    assert register_shards(instance, resources["storage"].shard_source) == ["00000", "00001", "00002"]
    result = _materialize(resources, instance, "00000", SHARD_STEPS)
    assert _metadata(result, "images")["mode"].startswith("stored embeddings")
    assert _metadata(result, "clip_embeddings")["dagster/row_count"] == 400


def test_sensor_registers_url_shards(chain: Chain) -> None:
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, resources={"storage": chain.resources["storage"]})
    result = new_shards_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["00000", "00001"]


def test_missing_images_name_the_command(tmp_path: Path, chain: Chain) -> None:
    storage = StorageResource(urls=chain.resources["storage"].urls, data_root=str(tmp_path / "empty"))
    resources = {**chain.resources, "storage": storage}
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, storage.shard_source)
    result = dg.materialize(
        [*URL_ASSETS, *ASSETS, *CHECKS],
        selection=["image_embeddings"],
        partition_key="00000",
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "images for shard 00000 is not materialized yet" in failure.step_failure_data.error.message
