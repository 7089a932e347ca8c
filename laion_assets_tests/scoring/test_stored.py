import numpy as np
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import V1_WEIGHTS, V2_RELU_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.stored import score_array, score_file


def unit(n, d=768, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_one_pass_equals_each_predictor_alone():
    predictors = {
        "aesthetic": load_predictor(V1_WEIGHTS),
        "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS),
        "relu": load_predictor(V2_RELU_WEIGHTS),
    }
    emb = unit(3000)
    out = score_array(emb, predictors)
    for name, predictor in predictors.items():
        assert out[name].dtype == np.float32 and out[name].shape == (3000,)
        np.testing.assert_allclose(out[name], predictor.score(emb), atol=1e-5, rtol=0)


def test_score_file_reads_npy_and_checks_width(tmp_path):
    path = tmp_path / "img_emb_0.npy"
    np.save(path, unit(10))
    v1 = load_predictor(V1_WEIGHTS)
    np.testing.assert_allclose(score_file(path, {"aesthetic": v1})["aesthetic"], v1.score(np.load(path)), atol=1e-6)
    narrow = tmp_path / "img_emb_1.npy"
    np.save(narrow, unit(10, d=512))
    with pytest.raises(BadInputError, match=r"img_emb_1\.npy: embedding width 512 does not fit predictor 'aesthetic'"):
        score_file(narrow, {"aesthetic": v1})
