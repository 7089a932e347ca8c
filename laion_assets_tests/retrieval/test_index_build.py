"""The kNN index: exact on small sets, IVF-PQ merged on disk over several shards, recall, ids to (shard, row)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.retrieval import index_build
from laion_assets.retrieval.index_build import (
    IndexInfo,
    IndexParams,
    ShardVectors,
    build_index,
    exact_topk,
    load_index,
    recall_at_k,
    resolve_params,
    search,
    search_with_vectors,
)
from laion_assets_tests.retrieval.clustered import clustered_embeddings


def on_disk(tmp_path, arrays: dict[str, np.ndarray]) -> list[ShardVectors]:
    """Shards as the asset reads them: float16 .npy files, memory-mapped."""
    folder = tmp_path / "embeddings"
    folder.mkdir(exist_ok=True)
    shards = []
    for key, array in arrays.items():
        np.save(folder / f"{key}.npy", array.astype(np.float16))
        shards.append(ShardVectors(key, np.load(folder / f"{key}.npy", mmap_mode="r")))
    return shards


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def brute_force(shards: list[ShardVectors], queries: np.ndarray, k: int) -> np.ndarray:
    everything = np.concatenate([np.asarray(s.embeddings, dtype=np.float32) for s in shards])
    scores = queries.astype(np.float32) @ everything.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Three small shards (one empty) of random unit vectors, memory-mapped."""
    tmp = tmp_path_factory.mktemp("small")
    return on_disk(tmp, {"00000": unit(700, 32, 1), "00001": unit(0, 32, 2), "00002": unit(950, 32, 3)})


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """20k clustered 64-d vectors in five shards, and an ivf_pq index built over them."""
    tmp = tmp_path_factory.mktemp("clustered")
    vectors = clustered_embeddings(20_000, 64, seed=5)
    sizes = [3000, 5000, 4000, 4500, 3500]
    arrays = {f"{i:05d}": part for i, part in enumerate(np.split(vectors, np.cumsum(sizes)[:-1]))}
    shards = on_disk(tmp, arrays)
    lines: list[str] = []
    info = build_index(shards, tmp / "index", IndexParams(kind="ivf_pq"), progress=lines.append)
    return shards, vectors, tmp / "index", info, lines


def test_flat_index_ranks_like_numpy_brute_force(small, tmp_path):
    lines: list[str] = []
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "catalog.txt").write_text("the caller's own file, left alone")
    info = build_index(small, tmp_path / "flat", progress=lines.append)
    assert info.kind == "flat" and info.rows == 1650 and info.dim == 32
    assert info.shards == [
        {"key": "00000", "first_id": 0, "rows": 700},
        {"key": "00001", "first_id": 700, "rows": 0},
        {"key": "00002", "first_id": 700, "rows": 950},
    ]
    assert info.recall_at_10 == 1.0 and info.recall_queries == 200
    assert info.files == ["image.index"]
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["catalog.txt", "image.index"]
    assert "shard 00002: 950 rows added" in lines
    queries = unit(25, 32, 9).astype(np.float32)
    index = load_index(tmp_path / "flat", info)
    _, ids = search(index, info, small, queries, 10)
    assert ids.tolist() == brute_force(small, queries, 10).tolist()
    _, raw = index.search(queries, 10)
    assert raw.tolist() == ids.tolist()
    assert info.locate(np.array([0, 699, 700, 1649])) == [("00000", 0), ("00000", 699), ("00002", 0), ("00002", 949)]
    with pytest.raises(BadInputError, match=r"id -1 is not in this index \(ids 0..1649\)"):
        info.locate(np.array([3, -1]))


def test_exact_topk_streams_chunks_and_equals_numpy(small, monkeypatch):
    monkeypatch.setattr(index_build, "CHUNK_ROWS", 128)  # chunk edges inside every shard
    queries = unit(12, 32, 11).astype(np.float32)
    scores, ids = exact_topk(small, queries, 15)
    expected = brute_force(small, queries, 15)
    assert ids.tolist() == expected.tolist()
    everything = np.concatenate([np.asarray(s.embeddings, dtype=np.float32) for s in small])
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ everything.T, expected, axis=1), rtol=1e-5)
    _, padded = exact_topk(small[:1], queries[:1], 800)  # more than the 700 rows: padded with -1
    assert (padded[0, 700:] == -1).all() and sorted(padded[0, :700].tolist()) == list(range(700))


def test_recall_counts_tied_duplicates_as_found(tmp_path):
    base = unit(400, 32, 12)
    base[100:130] = base[7]  # 31 equal rows: which 10 of them are "the" top-10 is arbitrary
    shards = on_disk(tmp_path, {"00000": base[:200], "00001": base[200:]})
    info = build_index(shards, tmp_path / "dup", IndexParams(recall_queries=400))
    assert info.recall_at_10 == 1.0
    query = base[7:8].astype(np.float32)
    _, exact = exact_topk(shards, query, 10)
    # BLAS sums equal rows in different orders (their place in a block), so which copies win is down to ulps.
    assert set(exact[0].tolist()) <= {7, *range(100, 130)}
    other_copies = np.array([sorted({7, *range(100, 130)} - set(exact[0].tolist()))[:10]])
    assert recall_at_k(shards, info, query, other_copies, 10) == 1.0
    assert recall_at_k(shards, info, query, np.array([[*range(120, 129), 399]]), 10) == 0.9


def test_ivf_pq_over_five_shards_merged_on_disk_reaches_recall(clustered):
    shards, vectors, folder, info, lines = clustered
    assert info.kind == "ivf_pq" and info.rows == 20_000
    assert info.params["index_factory"] == f"IVF{info.params['nlist']},PQ{info.params['pq_m']}x8"
    assert info.params["metric"] == "inner_product" and info.params["faiss_version"]
    assert info.recall_at_10 >= 0.95, info
    assert info.params["recall_at_10_codes_only"] < info.recall_at_10  # the re-rank is what reaches it
    assert sorted(p.name for p in folder.iterdir()) == ["image.index", "image.ivfdata"] == sorted(info.files)
    assert lines[0].startswith(f"trained on {info.params['train_rows']} rows")
    assert "shard 00003: 4500 rows added" in lines and "merged 5 shards" in lines
    # Our own recall check, independent of build_index's: fresh queries near the data.
    queries = clustered_embeddings(100, 64, seed=5)[:100].astype(np.float32)
    queries += np.random.default_rng(3).normal(0, 0.02, queries.shape).astype(np.float32)
    index = load_index(folder, info)
    _, found = search(index, info, shards, queries, 10)
    exact = brute_force(shards, queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]) >= 0.95


def test_ivf_pq_ids_map_back_to_shard_and_row(clustered):
    shards, vectors, folder, info, _ = clustered
    index = load_index(folder, info)
    picks = [0, 2999, 3000, 7999, 8000, 12500, 19999]
    _, ids, found = search_with_vectors(index, info, shards, vectors[picks].astype(np.float32), 5)
    assert ids[:, 0].tolist() == picks  # a row's own vector finds its own id first
    np.testing.assert_array_equal(found, vectors[ids].astype(np.float32))  # the exact embeddings of the results
    assert info.locate(ids[:, 0]) == [
        ("00000", 0),
        ("00000", 2999),
        ("00001", 0),
        ("00001", 4999),
        ("00002", 0),
        ("00003", 500),
        ("00004", 3499),
    ]


def test_renamed_folder_still_loads_and_searches_the_same(clustered, tmp_path):
    shards, vectors, folder, info, _ = clustered
    queries = vectors[::997].astype(np.float32)
    before = search(load_index(folder, info), info, shards, queries, 10)
    raw_before = load_index(folder, info).search(queries, 10)
    moved = tmp_path / "renamed"
    shutil.copytree(folder, moved)  # a copy elsewhere: the original path still exists, so a stale path would pass
    shutil.rmtree(folder)
    try:
        again = IndexInfo.from_dict(json.loads(json.dumps(info.to_dict())))
        assert again == info
        index = load_index(moved, again)
        assert index.ntotal == 20_000 and index.nprobe == info.params["nprobe"]
        after = search(index, again, shards, queries, 10)
        assert after[1].tolist() == before[1].tolist()
        assert index.search(queries, 10)[1].tolist() == raw_before[1].tolist()
    finally:
        shutil.copytree(moved, folder)  # the module's fixture is shared


def test_default_parameters_scale_to_768_dimensions():
    p = resolve_params(IndexParams(), 300_000, 768)
    assert p["index_factory"] == "IVF2048,PQ64x8" and p["nprobe"] == 128 and p["train_rows"] == 39 * 2048
    assert p["rerank_factor"] == 20 and p["quantizer"] == "flat"
    assert resolve_params(IndexParams(), 200_000, 768)["kind"] == "flat"
    laion2b = resolve_params(IndexParams(), 2_322_161_807, 768)
    assert laion2b["index_factory"] == "IVF131072_HNSW32,PQ64x8" and laion2b["nprobe"] == 256
    assert laion2b["train_rows"] == 39 * 131_072
    assert resolve_params(IndexParams(kind="ivf_pq"), 20_000, 64)["pq_m"] == 8


def test_hnsw_coarse_quantizer_builds_merges_and_finds_own_rows(clustered, tmp_path):
    shards, vectors, _, _, _ = clustered
    info = build_index(shards, tmp_path / "hnsw", IndexParams(kind="ivf_pq", quantizer="hnsw"))
    assert info.params["index_factory"].startswith(f"IVF{info.params['nlist']}_HNSW32,PQ")
    assert info.recall_at_10 >= 0.95
    _, ids = search(load_index(tmp_path / "hnsw", info), info, shards, vectors[[1, 15_000]].astype(np.float32), 3)
    assert ids[:, 0].tolist() == [1, 15_000]


def test_bad_inputs_name_the_shard(small, tmp_path):
    other = on_disk(tmp_path, {"00007": unit(10, 16, 4)})
    with pytest.raises(BadInputError, match=r"shard 00007: embeddings have dimension 16, .* 32"):
        build_index([*small, *other], tmp_path / "a")
    broken = unit(300, 32, 5)
    broken[217, 3] = np.nan
    nan_shards = [small[0], ShardVectors("00004", broken)]
    with pytest.raises(BadInputError, match="shard 00004: row 217 has a NaN"):
        build_index(nan_shards, tmp_path / "b")
    with pytest.raises(BadInputError, match="shard 00004: row 217 has a NaN"):
        exact_topk(nan_shards, unit(1, 32, 6), 5)
    with pytest.raises(BadInputError, match="shard 00009: embeddings must be 2-D"):
        build_index([ShardVectors("00009", np.zeros(32, dtype=np.float16))], tmp_path / "c")
    with pytest.raises(BadInputError, match="input is empty"):
        build_index([], tmp_path / "d")
    with pytest.raises(BadInputError, match="all 1 shards are empty"):
        build_index([small[1]], tmp_path / "e")
    with pytest.raises(BadInputError, match="unknown index kind 'hnsw'"):
        build_index(small, tmp_path / "f", IndexParams(kind="hnsw"))
    with pytest.raises(BadInputError, match="unknown quantizer 'ivf'"):
        resolve_params(IndexParams(kind="ivf_pq", quantizer="ivf"), 20_000, 64)
    with pytest.raises(BadInputError, match=r"needs at least 9984 rows .* this set has 1650: use kind='flat'"):
        build_index(small, tmp_path / "g", IndexParams(kind="ivf_pq"))
    with pytest.raises(BadInputError, match=r"nlist=4096 needs at least 159744 rows"):
        resolve_params(IndexParams(kind="ivf_pq", nlist=4096), 20_000, 64)
    with pytest.raises(BadInputError, match="pq_m=5 must divide the dimension 64"):
        resolve_params(IndexParams(kind="ivf_pq", pq_m=5), 20_000, 64)
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "image.index").write_text("x")
    with pytest.raises(BadInputError, match="already holds image.index; build into a fresh folder"):
        build_index(small, tmp_path / "h")
    with pytest.raises(BadInputError, match=r"queries must be \(n, 32\)"):
        exact_topk(small, unit(2, 16, 7), 3)
