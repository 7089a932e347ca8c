"""LAION's aesthetic predictors: V1 (linear), V2 (MLP, linear or ReLU) and simulacra's linear heads.

Every predictor is identified by its kind plus the sha256 of its weights file; that identity is recorded
beside every score it produces. Weights are loaded with ``map_location="cpu", weights_only=True`` (the V2
files were saved from CUDA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from laion_assets.errors import BadInputError
from laion_assets.locations import file_sha256

CLIP_L14_DIM = 768
V1_LINEAR = "v1-linear"
V2_MLP_LINEAR = "v2-mlp-linear"
V2_MLP_RELU = "v2-mlp-relu"
SIMULACRA_LINEAR = "simulacra-linear"

# improved-aesthetic-predictor's MLP: Linear(d,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout
# Linear(64,16) Linear(16,1); the reluMSE files put a ReLU after each of the first four Linear layers.
_V2_WIDTHS = (1024, 128, 64, 16, 1)
_V2_LINEAR_KEYS = (0, 2, 4, 6, 7)
_V2_RELU_KEYS = (0, 3, 6, 9, 11)


@dataclass(frozen=True)
class PredictorIdentity:
    """Which predictor made a score: its kind and the sha256 of its weights file."""

    kind: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.kind}@sha256:{self.sha256}"

    @classmethod
    def parse(cls, text: str) -> PredictorIdentity:
        """Parse the ``kind@sha256:hex`` form written by ``str()``."""
        kind, _, digest = text.partition("@sha256:")
        if not kind or len(digest) != 64:
            raise ValueError(f"not a predictor identity: {text!r}")
        return cls(kind, digest)


@dataclass(frozen=True)
class LinearPredictor:
    """A predictor that is one affine map ``x @ weight + bias`` on the float32 embedding."""

    identity: PredictorIdentity
    weight: np.ndarray  # (d,) float32
    bias: float

    @property
    def dim(self) -> int:
        """Embedding width the predictor expects."""
        return int(self.weight.shape[0])

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Score a (n, d) batch; returns float32 (n,)."""
        x = np.asarray(embeddings, dtype=np.float32)
        return (x @ self.weight + np.float32(self.bias)).astype(np.float32)


class MLPPredictor:
    """A predictor evaluated as a torch module in eval mode (the ReLU variant of V2)."""

    def __init__(self, identity: PredictorIdentity, module: nn.Module, dim: int) -> None:
        self.identity = identity
        self.module = module.eval()
        self.dim = dim

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Score a (n, d) batch; returns float32 (n,)."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
            return self.module(x)[:, 0].numpy().astype(np.float32)


Predictor = LinearPredictor | MLPPredictor


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BadInputError(f"{path}: predictor weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise BadInputError(f"{path}: cannot load as a torch state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{path}: expected a state_dict of tensors, got {type(state).__name__}")
    return state


def _expect_shape(path: Path, state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> None:
    actual = tuple(state[key].shape)
    if actual != shape:
        raise BadInputError(f"{path}: {key} has shape {actual}, expected {shape}")


def detect_kind(state: dict[str, torch.Tensor]) -> str | None:
    """Return the predictor kind a state_dict's keys fit, or None."""
    keys = set(state)
    if keys == {"weight", "bias"}:
        return V1_LINEAR
    if keys == {"linear.weight", "linear.bias"}:
        return SIMULACRA_LINEAR
    for kind, idx in ((V2_MLP_LINEAR, _V2_LINEAR_KEYS), (V2_MLP_RELU, _V2_RELU_KEYS)):
        if keys == {f"layers.{i}.{p}" for i in idx for p in ("weight", "bias")}:
            return kind
    return None


def v2_module(kind: str, dim: int = CLIP_L14_DIM) -> nn.Sequential:
    """Build LAION's V2 MLP exactly as improved-aesthetic-predictor defines it."""
    w = _V2_WIDTHS
    if kind not in (V2_MLP_LINEAR, V2_MLP_RELU):
        raise ValueError(f"not a V2 kind: {kind!r}")
    if kind == V2_MLP_LINEAR:
        return nn.Sequential(
            nn.Linear(dim, w[0]), nn.Dropout(0.2), nn.Linear(w[0], w[1]), nn.Dropout(0.2),
            nn.Linear(w[1], w[2]), nn.Dropout(0.1), nn.Linear(w[2], w[3]), nn.Linear(w[3], w[4]),
        )  # fmt: skip
    return nn.Sequential(
        nn.Linear(dim, w[0]), nn.ReLU(), nn.Dropout(0.2), nn.Linear(w[0], w[1]), nn.ReLU(),
        nn.Dropout(0.2), nn.Linear(w[1], w[2]), nn.ReLU(), nn.Dropout(0.1), nn.Linear(w[2], w[3]),
        nn.ReLU(), nn.Linear(w[3], w[4]),
    )  # fmt: skip


def _strip_layers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("layers."): v for k, v in state.items()}


def load_predictor(path: str | Path, dim: int = CLIP_L14_DIM, kind: str | None = None) -> Predictor:
    """Load a V1, V2 (linear or ReLU) or simulacra predictor, checking every shape against ``dim``."""
    path = Path(path)
    state = _load_state_dict(path)
    detected = detect_kind(state)
    if detected is None:
        raise BadInputError(
            f"{path}: keys {sorted(state)} fit no known predictor "
            "(V1: weight/bias; V2: layers.{0,2,4,6,7} or layers.{0,3,6,9,11}; simulacra: linear.*)"
        )
    if kind is not None and kind != detected:
        raise BadInputError(f"{path}: configured as {kind} but its keys are those of {detected}")
    identity = PredictorIdentity(detected, file_sha256(path))
    if detected in (V1_LINEAR, SIMULACRA_LINEAR):
        prefix = "linear." if detected == SIMULACRA_LINEAR else ""
        _expect_shape(path, state, f"{prefix}weight", (1, dim))
        _expect_shape(path, state, f"{prefix}bias", (1,))
        weight = state[f"{prefix}weight"].double().numpy()[0]
        bias = float(state[f"{prefix}bias"].double()[0])
        if detected == SIMULACRA_LINEAR:
            # simulacra's forward is linear(normalize(x) * sqrt(d)); fold the scale into the weight.
            weight = weight * math.sqrt(dim)
        return LinearPredictor(identity, weight.astype(np.float32), bias)
    idx = _V2_LINEAR_KEYS if detected == V2_MLP_LINEAR else _V2_RELU_KEYS
    fan_in = dim
    for i, width in zip(idx, _V2_WIDTHS, strict=True):
        _expect_shape(path, state, f"layers.{i}.weight", (width, fan_in))
        _expect_shape(path, state, f"layers.{i}.bias", (width,))
        fan_in = width
    if detected == V2_MLP_LINEAR:
        # No activations: in eval mode the MLP is one affine map; collapse it in float64 once.
        weight = np.eye(dim)
        bias = np.zeros(dim)
        for i in idx:
            w = state[f"layers.{i}.weight"].double().numpy()
            weight, bias = w @ weight, w @ bias + state[f"layers.{i}.bias"].double().numpy()
        return LinearPredictor(identity, weight[0].astype(np.float32), float(bias[0]))
    module = v2_module(detected, dim)
    module.load_state_dict(_strip_layers(state))
    return MLPPredictor(identity, module, dim)
