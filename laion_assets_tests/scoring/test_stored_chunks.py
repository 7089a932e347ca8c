import numpy as np

from laion_assets.core.paths import V1_WEIGHTS, V2_RELU_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.stored import SCORE_CHUNK_ROWS, float32_chunks, score_array, score_file


def unit(n, d=768, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_chunks_are_the_exact_float32_values_across_chunk_edges(tmp_path):
    emb = unit(2 * SCORE_CHUNK_ROWS + 5)
    emb[3, :4] = [np.float16(6e-8), np.float16(-65504), np.float16(1e-5), 0]  # subnormal, extreme, tiny
    path = tmp_path / "e.npy"
    np.save(path, emb)
    mapped = np.load(path, mmap_mode="r")
    got = np.concatenate([chunk.copy() for _, chunk in float32_chunks(mapped)])
    np.testing.assert_array_equal(got, emb.astype(np.float32))
    starts = [start for start, _ in float32_chunks(mapped)]
    assert starts == [0, SCORE_CHUNK_ROWS, 2 * SCORE_CHUNK_ROWS]


def test_linear_heads_match_their_own_score_to_float32_rounding(tmp_path):
    emb = unit(SCORE_CHUNK_ROWS + 123, seed=1)
    path = tmp_path / "e.npy"
    np.save(path, emb)
    predictors = {
        "aesthetic": load_predictor(V1_WEIGHTS),
        "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS),
        "relu": load_predictor(V2_RELU_WEIGHTS),
    }
    out = score_file(path, predictors)
    for name in ("aesthetic", "AESTHETIC_SCORE"):
        # Same float32 x @ w + b; BLAS may sum a row in another order (an ulp at scores of about 5 is 5e-7).
        np.testing.assert_allclose(out[name], predictors[name].score(emb.astype(np.float32)), atol=2e-6, rtol=0)
    np.testing.assert_allclose(out["relu"], predictors["relu"].score(emb), atol=1e-5, rtol=0)
    as32 = score_array(emb.astype(np.float32), predictors)
    np.testing.assert_allclose(as32["aesthetic"], out["aesthetic"], atol=2e-6, rtol=0)
    assert score_array(np.empty((0, 768), np.float16), predictors)["aesthetic"].shape == (0,)
