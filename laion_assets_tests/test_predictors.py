import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from laion_assets.errors import BadInputError
from laion_assets.predictors import (
    SIMULACRA_LINEAR,
    V1_LINEAR,
    V2_MLP_LINEAR,
    V2_MLP_RELU,
    LinearPredictor,
    MLPPredictor,
    PredictorIdentity,
    load_predictor,
)

V1 = "aesthetic-predictor/sa_0_4_vit_l_14_linear.pth"
V2 = "improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth"
V2_RELU = "improved-aesthetic-predictor/ava+logos-l14-reluMSE.pth"
SIMULACRA = "simulacra-aesthetic-models/models/sac_public_2022_06_29_vit_l_14_linear.pth"


def unit_embeddings(n: int, d: int = 768, seed: int = 0) -> np.ndarray:
    """Unit vectors stored as float16, as clip-retrieval stores them."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def torch_reference(path, module: nn.Module, emb: np.ndarray) -> np.ndarray:
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(emb.astype(np.float32))).numpy()[:, 0]


class LaionMLP(nn.Module):
    """improved-aesthetic-predictor's MLP as written in its simple_inference.py (linear variant)."""

    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        if relu:
            self.layers = nn.Sequential(
                nn.Linear(768, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 128), nn.ReLU(), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1),
            )  # fmt: skip
        else:
            self.layers = nn.Sequential(
                nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_v1_equals_torch_linear(shared_reference):
    emb = unit_embeddings(2000)
    pred = load_predictor(shared_reference / V1)
    assert isinstance(pred, LinearPredictor) and pred.identity.kind == V1_LINEAR
    expected = torch_reference(shared_reference / V1, nn.Linear(768, 1), emb)
    got = pred.score(emb)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.5  # the comparison covers a real spread of scores


def test_v2_linear_equals_torch_mlp(shared_reference):
    emb = unit_embeddings(2000, seed=1)
    pred = load_predictor(shared_reference / V2)
    assert pred.identity.kind == V2_MLP_LINEAR
    expected = torch_reference(shared_reference / V2, LaionMLP(), emb)
    np.testing.assert_allclose(pred.score(emb), expected, atol=1e-5, rtol=0)


def test_v2_relu_equals_torch_mlp(shared_reference):
    emb = unit_embeddings(500, seed=2)
    pred = load_predictor(shared_reference / V2_RELU)
    assert isinstance(pred, MLPPredictor) and pred.identity.kind == V2_MLP_RELU
    expected = torch_reference(shared_reference / V2_RELU, LaionMLP(relu=True), emb)
    np.testing.assert_allclose(pred.score(emb), expected, atol=1e-5, rtol=0)


def test_simulacra_scales_by_sqrt_d(shared_reference):
    emb = unit_embeddings(100, seed=3).astype(np.float32)
    pred = load_predictor(shared_reference / SIMULACRA)
    assert pred.identity.kind == SIMULACRA_LINEAR
    state = torch.load(shared_reference / SIMULACRA, map_location="cpu", weights_only=True)
    w, b = state["linear.weight"].numpy()[0], state["linear.bias"].numpy()[0]
    np.testing.assert_allclose(pred.score(emb), (emb * math.sqrt(768)) @ w + b, atol=1e-4)


def test_identity_is_kind_plus_file_sha256(shared_reference):
    pred = load_predictor(shared_reference / V2)
    assert pred.identity.sha256 == "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
    assert pred.identity.sha256 == hashlib.sha256((shared_reference / V2).read_bytes()).hexdigest()
    assert PredictorIdentity.parse(str(pred.identity)) == pred.identity


def test_shipped_weights_are_the_reference_files(shared_reference):
    from laion_assets.paths import V1_WEIGHTS, V2_RELU_WEIGHTS, V2_WEIGHTS

    for shipped, ref in ((V1_WEIGHTS, V1), (V2_WEIGHTS, V2), (V2_RELU_WEIGHTS, V2_RELU)):
        assert shipped.read_bytes() == (shared_reference / ref).read_bytes()


def test_wrong_shape_names_file_and_tensor(tmp_path):
    path = tmp_path / "v1_b32.pth"
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, path)
    with pytest.raises(BadInputError, match=r"v1_b32\.pth: weight has shape \(1, 512\), expected \(1, 768\)"):
        load_predictor(path)


def test_wrong_v2_layer_shape_is_named(tmp_path, shared_reference):
    state = torch.load(shared_reference / V2, map_location="cpu", weights_only=True)
    state["layers.4.weight"] = torch.zeros(64, 100)
    path = tmp_path / "broken_v2.pth"
    torch.save(state, path)
    with pytest.raises(BadInputError, match=r"broken_v2\.pth: layers\.4\.weight has shape \(64, 100\)"):
        load_predictor(path)


def test_unknown_keys_and_garbage_are_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(1, 768)}, path)
    with pytest.raises(BadInputError, match="other.pth: keys"):
        load_predictor(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pth: cannot load"):
        load_predictor(junk)
    with pytest.raises(BadInputError, match="missing.pth: predictor weights file not found"):
        load_predictor(tmp_path / "missing.pth")
