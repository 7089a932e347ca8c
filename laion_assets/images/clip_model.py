"""Loading an open_clip model (name or config file, pretrained tag or local weights) and embedding with it.

The model is built on first use, never at import. A CUDA out-of-memory error halves the batch and goes on
(:class:`BatchEmbedder`), so one oversized ``batch_size`` setting costs a retry, not the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from laion_assets.core.errors import BadInputError, MissingUpstreamError

if TYPE_CHECKING:  # torch is imported where it is used: loading the definitions must not pay for it
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
NO_WEIGHTS = ("", "none", "random")


@dataclass(frozen=True)
class ClipSpec:
    """Which model to load and where: open_clip name (or a model-config JSON path), weights, device, precision."""

    model: str = "ViT-L-14"
    pretrained: str = "openai"
    device: str = "auto"
    precision: str = "auto"


@dataclass
class LoadedClip:
    """A ready model with its image preprocessing and tokenizer."""

    spec: ClipSpec
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    dtype: torch.dtype
    embed_dim: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (float32, not normalised) of a preprocessed batch."""
        import torch

        with torch.inference_mode():
            images = images.to(self.device, dtype=self.dtype, non_blocking=True)
            return self.model.encode_image(images).float()

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings (float32, not normalised) of tokenized captions."""
        import torch

        with torch.inference_mode():
            return self.model.encode_text(tokens.to(self.device)).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings (float32, not normalised) of captions."""
        return self.encode_tokens(self.tokenizer(texts))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for ``cuda`` without one is an error."""
    import torch

    if device not in DEVICES:
        raise BadInputError(f"device {device!r} is not one of {DEVICES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("device 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA (as clip-retrieval runs) and fp32 on CPU."""
    if precision not in PRECISIONS:
        raise BadInputError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def _model_name(model: str) -> str:
    """Register a model-config JSON file with open_clip and return its name; a plain name is returned as is."""
    path = Path(model).expanduser()
    if model.endswith(".json"):
        if not path.is_file():
            raise MissingUpstreamError(f"{path}: open_clip model config not found")
        import open_clip

        open_clip.add_model_config(path)
        return path.stem
    return model


def _weights_help(spec: ClipSpec, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return (
        f"cannot load weights {spec.pretrained!r} for open_clip model {spec.model!r}"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {str(exc).rstrip('.')}. "
        "Supply them one of two ways: set the clip resource's `pretrained` to a local weights file "
        "(.bin/.pt/.pth/.safetensors, e.g. "
        "open_clip_pytorch_model.bin of timm/vit_large_patch14_clip_224.openai), or fill the Hugging Face cache "
        "($HF_HOME, default ~/.cache/huggingface) once on a machine with access: "
        f"`python -c \"import open_clip; open_clip.create_model('{spec.model}', pretrained='{spec.pretrained}')\"`"
        " and copy that cache here."
    )


def load_clip(spec: ClipSpec) -> LoadedClip:
    """Build the model described by ``spec`` on its device in eval mode."""
    import open_clip
    import torch

    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    name = _model_name(spec.model)
    if name not in open_clip.list_models():
        raise BadInputError(f"open_clip has no model {spec.model!r}; give a known name or a model-config .json file")
    pretrained: str | None = spec.pretrained
    if spec.pretrained.lower() in NO_WEIGHTS:
        log.warning("open_clip model %s built with random weights (pretrained=%r)", name, spec.pretrained)
        pretrained = None
    elif not open_clip.get_pretrained_cfg(name, spec.pretrained):
        path = Path(spec.pretrained).expanduser()
        if not path.is_file():
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise MissingUpstreamError(
                f"{spec.pretrained}: neither a weights file nor a pretrained tag of {name} (tags: {tags})"
            )
        pretrained = str(path)  # open_clip reads it with torch.load(map_location="cpu", weights_only=True)
    try:
        # Random weights are seeded, so a demo without pretrained weights gives the same embeddings every run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, precision=precision
            )
    except RuntimeError as exc:
        if pretrained and "download" in str(exc).lower():
            raise MissingUpstreamError(_weights_help(spec, exc)) from exc
        raise BadInputError(f"cannot build open_clip model {name} with weights {spec.pretrained!r}: {exc}") from exc
    model.eval()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    embed_dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0
    if not embed_dim:
        with torch.inference_mode():
            size = model.visual.image_size
            probe = torch.zeros(1, 3, *(size if isinstance(size, tuple) else (size, size)), device=device, dtype=dtype)
            embed_dim = int(model.encode_image(probe).shape[-1])
    return LoadedClip(spec, model, preprocess, open_clip.get_tokenizer(name), device, dtype, embed_dim)


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (torch raises either its own class or a RuntimeError)."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class HalvingBatches:
    """Run a model over consecutive chunks of a batch, halving the chunk size on CUDA out-of-memory until it fits;
    the size that fitted is kept for the next batches (``halvings`` counts the halvings, ``calls`` the model calls)."""

    def __init__(self, batch_size: int, what: str = "batch") -> None:
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.halvings = 0
        self.calls = 0
        self.what = what

    def chunks(self, items: Sequence[T], apply: Callable[[Sequence[T]], R]) -> list[R]:
        """``apply`` of each chunk of ``items``, in order, chunks no bigger than the current batch size."""
        import torch

        out, start = [], 0
        while start < len(items):
            chunk = items[start : start + self.batch_size]
            try:
                self.calls += 1
                out.append(apply(chunk))
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not is_oom(exc) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                self.halvings += 1
                log.warning("CUDA out of memory (%s): batch size halved to %d", self.what, self.batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(chunk)
        return out


class BatchEmbedder(HalvingBatches):
    """Apply ``encode`` to batches of tensors with :class:`HalvingBatches`' out-of-memory halving."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> None:
        super().__init__(batch_size, "embedding")
        self.encode = encode

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings of ``batch`` (float32 numpy), computed in chunks no bigger than the current batch size."""
        out = self.chunks(batch, lambda chunk: self.encode(chunk).detach().float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
