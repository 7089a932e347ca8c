"""LAION's heads, checked on the real weights that ship in data/models/ (so these run on every clone)."""

import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import MODELS_DIR, V1_WEIGHTS, V2_RELU_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.predictors import (
    SIMULACRA_LINEAR,
    V1_LINEAR,
    V2_MLP_LINEAR,
    V2_MLP_RELU,
    LinearPredictor,
    MLPPredictor,
    PredictorIdentity,
    inspect_weights,
    load_for_column,
    load_predictor,
    weights_sha256,
)
from laion_assets_tests.shipped_sources import listed_identities, listed_sha256

V1 = V1_WEIGHTS
V2 = V2_WEIGHTS
V2_RELU = V2_RELU_WEIGHTS
SIMULACRA = MODELS_DIR / "sac_public_2022_06_29_vit_l_14_linear.pth"
SOURCES = MODELS_DIR / "SOURCES.md"


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


def test_v1_equals_torch_linear():
    emb = unit_embeddings(2000)
    pred = load_predictor(V1)
    assert isinstance(pred, LinearPredictor) and pred.identity.kind == V1_LINEAR
    expected = torch_reference(V1, nn.Linear(768, 1), emb)
    got = pred.score(emb)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.5  # the comparison covers a real spread of scores


def test_v2_linear_equals_torch_mlp():
    emb = unit_embeddings(2000, seed=1)
    pred = load_predictor(V2)
    assert pred.identity.kind == V2_MLP_LINEAR
    expected = torch_reference(V2, LaionMLP(), emb)
    np.testing.assert_allclose(pred.score(emb), expected, atol=1e-5, rtol=0)


def test_v2_relu_equals_torch_mlp():
    emb = unit_embeddings(500, seed=2)
    pred = load_predictor(V2_RELU)
    assert isinstance(pred, MLPPredictor) and pred.identity.kind == V2_MLP_RELU
    expected = torch_reference(V2_RELU, LaionMLP(relu=True), emb)
    np.testing.assert_allclose(pred.score(emb), expected, atol=1e-5, rtol=0)


def test_simulacra_scales_by_sqrt_d():
    emb = unit_embeddings(100, seed=3).astype(np.float32)
    pred = load_predictor(SIMULACRA)
    assert pred.identity.kind == SIMULACRA_LINEAR
    state = torch.load(SIMULACRA, map_location="cpu", weights_only=True)
    w, b = state["linear.weight"].numpy()[0], state["linear.bias"].numpy()[0]
    np.testing.assert_allclose(pred.score(emb), (emb * math.sqrt(768)) @ w + b, atol=1e-4)


def test_shipped_weights_are_the_files_sources_md_lists():
    listed = listed_sha256(SOURCES)
    shipped = sorted(p.name for p in MODELS_DIR.glob("*.pth"))
    assert sorted(listed) == shipped  # every shipped head is listed with its origin, and nothing listed is missing
    for name, digest in listed.items():
        assert hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest() == digest, name
    for path in (V1, V2, V2_RELU):
        assert path.name in listed


def canonical_digest(state: dict[str, torch.Tensor]) -> str:
    """The encoding the module docstring documents, written independently with numpy."""
    digest = hashlib.sha256()
    for key in sorted(state):
        array = state[key].numpy()
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header = json.dumps([key, str(array.dtype), list(array.shape), len(data)])
        digest.update(header.encode() + b"\n" + data)
    return digest.hexdigest()


def test_identity_is_kind_plus_canonical_tensor_digest(tmp_path):
    pred = load_predictor(V2)
    state = torch.load(V2, map_location="cpu", weights_only=True)
    assert pred.identity == PredictorIdentity(V2_MLP_LINEAR, canonical_digest(state))
    assert pred.identity.sha256 != hashlib.sha256(V2.read_bytes()).hexdigest()  # not the file's bytes
    assert PredictorIdentity.parse(str(pred.identity)) == pred.identity
    # SOURCES.md documents each shipped head's identity; they are what loading gives.
    identities = listed_identities(SOURCES)
    assert sorted(identities) == sorted(p.name for p in MODELS_DIR.glob("*.pth"))
    for name, identity in identities.items():
        assert str(load_predictor(MODELS_DIR / name).identity) == identity, name


def test_identity_means_the_tensors_not_the_file(tmp_path):
    state = torch.load(V1, map_location="cpu", weights_only=True)
    # The same tensors in another file (another archive name, key order, a non-contiguous view) keep the identity.
    resaved = tmp_path / "copy_with_other_name.pth"
    transposed = state["weight"].t().contiguous().t()  # same values, column-major strides
    torch.save({"bias": state["bias"].clone(), "weight": transposed}, resaved)
    assert hashlib.sha256(resaved.read_bytes()).hexdigest() != hashlib.sha256(V1.read_bytes()).hexdigest()
    assert load_predictor(resaved).identity == load_predictor(V1).identity
    # One changed value, a changed dtype or a renamed key is another identity.
    nudged = {**state, "bias": state["bias"] + 1e-6}
    assert weights_sha256(nudged) != weights_sha256(state)
    assert weights_sha256({**state, "bias": state["bias"].double()}) != weights_sha256(state)
    assert weights_sha256({"linear.weight": state["weight"], "linear.bias": state["bias"]}) != weights_sha256(state)
    buffer = io.BytesIO()
    torch.save(nudged, buffer)
    (tmp_path / "nudged.pth").write_bytes(buffer.getvalue())
    assert load_predictor(tmp_path / "nudged.pth").identity.sha256 == weights_sha256(nudged)


def test_each_column_takes_its_kind_of_head():
    assert load_for_column(V1, "aesthetic").identity.kind == V1_LINEAR
    assert load_for_column(V2, "AESTHETIC_SCORE").identity.kind == V2_MLP_LINEAR
    assert load_for_column(V2_RELU, "AESTHETIC_SCORE").identity.kind == V2_MLP_RELU
    assert inspect_weights(V1, "aesthetic").problems == ()


@pytest.mark.parametrize(
    ("path", "column", "kind", "accepted"),
    [
        (V2, "aesthetic", V2_MLP_LINEAR, "v1-linear"),
        (V2_RELU, "aesthetic", V2_MLP_RELU, "v1-linear"),
        (V1, "AESTHETIC_SCORE", V1_LINEAR, "v2-mlp-linear or v2-mlp-relu"),
        (SIMULACRA, "AESTHETIC_SCORE", SIMULACRA_LINEAR, "v2-mlp-linear or v2-mlp-relu"),
        (SIMULACRA, "aesthetic", SIMULACRA_LINEAR, "v1-linear"),
    ],
)
def test_a_head_swap_is_refused_unless_forced(path, column, kind, accepted):
    with pytest.raises(BadInputError) as info:
        load_for_column(path, column)
    message = str(info.value)
    assert message.startswith(f"{path}: refused as the predictor of {column!r}: its kind is {kind}, ")
    assert f"but {column!r} takes {accepted}" in message
    assert "`force: true`" in message and f"laion-assets activate {column} {path} --force" in message
    forced = load_for_column(path, column, force=True)
    assert forced.identity == load_predictor(path).identity
    assert inspect_weights(path, column).problems == (f"its kind is {kind}, but {column!r} takes {accepted}",)


def test_nan_or_inf_weights_are_refused_naming_file_and_key(tmp_path):
    state = torch.load(V2, map_location="cpu", weights_only=True)
    state["layers.4.weight"][3, 7] = float("nan")
    state["layers.7.bias"][0] = float("inf")
    path = tmp_path / "diverged_v2.pth"
    torch.save(state, path)
    problems = (
        "tensor layers.4.weight holds 1 NaN/Inf value(s) of 8192; tensor layers.7.bias holds 1 NaN/Inf value(s) of 1"
    )
    with pytest.raises(BadInputError, match="force") as info:
        load_for_column(path, "AESTHETIC_SCORE")
    assert str(info.value).startswith(f"{path}: refused as the predictor of 'AESTHETIC_SCORE': {problems}. ")
    with pytest.raises(BadInputError) as info:
        load_predictor(path)
    assert str(info.value) == f"{path}: refused: {problems}"
    forced = load_for_column(path, "AESTHETIC_SCORE", force=True)
    assert np.isnan(forced.score(unit_embeddings(4))).all()  # what forcing it means: the scores are not numbers


def test_wrong_shape_names_file_and_tensor(tmp_path):
    path = tmp_path / "v1_b32.pth"
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, path)
    with pytest.raises(BadInputError, match=r"v1_b32\.pth: weight has shape \(1, 512\), expected \(1, 768\)"):
        load_predictor(path)


def test_wrong_v2_layer_shape_is_named(tmp_path):
    state = torch.load(V2, map_location="cpu", weights_only=True)
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


def test_a_checkpoint_that_wraps_its_weights_says_what_it_holds(tmp_path):
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": torch.load(V1_WEIGHTS, weights_only=True), "epoch": 3}, checkpoint)
    with pytest.raises(BadInputError) as info:
        load_predictor(checkpoint)
    assert str(info.value) == (
        f"{checkpoint}: expected a state_dict of tensors, got a dict with keys ['epoch', 'state_dict']: weights "
        "nested under 'state_dict'? save that dict itself (torch.save(checkpoint['state_dict'], PATH))"
    )
    mixed = tmp_path / "mixed.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1), "note": "v1"}, mixed)
    with pytest.raises(BadInputError, match=r"keys \['bias', 'note', 'weight'\], of which \['note \(str\)'\] are not"):
        load_predictor(mixed)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(BadInputError, match="list.pth: expected a state_dict of tensors, got list"):
        load_predictor(listed)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_weights_are_refused(tmp_path):
    sparse = tmp_path / "sparse.pth"
    torch.save({"weight": torch.zeros(1, 768).to_sparse(), "bias": torch.zeros(1)}, sparse)
    with pytest.raises(BadInputError, match=r"sparse\.pth: tensors \['weight'\] are not dense"):
        load_predictor(sparse)
