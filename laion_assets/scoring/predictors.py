"""LAION's aesthetic predictors: V1 (linear), V2 (MLP, linear or ReLU) and simulacra's linear heads.

Weights are loaded with ``map_location="cpu", weights_only=True`` (the V2 files were saved from CUDA).

Identity. Every predictor is identified as ``kind@sha256:<hex>`` (recorded beside every score it produces): the
kind its state_dict's keys fit, and the sha256 of its *tensors* in one canonical encoding, not of the file. So the
same weights saved twice (another file name, another pickle or zip layout, CUDA or CPU storage) keep one identity,
and a retrained predictor with bit-identical tensors does not make any shard stale. The canonical encoding
(:func:`weights_sha256`) is, for each key of the state_dict in sorted (Unicode code point) order:

1. one header line, UTF-8: ``json.dumps([key, dtype, shape, nbytes]) + "\n"`` with ``dtype`` torch's name without
   ``torch.`` (``"float32"``), ``shape`` the list of sizes and ``nbytes`` the byte length of the data that follows;
2. the tensor's elements in C-contiguous (row-major) order, each in little-endian byte order.

The digest is the sha256 of that whole stream. Device, ``requires_grad``, strides and the container do not count.
The weights file's own sha256 stays useful as provenance and is recorded beside the identity in release manifests.

Columns. ``aesthetic`` takes a V1-kind head, ``AESTHETIC_SCORE`` a V2-kind one and ``punsafe`` LAION's CLIP-based
NSFW detector (:data:`COLUMN_KINDS`); a head of another kind, or weights with NaN/Inf, are refused by
:func:`load_for_column` unless forced. NSFW heads are numpy ``.npz`` files (:mod:`laion_assets.scoring.nsfw`, no
torch); every function here takes either kind of file and tells them apart by their content.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.identity import HeadIdentity, weights_sha256
from laion_assets.scoring.nsfw import (
    NSFW_B32,
    NSFW_L14,
    NsfwHead,
    NsfwPredictor,
    load_nsfw,
    looks_like_nsfw_file,
    non_finite_problems,
)

if TYPE_CHECKING:  # torch is imported where it is used: loading the definitions must not pay for it
    import torch
    from torch import nn

CLIP_L14_DIM = 768
V1_LINEAR = "v1-linear"
V2_MLP_LINEAR = "v2-mlp-linear"
V2_MLP_RELU = "v2-mlp-relu"
SIMULACRA_LINEAR = "simulacra-linear"

# The heads each score column accepts: LAION's V1 made ``aesthetic``, its V2 MLP (either variant) made
# ``AESTHETIC_SCORE``. simulacra's heads take a sqrt(d)-scaled input and fit neither column.
COLUMN_KINDS: dict[str, tuple[str, ...]] = {
    "aesthetic": (V1_LINEAR,),
    "AESTHETIC_SCORE": (V2_MLP_LINEAR, V2_MLP_RELU),
    # LAION's CLIP-based NSFW detector: the ViT-L/14 head made LAION-5B's punsafe; the ViT-B/32 one takes 512-d.
    "punsafe": (NSFW_L14, NSFW_B32),
}

# improved-aesthetic-predictor's MLP: Linear(d,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout
# Linear(64,16) Linear(16,1); the reluMSE files put a ReLU after each of the first four Linear layers.
_V2_WIDTHS = (1024, 128, 64, 16, 1)
_V2_LINEAR_KEYS = (0, 2, 4, 6, 7)
_V2_RELU_KEYS = (0, 3, 6, 9, 11)


# One identity for every head (aesthetic, NSFW, watermark): ``kind@sha256:<hex>`` of the canonical tensor encoding.
PredictorIdentity = HeadIdentity


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
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
            return self.module(x)[:, 0].numpy().astype(np.float32)


Predictor = LinearPredictor | MLPPredictor | NsfwPredictor


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise BadInputError(f"{path}: predictor weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise BadInputError(f"{path}: cannot load as a torch state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{path}: expected a state_dict of tensors, got {_what_it_holds(state)}")
    sparse = sorted(k for k, v in state.items() if v.layout != torch.strided)
    if sparse:
        raise BadInputError(f"{path}: tensors {sparse} are not dense; a predictor's weights must be dense tensors")
    return state


def _what_it_holds(loaded: object, shown: int = 10) -> str:
    """Say what a weights file holds instead of a flat state_dict, e.g. a training checkpoint that nests one."""
    import torch

    if not isinstance(loaded, dict):
        return type(loaded).__name__
    keys = sorted(str(k) for k in loaded)
    listed = keys if len(keys) <= shown else [*keys[:shown], f"... {len(keys) - shown} more"]
    nested = sorted(
        str(k)
        for k, v in loaded.items()
        if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor) for t in v.values())
    )
    if nested:
        key = nested[0]
        return (
            f"a dict with keys {listed}: weights nested under {key!r}? save that dict itself "
            f"(torch.save(checkpoint[{key!r}], PATH))"
        )
    others = sorted(f"{k} ({type(v).__name__})" for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    return f"a dict with keys {listed}, of which {others[:shown]} are not tensors"


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
    from torch import nn

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


def non_finite(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """``(key, NaN/Inf count, size)`` of every floating tensor holding NaN or Inf, keys in sorted order."""
    import torch

    found = []
    for key in sorted(state):
        tensor = state[key]
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                found.append((key, bad, tensor.numel()))
    return found


def _kind_of(path: Path, state: dict[str, torch.Tensor], kind: str | None = None) -> str:
    detected = detect_kind(state)
    if detected is None:
        raise BadInputError(
            f"{path}: keys {sorted(state)} fit no known predictor "
            "(V1: weight/bias; V2: layers.{0,2,4,6,7} or layers.{0,3,6,9,11}; simulacra: linear.*)"
        )
    if kind is not None and kind != detected:
        raise BadInputError(f"{path}: configured as {kind} but its keys are those of {detected}")
    return detected


def _non_finite_problems(state: dict[str, torch.Tensor]) -> list[str]:
    return [f"tensor {key} holds {bad} NaN/Inf value(s) of {size}" for key, bad, size in non_finite(state)]


def fit_problems(kind: str, state: dict[str, torch.Tensor], column: str) -> list[str]:
    """Why a head of ``kind`` with these tensors does not fit score ``column`` (empty when it fits)."""
    accepted = _accepted(column)
    problems = [] if kind in accepted else [f"its kind is {kind}, but {column!r} takes {' or '.join(accepted)}"]
    return problems + _non_finite_problems(state)


def refusal(path: str | Path, column: str, problems: list[str]) -> str:
    """The error message for weights refused as ``column``'s predictor: what is wrong and how to force it."""
    return (
        f"{path}: refused as the predictor of {column!r}: {'; '.join(problems)}. Use weights that fit the column, "
        f"or force it (the release's manifest and dataset card then say so): set `force: true` on the `predictors` "
        f"resource, or run `laion-assets activate {column} {path} --force`"
    )


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file is without building the predictor: its identity and why it does not fit a column."""

    identity: PredictorIdentity
    problems: tuple[str, ...] = ()


def inspect_weights(path: str | Path, column: str | None = None) -> WeightsInfo:
    """Identity of a weights file and, given a score column, why it does not fit that column (empty: it fits)."""
    path = Path(path)
    if looks_like_nsfw_file(path):
        head, digest = load_nsfw(path)
        problems = tuple(_nsfw_fit_problems(head, column)) if column is not None else ()
        return WeightsInfo(PredictorIdentity(head.kind, digest), problems)
    state = _load_state_dict(path)
    kind = _kind_of(path, state)
    problems = tuple(fit_problems(kind, state, column)) if column is not None else ()
    return WeightsInfo(PredictorIdentity(kind, weights_sha256(state)), problems)


def _accepted(column: str) -> tuple[str, ...]:
    accepted = COLUMN_KINDS.get(column)
    if accepted is None:
        raise BadInputError(f"{column!r} is not a score column; choose one of {list(COLUMN_KINDS)}")
    return accepted


def _nsfw_fit_problems(head: NsfwHead, column: str) -> list[str]:
    accepted = _accepted(column)
    problems = (
        [] if head.kind in accepted else [f"its kind is {head.kind}, but {column!r} takes {' or '.join(accepted)}"]
    )
    return problems + non_finite_problems(head)


def _build_nsfw(path: Path, head: NsfwHead, digest: str, dim: int) -> NsfwPredictor:
    predictor = NsfwPredictor(PredictorIdentity(head.kind, digest), head)
    if predictor.dim != dim:
        raise BadInputError(
            f"{path}: NSFW head {head.kind} takes {predictor.dim}-d embeddings, not {dim}-d (the width configured: "
            f"`--dim` of `laion-assets activate`/`score`, or the storage resource's `embedding_dim`)"
        )
    return predictor


def load_predictor(path: str | Path, dim: int = CLIP_L14_DIM, kind: str | None = None) -> Predictor:
    """Load a V1, V2 (linear or ReLU), simulacra or NSFW predictor, checking every shape against ``dim``.

    Weights with NaN or Inf are refused; :func:`load_for_column` also checks the kind against a score column.
    """
    path = Path(path)
    if looks_like_nsfw_file(path):
        head, digest = load_nsfw(path)
        if kind is not None and kind != head.kind:
            raise BadInputError(f"{path}: configured as {kind} but it is an NSFW head of kind {head.kind}")
        problems = non_finite_problems(head)
        if problems:
            raise BadInputError(f"{path}: refused: {'; '.join(problems)}")
        return _build_nsfw(path, head, digest, dim)
    state = _load_state_dict(path)
    detected = _kind_of(path, state, kind)
    problems = _non_finite_problems(state)
    if problems:
        raise BadInputError(f"{path}: refused: {'; '.join(problems)}")
    return _build(path, state, detected, dim)


def load_for_column(path: str | Path, column: str, dim: int = CLIP_L14_DIM, force: bool = False) -> Predictor:
    """Load the predictor of score ``column``: refuses a head of the wrong kind or with NaN/Inf unless ``force``."""
    path = Path(path)
    if looks_like_nsfw_file(path):
        head, digest = load_nsfw(path)
        problems = _nsfw_fit_problems(head, column)
        if problems and not force:
            raise BadInputError(refusal(path, column, problems))
        return _build_nsfw(path, head, digest, dim)
    state = _load_state_dict(path)
    kind = _kind_of(path, state)
    problems = fit_problems(kind, state, column)
    if problems and not force:
        raise BadInputError(refusal(path, column, problems))
    return _build(path, state, kind, dim)


def _build(path: Path, state: dict[str, torch.Tensor], kind: str, dim: int) -> Predictor:
    identity = PredictorIdentity(kind, weights_sha256(state))
    if kind in (V1_LINEAR, SIMULACRA_LINEAR):
        prefix = "linear." if kind == SIMULACRA_LINEAR else ""
        _expect_shape(path, state, f"{prefix}weight", (1, dim))
        _expect_shape(path, state, f"{prefix}bias", (1,))
        weight = state[f"{prefix}weight"].double().numpy()[0]
        bias = float(state[f"{prefix}bias"].double()[0])
        if kind == SIMULACRA_LINEAR:
            # simulacra's forward is linear(normalize(x) * sqrt(d)); fold the scale into the weight.
            weight = weight * math.sqrt(dim)
        return LinearPredictor(identity, weight.astype(np.float32), bias)
    idx = _V2_LINEAR_KEYS if kind == V2_MLP_LINEAR else _V2_RELU_KEYS
    fan_in = dim
    for i, width in zip(idx, _V2_WIDTHS, strict=True):
        _expect_shape(path, state, f"layers.{i}.weight", (width, fan_in))
        _expect_shape(path, state, f"layers.{i}.bias", (width,))
        fan_in = width
    if kind == V2_MLP_LINEAR:
        # No activations: in eval mode the MLP is one affine map; collapse it in float64 once (starting from the
        # first layer itself: multiplying it by an identity matrix first gave the same values at 600M FMAs).
        weight = state[f"layers.{idx[0]}.weight"].double().numpy()
        bias = state[f"layers.{idx[0]}.bias"].double().numpy()
        for i in idx[1:]:
            w = state[f"layers.{i}.weight"].double().numpy()
            weight, bias = w @ weight, w @ bias + state[f"layers.{i}.bias"].double().numpy()
        return LinearPredictor(identity, weight[0].astype(np.float32), float(bias[0]))
    module = v2_module(kind, dim)
    module.load_state_dict(_strip_layers(state))
    return MLPPredictor(identity, module, dim)
