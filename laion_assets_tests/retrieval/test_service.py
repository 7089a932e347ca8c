"""The search service over a generated index: clip-retrieval's API, guidance, filters, and every bad input."""

import base64
import http.server
import io
import json
import threading
from contextlib import contextmanager

import numpy as np
import polars as pl
import pytest
from PIL import Image
from starlette.testclient import TestClient

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.images.clip_model import ClipSpec, load_clip
from laion_assets.retrieval.catalog import Catalog, write_part
from laion_assets.retrieval.index_build import IndexParams, ShardVectors, build_index, load_index
from laion_assets.retrieval.queries import MAX_IMAGE_PIXELS, ClipEncoder
from laion_assets.retrieval.search import NEAR_DUPLICATE
from laion_assets.retrieval.served import ServedIndex
from laion_assets.retrieval.service import ServiceState, create_app

DIM = 768
TINY = str(PROJECT_DIR / "data" / "models" / "tiny-clip" / "tiny-clip-768.json")
ROWS = (60, 45, 55)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def generated(rng: np.random.Generator) -> tuple[list[np.ndarray], list[pl.DataFrame]]:
    """Clustered unit vectors (float16 as stored) with LAION-like metadata; rows 3 and 4 of shard 0 are planted
    near-duplicates, rows 5 and 6 share a URL, every seventh row is unsafe and every eleventh has no punsafe."""
    centres = unit(rng.normal(size=(6, DIM)))
    vectors, frames, n = [], [], 0
    for s, rows in enumerate(ROWS):
        v = unit(centres[rng.integers(0, 6, rows)] + 0.9 * unit(rng.normal(size=(rows, DIM))))
        if s == 0:
            v[4] = unit(v[3] + 0.05 * unit(rng.normal(size=DIM)))
        ids = np.arange(n, n + rows)
        punsafe = np.where(ids % 7 == 0, 0.9, 0.05).astype(np.float32)
        urls = [f"http://127.0.0.1:9/img/{i}.jpg" for i in ids]
        if s == 0:
            urls[6] = urls[5]
        frames.append(
            pl.DataFrame(
                {
                    "url": urls,
                    "caption": [f"caption {i}" for i in ids],
                    "hash": (ids * 7919 - 5000).astype(np.int64),
                    "aesthetic": rng.uniform(2, 8, rows).astype(np.float32),
                    "punsafe": [None if i % 11 == 0 else float(p) for i, p in zip(ids, punsafe, strict=True)],
                }
            ).with_columns(pl.col("punsafe").cast(pl.Float32))
        )
        vectors.append(v.astype(np.float16))
        n += rows
    return vectors, frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("index")
    vectors, frames = generated(rng)
    keys = [f"{i:05d}" for i in range(len(ROWS))]
    for key, frame in zip(keys, frames, strict=True):
        write_part(folder, key, frame)
    shards = [ShardVectors(k, v) for k, v in zip(keys, vectors, strict=True)]
    info = build_index(shards, folder, IndexParams("flat"))
    catalog = Catalog(folder, info)
    ratings = unit(rng.normal(size=(10, DIM)))
    served = ServedIndex("test-index", load_index(folder, info), info, shards, catalog, ratings, "generated",
                         {"info": info.to_dict()})  # fmt: skip
    encoder = ClipEncoder(ClipSpec(TINY, "none", "cpu"))
    app = create_app(ServiceState({"test-index": served}, encoder))
    with TestClient(app) as client:
        yield client, np.concatenate(vectors).astype(np.float32), pl.concat(frames), ratings, encoder


def brute(all_vectors: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = all_vectors @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def knn(client, **body):
    return client.post("/knn-service", content=json.dumps({"modality": "image", "indice_name": "test-index", **body}))


def test_embedding_query_equals_brute_force(world):
    client, vectors, _, _, _ = world
    q = unit(np.random.default_rng(9).normal(size=DIM))
    r = knn(client, embedding_input=q.tolist(), num_images=10)
    assert r.status_code == 200, r.text
    ids, sims = brute(vectors, q, 10)
    assert [x["id"] for x in r.json()] == ids.tolist()
    np.testing.assert_allclose([x["similarity"] for x in r.json()], sims, atol=1e-5)
    first = r.json()[0]
    assert first["url"].startswith("http://127.0.0.1:9/img/") and first["caption"] == f"caption {ids[0]}"


def test_aesthetic_guidance_ranks_as_the_direct_formula(world):
    client, vectors, _, ratings, _ = world
    q = unit(np.random.default_rng(10).normal(size=DIM))
    for k, w in ((9, 0.5), (2, 1.7)):
        r = knn(client, embedding_input=q.tolist(), num_images=20, aesthetic_score=k, aesthetic_weight=w)
        guided = q + w * ratings[k]
        guided = guided / np.linalg.norm(guided)
        ids, sims = brute(vectors, guided, 20)
        assert [x["id"] for x in r.json()] == ids.tolist()
        np.testing.assert_allclose([x["similarity"] for x in r.json()], sims, atol=1e-5)
    plain = knn(client, embedding_input=q.tolist(), num_images=20).json()
    assert [x["id"] for x in plain] != [x["id"] for x in r.json()]


def test_safe_mode_drops_unsafe_and_unknown(world):
    client, vectors, meta, _, _ = world
    q = unit(np.random.default_rng(11).normal(size=DIM))
    everything = knn(client, embedding_input=q.tolist(), num_images=200).json()
    assert len(everything) == sum(ROWS)
    safe = knn(client, embedding_input=q.tolist(), num_images=200, use_safety_model=True).json()
    want = [x["id"] for x in everything if x["punsafe"] is not None and x["punsafe"] < 0.5]
    assert [x["id"] for x in safe] == want
    assert len(want) < len(everything) - 10  # the fixture's unsafe and unknown rows were there to drop


def test_near_duplicates_and_duplicate_urls_hidden(world):
    client, vectors, meta, _, _ = world
    assert float(vectors[3] @ vectors[4]) >= NEAR_DUPLICATE
    q = vectors[3]
    results = knn(client, embedding_input=q.tolist(), num_images=200).json()
    ids = [x["id"] for x in results]
    assert ids.index(3) < ids.index(4)
    dedup = [x["id"] for x in knn(client, embedding_input=q.tolist(), num_images=200, deduplicate=True).json()]
    assert 3 in dedup and 4 not in dedup
    # no other pair in the fixture is that close, so only the planted one goes
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, 0)
    assert int((np.triu(sims) >= NEAR_DUPLICATE).sum()) == 1
    assert len(dedup) == len(ids) - 1
    urls = [
        x["id"] for x in knn(client, embedding_input=vectors[5].tolist(), num_images=200, deduplicate_urls=True).json()
    ]
    assert 5 in urls and 6 not in urls and len(urls) == len(ids) - 1


def test_text_and_image_queries_go_through_clip(world):
    client, vectors, _, _, encoder = world
    clip = load_clip(ClipSpec(TINY, "none", "cpu"))
    t = clip.encode_texts(["a red bicycle"]).numpy()[0]
    r = knn(client, text="a red bicycle", num_images=10)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()] == brute(vectors, unit(t), 10)[0].tolist()
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    e = clip.encode_images(clip.preprocess(image).unsqueeze(0)).numpy()[0]
    r = knn(client, image=base64.b64encode(buf.getvalue()).decode(), num_images=10)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()] == brute(vectors, unit(e), 10)[0].tolist()
    with image_server(buf.getvalue()) as url:
        r = knn(client, image_url=url, num_images=10)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()] == brute(vectors, unit(e), 10)[0].tolist()


@contextmanager
def image_server(png: bytes):
    """One PNG served over HTTP on 127.0.0.1 (the only network a test may touch)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/query.png"
    finally:
        server.shutdown()
        server.server_close()


def test_indices_list_metadata_and_config(world):
    client, _, meta, _, _ = world
    assert client.get("/indices-list").json() == ["test-index"]
    got = client.post("/metadata", content=json.dumps({"ids": [0, 61, 159], "indice_name": "test-index"})).json()
    assert [g["id"] for g in got] == [0, 61, 159]
    assert [g["metadata"]["hash"] for g in got] == meta["hash"].gather([0, 61, 159]).to_list()
    config = client.get("/config").json()
    assert config["indices"]["test-index"]["rows"] == sum(ROWS) and config["text"] is True
    assert '<input id="query"' in client.get("/").text


def _huge_png() -> str:
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # a few KB: the pixel count is what is refused
    return base64.b64encode(buf.getvalue()).decode()


BAD = [
    ({"embedding_input": [0.1] * 10}, 400, "embedding_input has 10 values; this index holds 768-d embeddings"),
    ({"embedding_input": [float("nan")] * DIM}, 400, "non-finite"),
    ({"embedding_input": [0.0] * DIM}, 400, "norm 0.0"),
    ({"embedding_input": ["a"] * DIM}, 400, "must be a list of numbers"),
    ({"embedding_input": [0.1] * DIM, "indice_name": "laion5B"}, 404, "unknown index 'laion5B'"),
    ({"embedding_input": [0.1] * DIM, "modality": "text"}, 400, "image embeddings only"),
    ({"embedding_input": [0.1] * DIM, "num_images": 0}, 400, "num_images must be between 1 and"),
    ({"embedding_input": [0.1] * DIM, "aesthetic_score": 12}, 400, "aesthetic_score must be between 0 and 9"),
    ({"embedding_input": [0.1] * DIM, "aesthetic_weight": "x"}, 400, "aesthetic_weight must be a number"),
    ({"image": "not base64!"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"plain text").decode()}, 400, "not a readable image"),
    ({"image_url": "file:///etc/passwd"}, 400, "must be an http(s) URL"),
    ({"image_url": "http://127.0.0.1:9/none.jpg"}, 400, "cannot fetch image_url"),
    ({}, 400, "give one of text, image, image_url or embedding_input"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_is_a_4xx_and_the_service_goes_on(world, body, status, message):
    client, vectors, _, _, _ = world
    r = knn(client, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    good = knn(client, embedding_input=vectors[0].tolist(), num_images=1)
    assert good.status_code == 200 and good.json()[0]["id"] == 0


def test_oversized_inputs_and_broken_bodies(world):
    client, vectors, _, _, _ = world
    r = knn(client, image=_huge_png())
    assert r.status_code == 413 and "pixels; the limit is" in r.json()["error"]
    r = client.post("/knn-service", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = client.post("/knn-service", content=b"x", headers={"content-length": str(10**9)})
    assert r.status_code == 413
    r = client.post("/metadata", content=json.dumps({"ids": [10**6]}))
    assert r.status_code == 404 and "not in this index" in r.json()["error"]
    assert knn(client, embedding_input=vectors[1].tolist(), num_images=1).json()[0]["id"] == 1
