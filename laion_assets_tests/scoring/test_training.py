import sqlite3

import numpy as np
import polars as pl
import pytest
import torch

from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import NSFW_L14_WEIGHTS, V1_WEIGHTS, V2_WEIGHTS, resolve
from laion_assets.release.rebuild import build_shards
from laion_assets.scoring.active import activate, read_active, write_active
from laion_assets.scoring.predictors import V2_MLP_LINEAR, detect_kind, load_for_column, load_predictor
from laion_assets.scoring.rescoring import CURRENT, shard_states
from laion_assets.scoring.training import (
    RatingsTable,
    TrainConfig,
    ratings_from_parquet,
    ratings_from_sac,
    sac_mean_ratings,
    save_predictor,
    spearman,
    split,
    train_v2,
)
from laion_assets.sources.embeddings import open_embeddings
from laion_assets.sources.layout import discover_parts

DIM = 32  # the V2 MLP accepts any input width; a narrow one keeps the tests fast on 2 cores
TRUE_BIAS = 5.0


def linear_ground_truth(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal(DIM)
    w *= 4.0 / np.linalg.norm(w)
    return x.astype(np.float32), (x @ w + TRUE_BIAS).astype(np.float32), w


def test_training_recovers_a_linear_ground_truth(tmp_path):
    x, y, w = linear_ground_truth(2000)
    result = train_v2(RatingsTable(x, y, "synthetic"), TrainConfig(epochs=5, threads=1))
    assert (result.train_rows, result.val_rows) == (1900, 100)  # the last 5% validate, in table order
    np.testing.assert_array_equal(result.val_true, y[1900:])
    # The ratings' variance is about 0.5; the recovered map must explain all but a sliver of it.
    assert np.var(y) > 0.4
    assert result.val_mse < 0.05
    assert result.val_mae < 0.2
    assert result.spearman > 0.97
    assert result.best_epoch == int(np.argmin([h["val_mse"] for h in result.history]))
    path = save_predictor(result.state_dict, tmp_path / "trained.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert detect_kind(state) == V2_MLP_LINEAR
    predictor = load_predictor(path, dim=DIM)  # collapses to the affine map it learned
    np.testing.assert_allclose(predictor.score(x[1900:]), result.val_pred, atol=1e-4)
    np.testing.assert_allclose(predictor.bias, TRUE_BIAS, atol=0.1)
    cosine = predictor.weight @ w / np.linalg.norm(predictor.weight) / np.linalg.norm(w)
    assert cosine > 0.98


def test_training_is_deterministic_for_a_seed():
    x, y, _ = linear_ground_truth(600, seed=1)
    a = train_v2(RatingsTable(x, y, "s"), TrainConfig(epochs=1, seed=3, threads=1))
    b = train_v2(RatingsTable(x, y, "s"), TrainConfig(epochs=1, seed=3, threads=1))
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def build_sac(db, n_images, seed=0):
    """SAC's schema (generations -> images -> paths, ratings per rater) with ratings around a linear truth."""
    x, truth, _ = linear_ground_truth(n_images, seed)
    rng = np.random.default_rng(seed + 1)
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE generations (id INTEGER PRIMARY KEY, sid INTEGER, method TEXT, prompt TEXT, verified INTEGER);
        CREATE TABLE images (id INTEGER PRIMARY KEY, gid INTEGER REFERENCES generations(id), idx INTEGER);
        CREATE TABLE paths (iid INTEGER PRIMARY KEY REFERENCES images(id), path TEXT);
        CREATE TABLE ratings (sid INTEGER, iid INTEGER REFERENCES images(id), rating INTEGER, verified INTEGER,
                              PRIMARY KEY (sid, iid));
        CREATE TABLE upscales (id INTEGER PRIMARY KEY, iid INTEGER, factor INTEGER);
        """
    )
    expected = {}
    for i in range(n_images):
        iid = 100 + i
        conn.execute("INSERT INTO generations VALUES (?, 1, 'cc12m_diffusion', ?, 1)", (i, f"prompt {i}"))
        conn.execute("INSERT INTO images VALUES (?, ?, 0)", (iid, i))
        conn.execute("INSERT INTO paths VALUES (?, ?)", (iid, f"generations/{i}/img_0.png"))
        votes = np.clip(np.round(truth[i] + rng.normal(0, 0.5, rng.integers(1, 5))), 1, 10).astype(int)
        for sid, vote in enumerate(votes):
            conn.execute("INSERT INTO ratings VALUES (?, ?, ?, 1)", (sid, iid, int(vote)))
        expected[f"generations/{i}/img_0.png"] = votes.mean()
    # An image nobody rated, and a generation without images, are not part of the table.
    conn.execute("INSERT INTO generations VALUES (9999, 1, 'm', 'unrated', 1)")
    conn.execute("INSERT INTO images VALUES (9999, 9999, 0)")
    conn.execute("INSERT INTO paths VALUES (9999, 'generations/unrated.png')")
    conn.commit()
    conn.close()
    return x, expected


def write_embeddings(folder, x, paths):
    """Embeddings stored clip-retrieval style: an npy row-aligned with a parquet of image paths (shuffled order)."""
    order = np.random.default_rng(5).permutation(len(paths))
    np.save(folder / "img_emb_0.npy", x[order].astype(np.float16))
    pl.DataFrame({"image_path": [paths[i] for i in order]}).write_parquet(folder / "metadata_0.parquet")
    return folder / "img_emb_0.npy", folder / "metadata_0.parquet"


def test_training_from_a_sac_sqlite_file(tmp_path):
    db = tmp_path / "sac_public.sqlite"
    x, expected = build_sac(db, 400)
    paths = list(expected)
    means = sac_mean_ratings(db)
    assert means.columns == ["iid", "path", "rating", "n_ratings"]
    assert dict(zip(means["path"], means["rating"], strict=True)) == pytest.approx(expected)
    npy, keys = write_embeddings(tmp_path, x, paths)
    table = ratings_from_sac(db, npy, keys, key_column="image_path")
    assert len(table) == 400
    # Rows are joined by path: row i is image 100+i with its own embedding (float16-rounded) and mean rating.
    np.testing.assert_allclose(table.embeddings, x, atol=2e-3)
    np.testing.assert_allclose(table.ratings, [expected[p] for p in paths], rtol=1e-6)
    result = train_v2(table, TrainConfig(epochs=30, batch_size=32, threads=1))  # 380 training rows: smaller batches
    assert result.val_rows == 20
    # Better than always predicting the training mean (the noise of few integer votes bounds how much better).
    baseline = float(np.mean((table.ratings[-20:] - table.ratings[:-20].mean()) ** 2))
    assert result.val_mse < 0.6 * baseline, (result.val_mse, baseline)
    assert result.spearman > 0.5
    predictor = load_predictor(save_predictor(result.state_dict, tmp_path / "sac.pth"), dim=DIM)
    assert predictor.identity.kind == V2_MLP_LINEAR


def test_sac_errors_name_the_file(tmp_path):
    db = tmp_path / "sac.sqlite"
    x, expected = build_sac(db, 10)
    npy, keys = write_embeddings(tmp_path, x[:9], list(expected)[:9])
    with pytest.raises(BadInputError, match=r"1 rated image\(s\) have no embedding, e.g. 'generations/9/img_0.png'"):
        ratings_from_sac(db, npy, keys, key_column="image_path")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    with pytest.raises(BadInputError, match=r"other\.sqlite: not a SAC database"):
        sac_mean_ratings(other)
    with pytest.raises(BadInputError, match="SAC ratings database not found"):
        sac_mean_ratings(tmp_path / "absent.sqlite")


def test_ratings_from_parquet_and_its_errors(tmp_path):
    x, y, _ = linear_ground_truth(50)
    good = tmp_path / "ava.parquet"
    pl.DataFrame({"embedding": x.tolist(), "rating": y}).write_parquet(good)
    table = ratings_from_parquet(good)
    np.testing.assert_allclose(table.ratings, y)
    np.testing.assert_allclose(np.linalg.norm(table.embeddings, axis=1), 1, atol=1e-5)
    holes = tmp_path / "holes.parquet"
    pl.DataFrame({"embedding": x.tolist(), "rating": [*y[:7], None, *y[8:]]}).write_parquet(holes)
    with pytest.raises(BadInputError, match=r"holes\.parquet: row 7 has no 'rating'"):
        ratings_from_parquet(holes)
    with pytest.raises(BadInputError, match=r"ava\.parquet: cannot read columns 'emb', 'rating'"):
        ratings_from_parquet(good, embedding_column="emb")


def test_metrics_and_split():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 45.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3.0]), np.array([3, 2, 1.0])) == pytest.approx(-1.0)
    assert split(1000, 0.05) == 950 and split(10, 0.05) == 9 and split(2, 0.05) == 1
    with pytest.raises(BadInputError, match="val_fraction"):
        split(10, 0)


def test_retraining_to_identical_tensors_keeps_identity_file_and_shards_current(small_sample_session, tmp_path):
    parts = discover_parts(small_sample_session)
    emb = np.asarray(open_embeddings(parts[0].embeddings), dtype=np.float32)[:300]
    table = RatingsTable(emb, 0.5 * load_predictor(V2_WEIGHTS).score(emb) + 3.0, "ratings")
    recipe = TrainConfig(epochs=2, batch_size=64, seed=11, threads=1)
    # Two runs, two folders, two names: the same tensors must give the same bytes and the same identity.
    first = save_predictor(train_v2(table, recipe).state_dict, tmp_path / "run1" / "trained.pth")
    second = save_predictor(train_v2(table, recipe).state_dict, tmp_path / "run2" / "retrained.pth")
    assert first.read_bytes() == second.read_bytes()
    identity = load_for_column(first, "AESTHETIC_SCORE").identity
    assert identity.kind == V2_MLP_LINEAR and load_for_column(second, "AESTHETIC_SCORE").identity == identity
    # Shards scored with the first file stay current when the second becomes the active V2.
    layout = OutputLayout(tmp_path / "out")
    build_shards(parts, layout, {"aesthetic": V1_WEIGHTS, "AESTHETIC_SCORE": first, "punsafe": NSFW_L14_WEIGHTS}, 768)
    config = write_active({**read_active(), "AESTHETIC_SCORE": str(first)}, tmp_path / "predictors.yaml")
    activate("AESTHETIC_SCORE", str(second), config)
    active = {column: load_for_column(resolve(path), column).identity for column, path in read_active(config).items()}
    assert active["AESTHETIC_SCORE"] == identity
    states = shard_states([p.key for p in parts], layout, active)
    assert [(s.key, s.status) for s in states] == [(p.key, CURRENT) for p in parts]
