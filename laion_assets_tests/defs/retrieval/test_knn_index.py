"""knn_index on the whole graph of a generated sample, served by the real `laion-assets serve` command."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from starlette.testclient import TestClient

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.retrieval.assets import knn_index_complete
from laion_assets.demos.local import run_graph
from laion_assets.retrieval.catalog import part_name
from laion_assets.retrieval.index_build import IndexParams
from laion_assets.retrieval.index_folder import IndexedShard, build_index_folder
from laion_assets.retrieval.served import INDEX_JSON, open_index
from laion_assets.retrieval.service import ServiceState, create_app
from laion_assets.sources.layout import discover_parts
from laion_assets_tests.clip_client import load_clip_client
from laion_assets_tests.fresh_copy import user_env

CLI = str(Path(sys.executable).parent / "laion-assets")


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_sample_session):
    out = tmp_path_factory.mktemp("knn-out")
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample_session), data_root=str(out))
    run_graph(instance, storage, PredictorsResource())
    return instance, storage, small_sample_session, out


def source_vectors(source: Path) -> np.ndarray:
    return np.concatenate([np.load(p.embeddings).astype(np.float32) for p in discover_parts(source)])


def test_index_covers_every_row_with_its_metadata(built):
    instance, storage, source, out = built
    record = json.loads((out / "knn" / INDEX_JSON).read_text())
    tags = pl.concat([pl.read_parquet(p) for p in sorted((out / "tags").glob("part-*.parquet"))])
    assert record["info"]["rows"] == tags.height == 1200 and record["info"]["kind"] == "flat"
    assert record["info"]["recall_at_10"] == 1.0
    catalog = pl.concat([pl.read_ipc(out / "knn" / part_name(s["key"])) for s in record["info"]["shards"]])
    assert catalog["hash"].to_list() == tags["hash"].to_list() and catalog["url"].to_list() == tags["URL"].to_list()
    event = instance.get_latest_materialization_event(dg.AssetKey("knn_index"))
    meta = event.asset_materialization.metadata
    assert meta["dagster/row_count"].value == 1200 and meta["search_page"].value == "http://127.0.0.1:1234/"
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("knn_index"), "knn_index_complete")]
    )
    assert list(check.values())[0].status.value == "SUCCEEDED"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(built):
    _, _, source, out = built
    port = free_port()
    log = out.parent / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [CLI, "serve", "--data-root", str(out), "--port", str(port), "--clip-model", "none"],
            env=user_env(PYTHONPATH=str(PROJECT_DIR)),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"serve did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
    yield port, source, out, log
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_served_top10_equals_brute_force(served):
    port, source, out, log = served
    vectors = source_vectors(source)
    rng = np.random.default_rng(5)
    for q in [vectors[17], vectors[1100] + 0.3 * rng.normal(size=vectors.shape[1]).astype(np.float32)]:
        q = q / np.linalg.norm(q)
        status, results = post(port, "/knn-service", {"embedding_input": q.tolist(), "num_images": 10,
                                                       "modality": "image", "indice_name": ""})  # fmt: skip
        assert status == 200, results
        sims = vectors @ q
        order = np.argsort(-sims, kind="stable")
        got = np.array([r["id"] for r in results])
        # the sample has exact duplicate rows (equal vectors): equal similarities may come in either order
        np.testing.assert_allclose(sims[got], sims[order[:10]], atol=1e-5)
        np.testing.assert_allclose([r["similarity"] for r in results], sims[order[:10]], atol=1e-5)
        assert len(set(got.tolist())) == 10
        if sims[order[9]] > sims[order[10]] + 1e-5:
            assert set(got.tolist()) == set(order[:10].tolist())
        assert all(r["url"] and r["caption"] is not None for r in results)
    text = log.read_text()
    assert "serving index 'laion-aesthetics-assets' (1200 rows, 768-d" in text and "bucket embeddings from" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/galleries/index.html", timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    status, answer = post(port, "/knn-service", {"text": "a cat", "modality": "image"})
    assert status == 400 and "started without one" in answer["error"]


def test_clip_retrievals_own_client_gets_urls_and_captions(served):
    port, source, out, _ = served
    client_module = load_clip_client()
    vectors = source_vectors(source)
    q = vectors[42] / np.linalg.norm(vectors[42])
    # its defaults: aesthetic_score 9 / weight 0.5, deduplicate, safety model and violence detector on, 40 images
    client = client_module.ClipClient(url=f"http://127.0.0.1:{port}/knn-service", indice_name="laion-aesthetics-assets")
    results = client.query(embedding_input=q.tolist())
    assert 0 < len(results) <= 40
    assert all(r["url"].startswith("http") and isinstance(r["caption"], str) for r in results)
    assert all(r["punsafe"] is not None and r["punsafe"] < 0.5 for r in results)
    ratings = np.concatenate([np.load(out / "buckets" / f"rating{k}.npy") for k in range(10)])
    guided = q + 0.5 * ratings[9]
    guided /= np.linalg.norm(guided)
    np.testing.assert_allclose([r["similarity"] for r in results], vectors[[r["id"] for r in results]] @ guided,
                               atol=1e-4)  # fmt: skip
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True)
    found = vectors[[r["id"] for r in results]]
    near = found @ found.T
    np.fill_diagonal(near, 0)
    assert near.max() < 0.94  # near-duplicates were hidden


def test_an_ivf_pq_index_serves_the_exact_top10(built, tmp_path):
    """The approximate index over the same shards, served: its candidates re-ranked on the embedding files."""
    _, storage, source, out = built
    shards = [IndexedShard(p.key, p.embeddings, out / "tags" / f"part-{p.key}.parquet") for p in discover_parts(source)]
    # 16 PQ centroids (nbits=4) so 1,200 rows can train them; such coarse codes on this unclustered sample rank
    # poorly, so the re-rank reads 100 candidates per result (the default 20 is measured on 300k clustered rows)
    params = IndexParams(kind="ivf_pq", nbits=4, rerank_factor=100)
    record = build_index_folder(tmp_path / "knn", shards, params, "approx", {})
    assert record["info"]["kind"] == "ivf_pq" and record["info"]["recall_at_10"] >= 0.95
    served = open_index(tmp_path / "knn")
    vectors = source_vectors(source)
    urls = pl.concat([pl.read_parquet(s.tags, columns=["URL"]) for s in shards])["URL"]
    with TestClient(create_app(ServiceState({"approx": served}))) as client:
        for row in (5, 333, 1199):
            q = vectors[row] / np.linalg.norm(vectors[row])
            results = client.post("/knn-service", json={"embedding_input": q.tolist(), "num_images": 10}).json()
            sims = vectors @ q
            np.testing.assert_allclose([r["similarity"] for r in results], np.sort(sims)[::-1][:10], atol=1e-5)
            assert [r["url"] for r in results] == urls.gather([r["id"] for r in results]).to_list()


def test_check_fails_on_a_wrong_index(built, tmp_path):
    _, storage, _, out = built
    broken = tmp_path / "out"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("releases", "viz"))
    storage = StorageResource(source=storage.source, data_root=str(broken))
    assert knn_index_complete(storage).passed
    path = broken / "knn" / part_name("00001")
    table = ipc.open_file(pa.OSFile(str(path))).read_all()  # a copy: the file is rewritten below
    swapped = pa.concat_tables([table.slice(1, 1), table.slice(0, 1), table.slice(2)])
    tmp = path.with_suffix(".tmp")  # a new file, never truncating one a catalog may still have memory-mapped
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, swapped.schema) as writer:
        writer.write_table(swapped)
    os.replace(tmp, path)
    result = knn_index_complete(storage)
    assert not result.passed and "shard 00001: catalog hashes differ" in json.dumps(result.metadata["problems"].value)
    record = json.loads((broken / "knn" / INDEX_JSON).read_text())
    shutil.copy(out / "knn" / part_name("00001"), tmp)
    os.replace(tmp, path)
    record["info"]["recall_at_10"] = 0.5
    (broken / "knn" / INDEX_JSON).write_text(json.dumps(record))
    result = knn_index_complete(storage)
    assert not result.passed and result.metadata["problems"].value == ["recall@10 0.500 < 0.9"]
