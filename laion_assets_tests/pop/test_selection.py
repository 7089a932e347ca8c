"""LAION-POP's pure steps on a generated world with a known structure: concepts, centroids, the selection."""

import numpy as np
import polars as pl
import pytest

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.pop.centroids import KmeansParams, train_centroids
from laion_assets.pop.concepts import Concepts, read_concepts
from laion_assets.pop.selection import (
    POP_COLUMNS,
    PopParams,
    completeness_problems,
    funnel,
    select,
    soundness_problems,
    write_selection,
)
from laion_assets.retrieval.catalog import Catalog, write_part
from laion_assets.retrieval.index_build import IndexParams, ShardVectors, build_index, load_index
from laion_assets.retrieval.served import ServedIndex

DIM = 32
SHARD_ROWS = (300, 250, 350)
CLUSTERS = 6


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_concepts(folder, vectors: list[np.ndarray]) -> None:
    (folder / "img_emb").mkdir(parents=True)
    for n, v in enumerate(vectors):
        np.save(folder / "img_emb" / f"img_emb_{n * 3}.npy", v)  # gaps in the part numbers, as LAION's have


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three shards of random rows with LAION-like metadata, plus planted rows near six concept clusters.

    Each cluster's centre has eight planted rows near it: rows 0-3 meet every filter, row 4 is 700 px on its short
    side, row 5 has pwatermark 0.9, row 6 has V2 score 0.3, row 7 repeats row 0's hash (an exact duplicate)."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("pop-index")
    centres = unit(rng.normal(size=(CLUSTERS, DIM)))
    vectors, frames, planted, first = [], [], {}, 0
    for s, rows in enumerate(SHARD_ROWS):
        v = unit(rng.normal(size=(rows, DIM)))
        ids = np.arange(first, first + rows)
        frame = pl.DataFrame(
            {
                "url": [f"http://127.0.0.1:9/{i}.jpg" for i in ids],
                "caption": [f"caption {i}" for i in ids],
                "width": rng.choice([512.0, 800.0, 1024.0, 2048.0], rows),
                "height": rng.choice([600.0, 768.0, 1200.0], rows),
                "hash": (ids * 104729 + 11).astype(np.int64),
                "clip_similarity": rng.uniform(0.28, 0.4, rows),
                "aesthetic": rng.uniform(3, 8, rows).astype(np.float32),
                "AESTHETIC_SCORE": rng.uniform(0.2, 7, rows).astype(np.float32),
                "punsafe": rng.uniform(0, 1, rows).astype(np.float32),
                "pwatermark": rng.uniform(0, 1, rows).astype(np.float32),
            }
        )
        if s == 1:  # the planted rows live in the middle shard, at rows 10..10+8*CLUSTERS
            for c in range(CLUSTERS):
                for j in range(8):
                    row = 10 + 8 * c + j
                    v[row] = unit(centres[c] + 0.15 * unit(rng.normal(size=DIM)))
                    planted[(c, j)] = first + row
            updates = {"width": 1024.0, "height": 1024.0, "AESTHETIC_SCORE": 6.0, "pwatermark": 0.1}
            for col, value in updates.items():
                values = frame[col].to_numpy().copy()
                values[10 : 10 + 8 * CLUSTERS] = value
                frame = frame.with_columns(pl.Series(col, values).cast(frame[col].dtype))
            for c in range(CLUSTERS):
                base = 10 + 8 * c
                frame = frame.with_columns(
                    pl.when(pl.int_range(pl.len()) == base + 4).then(700.0).otherwise(pl.col("height")).alias("height"),
                    pl.when(pl.int_range(pl.len()) == base + 5)
                    .then(0.9)
                    .otherwise(pl.col("pwatermark"))
                    .cast(pl.Float32)
                    .alias("pwatermark"),
                    pl.when(pl.int_range(pl.len()) == base + 6)
                    .then(0.3)
                    .otherwise(pl.col("AESTHETIC_SCORE"))
                    .cast(pl.Float32)
                    .alias("AESTHETIC_SCORE"),
                    pl.when(pl.int_range(pl.len()) == base + 7)
                    .then(pl.col("hash").shift(7))
                    .otherwise(pl.col("hash"))
                    .alias("hash"),
                )
        vectors.append(v.astype(np.float16))
        frames.append(frame)
        first += rows
    keys = [f"{i:05d}" for i in range(len(SHARD_ROWS))]
    for key, frame in zip(keys, frames, strict=True):
        write_part(folder, key, frame)
    shards = [ShardVectors(k, v) for k, v in zip(keys, vectors, strict=True)]
    info = build_index(shards, folder, IndexParams("flat"))
    ratings = unit(rng.normal(size=(10, DIM)))
    served = ServedIndex("pop", load_index(folder, info), info, shards, Catalog(folder, info), ratings, "generated")
    # The concept collection: 40 noisy copies of each centre, over two files.
    concepts_dir = folder / "concepts"
    noisy = [unit(centres[c] + 0.3 * unit(rng.normal(size=(40, DIM)))) for c in range(CLUSTERS)]
    everything = np.concatenate(noisy)[rng.permutation(40 * CLUSTERS)]
    write_concepts(concepts_dir, [everything[:100].astype(np.float16), everything[100:]])
    return {
        "served": served,
        "vectors": np.concatenate(vectors).astype(np.float32),
        "meta": pl.concat(frames),
        "centres": centres,
        "planted": planted,
        "concepts": concepts_dir,
        "ratings": ratings,
    }


def test_concepts_are_read_and_checked(world, tmp_path):
    concepts = read_concepts(world["concepts"], DIM)
    assert concepts.rows == 40 * CLUSTERS and len(concepts.files) == 2
    assert Concepts.from_dict(concepts.to_dict()) == concepts
    with pytest.raises(BadInputError, match="width is 32, expected 768"):
        read_concepts(world["concepts"], 768)
    bad = tmp_path / "bad"
    v = unit(np.random.default_rng(0).normal(size=(5, DIM)))
    v[2] = np.nan
    write_concepts(bad, [v])
    with pytest.raises(BadInputError, match="img_emb_0.npy: row 2 has NaN"):
        read_concepts(bad, DIM)
    with pytest.raises(MissingUpstreamError, match="empty: does not exist: the concept collection is a clip-retrieval"):
        read_concepts(tmp_path / "empty", DIM)
    (tmp_path / "bare" / "img_emb").mkdir(parents=True)
    with pytest.raises(MissingUpstreamError, match="bare: holds no img_emb/img_emb_"):
        read_concepts(tmp_path / "bare", DIM)


def test_centroids_find_the_concept_clusters(world):
    concepts = read_concepts(world["concepts"], DIM)
    found = train_centroids(concepts, KmeansParams(k=CLUSTERS, niter=25, seed=1, nredo=5))
    assert found.vectors.shape == (CLUSTERS, DIM)
    np.testing.assert_allclose(np.linalg.norm(found.vectors, axis=1), 1, atol=1e-5)
    # Each centroid sits on one planted centre, and every cluster holds its 40 concept vectors.
    match = (found.vectors @ world["centres"].T).argmax(axis=1)
    assert sorted(match.tolist()) == list(range(CLUSTERS))
    assert found.sizes.tolist() == [40] * CLUSTERS
    # Inertia recomputed directly: squared distance of every concept vector to its nearest centroid.
    allv = np.concatenate([np.load(f.path).astype(np.float32) for f in concepts.files])
    d2 = ((allv[:, None, :] - found.vectors[None]) ** 2).sum(-1).min(1)
    assert found.inertia == pytest.approx(float(d2.sum()), rel=1e-4)
    assert found.summary()["empty_clusters"] == 0
    with pytest.raises(BadInputError, match="k=500 centroids but the concept collection"):
        train_centroids(concepts, KmeansParams(k=500))


def brute_selection(world, centroids: np.ndarray, params: PopParams) -> dict[int, int]:
    """The rule computed directly with numpy over all rows: hash -> centroid."""
    allv, meta = world["vectors"], world["meta"]
    best: dict[int, tuple[float, int]] = {}
    for c, centroid in enumerate(centroids):
        q = centroid + params.guidance_weight * world["ratings"][params.guidance_score]
        q = q / np.linalg.norm(q)
        top = np.argsort(-(allv @ q), kind="stable")[: params.neighbours]
        for i in top:
            row = meta.row(int(i), named=True)
            ok = (
                row["AESTHETIC_SCORE"] >= params.min_aesthetic
                and min(row["width"], row["height"]) >= params.min_side
                and row["pwatermark"] < params.max_pwatermark
            )
            if not ok:
                continue
            sim = float(allv[i] @ centroid)
            if row["hash"] not in best or sim > best[row["hash"]][0] + 1e-6:
                best[row["hash"]] = (sim, c)
    return {h: c for h, (_, c) in best.items()}


def test_the_selection_finds_the_planted_neighbours_and_meets_every_filter(world):
    served, planted = world["served"], world["planted"]
    centroids = world["centres"]
    params = PopParams(neighbours=12)
    rows = select(served, centroids, params)
    assert rows.schema == pl.Schema(POP_COLUMNS)
    hashes = world["meta"]["hash"].to_numpy()
    kept = dict(zip(rows["hash"].to_list(), rows["centroid"].to_list(), strict=True))
    for c in range(CLUSTERS):
        for j in range(4):  # the planted rows meeting every filter: found, under their own concept
            assert kept[int(hashes[planted[(c, j)]])] == c
        for j in (4, 5, 6):  # too small, watermarked, low aesthetic score: not there
            assert int(hashes[planted[(c, j)]]) not in kept
    assert rows["hash"].n_unique() == rows.height  # row 7 repeats row 0's hash: one row kept
    assert kept == brute_selection(world, centroids, params)
    assert soundness_problems(rows, params, CLUSTERS) == []
    assert completeness_problems(served, centroids, rows, params, np.arange(CLUSTERS)) == []
    counts = funnel(served, centroids, params)
    assert counts["pairs"] == 12 * CLUSTERS
    assert counts["dropped_by_size"] >= CLUSTERS and counts["dropped_by_watermark"] >= CLUSTERS


def test_a_shared_hash_goes_to_the_nearest_centroid(world):
    served = world["served"]
    # Two centroids near the same planted cluster: a row near both is kept once, under the nearer one.
    c0 = world["centres"][0]
    twin = unit(c0 + 0.2 * unit(np.random.default_rng(5).normal(size=DIM)))
    centroids = np.stack([twin, c0])
    params = PopParams(neighbours=10, guidance_score=None)
    rows = select(served, centroids, params)
    vectors = world["vectors"]
    ids = {h: i for i, h in enumerate(world["meta"]["hash"].to_list())}
    for h, c in zip(rows["hash"].to_list(), rows["centroid"].to_list(), strict=True):
        sims = vectors[ids[h]] @ centroids.T
        assert c == int(np.argmax(sims)) or abs(sims[0] - sims[1]) < 1e-5
    assert completeness_problems(served, centroids, rows, params, np.arange(2)) == []


def test_the_checks_fail_on_a_broken_selection(world):
    served, centroids = world["served"], world["centres"]
    params = PopParams(neighbours=12)
    rows = select(served, centroids, params)
    # A row that breaks the size filter, slipped in: soundness names it.
    broken = pl.concat(
        [rows, rows.head(1).with_columns(pl.lit(700.0).alias("HEIGHT"), pl.lit(123, dtype=pl.Int64).alias("hash"))]
    )
    problems = soundness_problems(broken, params, CLUSTERS)
    assert problems == ["hash 123 (centroid 0): shortest side of 1024.0x700.0 < 768"]
    assert any("appears 2 times" in p for p in soundness_problems(pl.concat([rows, rows.head(1)]), params, CLUSTERS))
    # A row that meets the rule, dropped: the recount names it.
    missing = rows.filter(pl.col("centroid") == 2).row(0, named=True)["hash"]
    problems = completeness_problems(served, centroids, rows.filter(pl.col("hash") != missing), params, np.arange(6))
    assert problems == [f"centroid 2: hash {missing} meets every filter but is missing"]
    # A filter loosened when selecting (min_side 0) is caught by the checks of the configured rule.
    loose = select(served, centroids, PopParams(neighbours=12, min_side=0))
    assert any("shortest side" in p for p in soundness_problems(loose, params, CLUSTERS))


def test_bad_settings_and_writing(world, tmp_path):
    with pytest.raises(BadInputError, match="aesthetic_column 'score'"):
        select(world["served"], world["centres"], PopParams(aesthetic_column="score"))
    with pytest.raises(BadInputError, match="centroids are \\(2, 5\\), the kNN index is 32-d"):
        select(world["served"], np.ones((2, 5), dtype=np.float32), PopParams())
    rows = select(world["served"], world["centres"], PopParams(neighbours=12))
    files = write_selection(rows, tmp_path / "laion_pop", {"rule": PopParams().to_dict()}, part_rows=10)
    assert len(files) == -(-rows.height // 10)
    assert pl.concat([pl.read_parquet(f) for f in files]).equals(rows)
    empty = write_selection(rows.head(0), tmp_path / "empty", {}, part_rows=10)
    assert len(empty) == 1 and pl.read_parquet(empty[0]).schema == rows.schema


def test_a_filter_column_the_index_never_filled_is_an_error_not_an_empty_selection(world, tmp_path):
    # A release whose tags have no pwatermark at all (no watermark head, no safety table with it).
    rng = np.random.default_rng(2)
    v = unit(rng.normal(size=(50, DIM)))
    frame = world["meta"].head(50).drop("pwatermark")
    write_part(tmp_path, "00000", frame)
    shards = [ShardVectors("00000", v.astype(np.float16))]
    info = build_index(shards, tmp_path, IndexParams("flat"))
    served = ServedIndex("bare", load_index(tmp_path, info), info, shards, Catalog(tmp_path, info), world["ratings"])
    with pytest.raises(BadInputError, match="laion_pop: pwatermark is null for all 30 neighbours found"):
        select(served, world["centres"][:3], PopParams(neighbours=10))


def test_concepts_behind_an_fsspec_url_train_the_same_centroids(world):
    import io

    import fsspec

    fs = fsspec.filesystem("memory")
    local = sorted((world["concepts"] / "img_emb").glob("img_emb_*.npy"))
    for path in local:
        buffer = io.BytesIO()
        np.save(buffer, np.load(path))
        fs.pipe(f"/pop-concepts/img_emb/{path.name}", buffer.getvalue())
    remote = read_concepts("memory://pop-concepts", DIM)
    assert remote.rows == 40 * CLUSTERS and [f.sha256 for f in remote.files] == [
        f.sha256 for f in read_concepts(world["concepts"], DIM).files
    ]
    params = KmeansParams(k=CLUSTERS, niter=10, seed=1, max_points_per_centroid=20)  # a sample: rows read by index
    here = train_centroids(read_concepts(world["concepts"], DIM), params)
    there = train_centroids(remote, params)
    np.testing.assert_array_equal(here.vectors, there.vectors)
    assert here.sizes.tolist() == there.sizes.tolist()
