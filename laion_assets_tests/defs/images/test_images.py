"""The URL front wired in Dagster: img2dataset downloads, CLIP embeddings with a tiny model, then the spine."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from laion_assets import cli
from laion_assets.core.paths import MODELS_DIR
from laion_assets.definitions import ASSETS, CHECKS, URL_ASSETS, default_resources
from laion_assets.defs.images.assets import image_embeddings
from laion_assets.defs.metadata import PREVIEW_ROWS
from laion_assets.defs.resources import (
    ClipResource,
    DownloaderResource,
    PredictorsResource,
    StorageResource,
    WatermarkResource,
)
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.defs.sources.sensors import new_shards_sensor
from laion_assets.demos.url_server import ImageServer, serve_images, url_frame, write_images
from laion_assets.images.downloading import DownloadOptions
from laion_assets.images.watermark_scores import indexed_watermark, read_watermark
from laion_assets.sources.layout import discover_parts

SHARD_STEPS = ["images", "image_embeddings", "clip_embeddings", "aesthetic_scores"]
TINY = str(MODELS_DIR / "tiny-clip" / "tiny-clip-768.json")


@dataclass
class Chain:
    root: Path
    server: ImageServer
    instance: dg.DagsterInstance
    resources: dict
    first: dg.ExecuteInProcessResult


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
    names = write_images(root / "served", 7, seed=5)
    with serve_images(root / "served", slow_seconds=1.0) as server:
        urls = root / "urls"
        urls.mkdir()
        shard = [server.url(n) for n in names[:5]] + [server.url(names[5], "slow"), server.url(names[6], "flaky")]
        url_frame(shard, seed=1).write_csv(urls / "part-00003.csv")
        instance = dg.DagsterInstance.ephemeral()
        resources = {
            **default_resources(),
            "storage": StorageResource(urls=str(urls), data_root=str(root / "out")),
            "predictors": PredictorsResource(),
            "downloader": DownloaderResource(processes_count=1, thread_count=8, timeout=5, min_success_rate=0.9),
            "clip": ClipResource(model=TINY, pretrained="none", device="cpu", batch_size=4, num_workers=1),
        }
        assert register_shards(instance, resources["storage"].shard_source) == ["00003"]
        first = _materialize(resources, instance, "00003", SHARD_STEPS)
        yield Chain(root, server, instance, resources, first)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_images_metadata_carries_img2dataset_stats(chain: Chain) -> None:
    meta = _metadata(chain.first, "images")
    assert (meta["urls"], meta["successes"], meta["failures"], meta["attempts"]) == (7, 6, 1, 1)
    assert meta["attempt/count"] == 7 and meta["attempt/successes"] == 6 and meta["attempt/failed_to_download"] == 1
    assert meta["attempt/status"] == {"success": 6, "HTTP Error 503: Service Unavailable": 1}
    assert meta["failures_by_reason"] == {"HTTP Error 503: Service Unavailable": 1}
    assert meta["attempt/duration_s"] >= 1.0  # the slow URL took a second
    assert Path(meta["path"], "attempt-000", "00000.tar").is_file()


def test_success_rate_check_warns_under_the_floor(chain: Chain) -> None:
    (low,) = chain.first.get_asset_check_evaluations()
    assert not low.passed and low.severity == dg.AssetCheckSeverity.WARN
    assert low.description == "85.7% of 7 URLs fetched (floor 90%)"
    assert chain.first.success  # a warning does not fail the run


def test_embeddings_are_clip_retrieval_layout_and_indexed(chain: Chain) -> None:
    storage = chain.resources["storage"]
    (part,) = discover_parts(storage.layout.embedded_dir)
    assert part.key == "00003" and part.text_embeddings is not None
    emb = np.load(part.embeddings)
    assert emb.dtype == np.float16 and emb.shape == (6, 768)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    meta = pl.read_parquet(part.metadata)
    assert meta["key"].to_list() == [f"{i:09d}" for i in range(6)]
    assert meta["URL"].to_list() == [
        chain.server.url(f"{i:05d}.{'png' if i % 4 == 3 else 'jpg'}") for i in range(5)
    ] + [chain.server.url("00005.jpg", "slow")]
    indexed = pl.read_parquet(storage.layout.shard_metadata(part.key))
    assert indexed["URL"].to_list() == meta["URL"].to_list()  # clip_embeddings indexed this very part
    emb_meta = _metadata(chain.first, "image_embeddings")
    assert emb_meta["skipped_images"] == 0 and emb_meta["dtype"] == "float32" and emb_meta["device"] == "cpu"
    # The column schema is the written metadata file's; the preview holds its first rows.
    assert [(c.name, c.type) for c in emb_meta["dagster/column_schema"].columns] == [
        (name, str(dtype)) for name, dtype in meta.schema.items()
    ]
    assert [r.data["URL"] for r in emb_meta["preview"].records] == meta["URL"].head(PREVIEW_ROWS).to_list()
    assert _metadata(chain.first, "clip_embeddings")["dagster/row_count"] == 6


def test_scores_tags_and_subsets_materialize_from_them(chain: Chain) -> None:
    scores = pl.read_parquet(chain.resources["storage"].layout.shard_scores("00003"))
    assert scores.height == 6 and scores["AESTHETIC_SCORE"].is_finite().all()
    release = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=dg.AssetSelection.assets("aesthetic_tags").downstream() - dg.AssetSelection.assets("hf_release"),
        instance=chain.instance,
        resources={**default_resources(), **{k: chain.resources[k] for k in ("storage", "predictors")}},
    )
    assert release.success
    assert _metadata(release, "aesthetic_tags")["dagster/row_count"] == 6
    assert all(e.passed for e in release.get_asset_check_evaluations())
    assert 0 <= _metadata(release, "subset_4_5plus")["dagster/row_count"] <= 6


@dataclass
class Watermarked:
    storage: StorageResource
    instance: dg.DagsterInstance
    resources: dict
    embedded: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def watermarked(chain: Chain, tmp_path_factory: pytest.TempPathFactory):
    """The chain's downloaded images in a data root (and instance) of their own, embedded with the watermark head on.

    Apart, so that the chain's own release (test_scores_tags_and_subsets_materialize_from_them) stays without it.
    """
    out = tmp_path_factory.mktemp("watermarked") / "out"
    shutil.copytree(chain.root / "out" / "images", out / "images")
    storage = StorageResource(urls=chain.resources["storage"].urls, data_root=str(out))
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, storage.shard_source)
    head = WatermarkResource(weights="random", device="cpu", batch_size=4, num_workers=1)
    resources = {**chain.resources, "storage": storage, "watermark": head}
    embedded = _materialize(resources, instance, "00003", SHARD_STEPS[1:])
    return Watermarked(storage, instance, resources, embedded)


def test_image_embeddings_scores_pwatermark_in_the_same_pass(chain: Chain, watermarked: Watermarked) -> None:
    assert _metadata(chain.first, "image_embeddings")["watermark"].startswith("off: no watermark head configured")
    layout = watermarked.storage.layout
    meta = _metadata(watermarked.embedded, "image_embeddings")
    assert meta["watermark/head"] == str(WatermarkResource(weights="random").identity())
    assert meta["watermark/rows"] == 6 and meta["watermark/images_per_second"] > 0
    assert 0 < meta["pwatermark/min"] <= meta["pwatermark/mean"] <= meta["pwatermark/max"] < 1
    assert meta["watermark/path"] == str(layout.shard_watermark("00003"))
    aligned, _ = indexed_watermark(layout, "00003")  # what the tags join reads: one value per indexed row
    assert aligned is not None
    assert aligned["hash"].to_list() == pl.read_parquet(layout.shard_metadata("00003"))["hash"].to_list()


def test_a_new_watermark_head_is_stale_rescored_from_images_and_listed_by_stale(
    watermarked: Watermarked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    storage = watermarked.storage
    out = Path(storage.data_root)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the CLI exports it; restored after the test
    monkeypatch.setenv("LAION_ASSETS_WATERMARK", "random:1")  # the head `stale` and the rescore job read
    cli.main(["register", storage.urls, "--dagster-home", str(home)])
    old, new = (WatermarkResource(weights=w).identity() for w in ("random", "random:1"))

    def stale() -> list[str]:
        capsys.readouterr()
        cli.main(["stale", "--data-root", str(out), "--dagster-home", str(home)])
        printed = capsys.readouterr().out.splitlines()
        (header,) = [i for i, line in enumerate(printed) if line.startswith("pwatermark against the watermark head")]
        assert printed[header].startswith(f"pwatermark against the watermark head {new} (random")
        return printed[header + 1 :]

    assert stale() == [f"00003  stale         scored by another head ({old} -> {new})"]
    result = dg.materialize(
        [*URL_ASSETS, *ASSETS, *CHECKS],
        selection=["rescored_shards"],
        instance=watermarked.instance,
        resources={**watermarked.resources, "watermark": WatermarkResource(device="cpu")},
    )
    (observed,) = [e.asset_observation_data.asset_observation for e in result.all_events if e.is_asset_observation]
    assert (observed.asset_key, observed.partition) == (image_embeddings.key, "00003")
    assert observed.metadata["watermark/head"].value == str(new)
    assert _metadata(result, "rescored_shards")["watermark/rescored"] == ["00003"]
    assert stale() == ["00003  current       scored by the active watermark head"]
    assert read_watermark(storage.layout.shard_watermark("00003"))[1].identity == str(new)

    # Back to the first head, with the shard's images gone: it is listed as needing them, with what to run.
    shutil.rmtree(storage.layout.images_dir("00003"))
    monkeypatch.setenv("LAION_ASSETS_WATERMARK", "random")
    old, new = new, old
    (line,) = stale()
    assert line.startswith(f"00003  needs images  scored by another head ({old} -> {new}), and its images are gone")
    assert "`dagster asset materialize --select images,image_embeddings --partition 00003`" in line


def test_rematerializing_retries_only_failures_then_skips_the_finished_shard(chain: Chain) -> None:
    chain.server.requests.clear()
    retry = _materialize(chain.resources, chain.instance, "00003", ["images"])
    assert [p.split("/")[1] for p in chain.server.requests] == ["flaky"]
    meta = _metadata(retry, "images")
    assert (meta["attempts"], meta["downloaded_now"], meta["successes"], meta["failures"]) == (2, 1, 7, 0)
    assert [e.passed for e in retry.get_asset_check_evaluations()] == [True]
    chain.server.requests.clear()
    finished = _materialize(chain.resources, chain.instance, "00003", ["images"])
    assert chain.server.requests == []
    meta = _metadata(finished, "images")
    assert (meta["attempts"], meta["downloaded_now"], meta["successes"]) == (2, 0, 7)
    assert "attempt/count" not in meta  # nothing was downloaded, so there are no new img2dataset stats


def test_embedding_steps_share_the_gpu_pool() -> None:
    assert image_embeddings.op.pool == "gpu"


def test_stored_mode_is_unchanged(small_sample: Path, tmp_path: Path) -> None:
    resources = {
        **default_resources(),
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
    assert [r.partition_key for r in result.run_requests] == ["00003"]


def test_missing_images_name_the_command(tmp_path: Path, chain: Chain) -> None:
    storage = StorageResource(urls=chain.resources["storage"].urls, data_root=str(tmp_path / "empty"))
    resources = {**chain.resources, "storage": storage}
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, storage.shard_source)
    result = dg.materialize(
        [*URL_ASSETS, *ASSETS, *CHECKS],
        selection=["image_embeddings"],
        partition_key="00003",
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "images for shard 00003 is not materialized yet" in failure.step_failure_data.error.message


def test_downloader_bounds_reach_the_download_options() -> None:
    assert DownloaderResource().options() == DownloadOptions()  # one source of truth for the defaults
    resource = DownloaderResource(max_url_bytes=1234, url_deadline=2.5, max_image_pixels=5678, shard_timeout=90)
    options = resource.options()
    assert (options.max_url_bytes, options.url_deadline, options.shard_timeout) == (1234, 2.5, 90)
    assert options.url_limits().too_large("body") == "larger than max_url_bytes=1234 (body)"
    assert options.url_limits().too_many_pixels == "image larger than max_image_pixels=5678 (width x height)"
