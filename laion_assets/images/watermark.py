"""LAION's watermark detector as the ``pwatermark`` head: an EfficientNet-B3 classifier run on the decoded images.

What LAION ran (LAION-AI/LAION-5B-WatermarkDetection, ``inference.py`` ``load_model`` and ``example_use.py``):
``timm.create_model('efficientnet_b3a', pretrained=False, num_classes=2)`` whose ``classifier`` is replaced by
``Sequential(Linear(1536, 625), ReLU(), Dropout(p=0.3), Linear(625, 256), ReLU(), Linear(256, 2))``, the weights
``models/watermark_model_v1.pt`` loaded with ``model.load_state_dict(torch.load(...))`` (strict: a flat state_dict
with exactly this model's keys), and the images transformed by ``T.Compose([T.Resize((256, 256)), T.ToTensor(),
T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])``: squashed to 256 x 256 (no crop) with torchvision's
default interpolation for PIL images, bilinear (PIL's, antialiased when shrinking). ``P Watermark`` is
``softmax(logits, dim=1)[:, 0]``, written per sample beside LAION's hash of URL + caption.

Here: timm 1.x maps the old name ``efficientnet_b3a`` to ``efficientnet_b3`` (the same network; the "a" only named
another set of ImageNet weights), so we build ``efficientnet_b3`` directly, with ``pretrained=False``: nothing is
downloaded. The weights are read with ``torch.load(path, map_location="cpu", weights_only=True)`` and refused, with
the file named, when their keys or shapes are not this model's. ``random`` (or ``random:SEED``) builds random
weights from a fixed seed, for tests and demos: a stable identity, values that mean nothing. Images are converted to
RGB first (LAION's loader did not: img2dataset's re-encoded JPEGs are RGB, but with ``skip_reencode`` a grayscale or
RGBA file reaches us as is). The loader carries the resized image as uint8 and normalises it on the model's device
(:func:`normalize_pixels`, the same float32 operations as ``ToTensor`` + ``Normalize``), a quarter of the bytes
through the DataLoader's shared memory and the host-to-device copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.identity import HeadIdentity, weights_sha256
from laion_assets.images.clip_model import resolve_device, resolve_precision

if TYPE_CHECKING:  # torch, timm and PIL are imported where they are used: loading the definitions must not pay
    import torch
    from PIL import Image
    from torch import nn

log = logging.getLogger(__name__)

WATERMARK_COLUMN = "pwatermark"
WATERMARK_KIND = "watermark-effnet-b3a"
TIMM_ARCH = "efficientnet_b3"  # LAION's 'efficientnet_b3a', by the name timm 1.x gives it
INPUT_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"
OFF = ("", "off", "none")
LAION_WEIGHTS_URL = "https://github.com/LAION-AI/LAION-5B-WatermarkDetection/raw/main/models/watermark_model_v1.pt"


def watermark_model() -> nn.Module:
    """LAION's watermark classifier with untrained weights: timm EfficientNet-B3 and LAION's three-layer head."""
    import timm
    from torch import nn

    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(1536, 625), nn.ReLU(), nn.Dropout(p=0.3), nn.Linear(625, 256), nn.ReLU(), nn.Linear(256, 2)
    )
    return model


def random_seed(weights: str) -> int | None:
    """The seed of ``random`` / ``random:SEED`` weights (``random`` is seed 0); None for anything else."""
    name, _, seed = weights.strip().partition(":")
    if name.lower() != RANDOM:
        return None
    try:
        return int(seed) if seed else 0
    except ValueError:
        raise BadInputError(f"watermark weights {weights!r}: the seed after 'random:' must be an integer") from None


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The state_dict of the watermark model built from ``seed`` (the same tensors on every run of one torch/timm)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return watermark_model().state_dict()


def _listed(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" … ({len(keys) - shown} more)" if len(keys) > shown else "")


@lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The watermark model's state_dict keys and shapes (read-only; built once per process)."""
    return {k: tuple(v.shape) for k, v in watermark_model().state_dict().items()}


def check_state(path: str | Path, state: object) -> dict[str, torch.Tensor]:
    """Return ``state`` if it is a state_dict of the watermark model; else raise naming the file and what is wrong."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__
        if isinstance(state, dict):
            nested = sorted(str(k) for k, v in state.items() if isinstance(v, dict))
            what = "a dict with non-tensor values" + (f" (weights nested under {nested[0]!r}?)" if nested else "")
        raise BadInputError(f"{path}: not a watermark model state_dict: expected a flat dict of tensors, got {what}")
    expected = expected_shapes()
    missing = sorted(k for k in expected if k not in state)
    foreign = sorted(k for k in state if k not in expected)
    if missing or foreign:
        hint = ""
        if foreign and all(k.startswith("module.") for k in foreign):
            hint = " (its keys carry DataParallel's 'module.' prefix: save model.module.state_dict() instead)"
        raise BadInputError(
            f"{path}: not the weights of LAION's watermark model (timm {TIMM_ARCH} with LAION's 1536-625-256-2 "
            f"classifier){hint}: {len(missing)} key(s) missing ({_listed(missing) or '-'}), {len(foreign)} "
            f"unexpected ({_listed(foreign) or '-'})"
        )
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if tuple(state[k].shape) != shape
    ]
    if shapes:
        raise BadInputError(f"{path}: wrong shapes for LAION's watermark model: {_listed(shapes)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BadInputError(f"{path}: refused: NaN or Inf in {_listed(sorted(bad))}")
    return state


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local watermark weights file (``weights_only=True``) and check it fits the model."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingUpstreamError(
            f"{path}: watermark weights file not found. Place LAION's watermark_model_v1.pt there (from "
            f"{LAION_WEIGHTS_URL}), or set the watermark weights to 'random' for a demo (values mean nothing) or "
            "empty to turn the head off"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise BadInputError(f"{path}: cannot load as a torch state_dict (weights_only=True): {exc}") from exc
    return check_state(path, state)


def weights_state(weights: str) -> dict[str, torch.Tensor]:
    """The tensors ``weights`` names: ``random``/``random:SEED`` or a local state_dict file."""
    seed = random_seed(weights)
    return random_state(seed) if seed is not None else read_weights(weights)


def identity_of(state: dict[str, torch.Tensor]) -> HeadIdentity:
    """The head's identity: kind plus the canonical sha256 of its tensors, as the scoring heads record theirs."""
    return HeadIdentity(WATERMARK_KIND, weights_sha256(state))


def watermark_pixels(image: Image.Image) -> torch.Tensor:
    """An image as LAION's detector sees it before normalising: RGB, squashed to 256 x 256 (bilinear), uint8 CHW."""
    import torch
    from PIL import Image

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(n, 3, H, W)`` to float32 as ``ToTensor`` then ``Normalize(ImageNet mean, std)`` compute it."""
    import torch

    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    return pixels.to(torch.float32).div(255).sub(mean).div(std)


def watermark_transform() -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> the normalised float32 ``(3, 256, 256)`` tensor LAION's detector takes."""
    return lambda image: normalize_pixels(watermark_pixels(image)[None])[0]


@dataclass(frozen=True)
class WatermarkSpec:
    """Which watermark weights (a local file, ``random`` or ``random:SEED``), on which device, in which precision."""

    weights: str
    device: str = "auto"
    precision: str = "fp32"


@dataclass
class LoadedWatermark:
    """A ready watermark model with its identity; it scores batches of :func:`watermark_pixels` tensors."""

    spec: WatermarkSpec
    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    identity: HeadIdentity

    def score(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pwatermark`` (float32, ``softmax(logits)[:, 0]``) of a uint8 ``(n, 3, 256, 256)`` batch."""
        import torch

        with torch.inference_mode():
            x = normalize_pixels(pixels.to(self.device, non_blocking=True)).to(self.dtype)
            return torch.softmax(self.model(x).float(), dim=1)[:, 0]


def load_watermark(spec: WatermarkSpec) -> LoadedWatermark:
    """Build the watermark model with ``spec``'s weights on its device, in eval mode."""
    import torch

    if spec.weights.strip().lower() in OFF:
        raise BadInputError("no watermark weights configured: the watermark head is off")
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    state = weights_state(spec.weights)
    if random_seed(spec.weights) is not None:
        log.warning("watermark model built with random weights (%s): its pwatermark values mean nothing", spec.weights)
    model = watermark_model()
    model.load_state_dict(state)  # strict; check_state has named any mismatch with the file already
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedWatermark(spec, model, device, dtype, identity_of(state))
