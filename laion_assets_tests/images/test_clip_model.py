from pathlib import Path

import numpy as np
import pytest
import torch

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.paths import MODELS_DIR
from laion_assets.images.clip_model import (
    BatchEmbedder,
    ClipSpec,
    is_oom,
    load_clip,
    resolve_device,
    resolve_precision,
)

TINY = str(MODELS_DIR / "tiny-clip" / "tiny-clip-768.json")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip(ClipSpec(TINY, "none", "cpu"))


def test_tiny_model_builds_from_its_config_without_weights(tiny) -> None:
    assert tiny.embed_dim == 768
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32
    emb = tiny.encode_images(torch.randn(3, 3, 64, 64))
    assert emb.shape == (3, 768) and emb.dtype == torch.float32
    assert tiny.encode_texts(["a cat", "a dog"]).shape == (2, 768)


def test_local_weights_file_is_loaded(tiny, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), weights)
    again = load_clip(ClipSpec(TINY, str(weights), "cpu"))
    images = torch.randn(2, 3, 64, 64)
    assert torch.allclose(again.encode_images(images), tiny.encode_images(images), atol=1e-5)


def test_openai_weights_offline_say_how_to_supply_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # a weights file cached on this machine stays unused
    with pytest.raises(MissingUpstreamError) as info:
        load_clip(ClipSpec("ViT-L-14", "openai", "cpu"))
    message = str(info.value)
    assert "'openai'" in message and "ViT-L-14" in message and "HF_HUB_OFFLINE is set" in message
    assert "local weights file" in message and "Hugging Face cache" in message


def test_bad_specs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no model 'ViT-Q-99'"):
        load_clip(ClipSpec("ViT-Q-99", "none", "cpu"))
    with pytest.raises(MissingUpstreamError, match="neither a weights file nor a pretrained tag"):
        load_clip(ClipSpec(TINY, str(tmp_path / "missing.pt"), "cpu"))
    with pytest.raises(MissingUpstreamError, match="model config not found"):
        load_clip(ClipSpec(str(tmp_path / "nope.json"), "none", "cpu"))
    with pytest.raises(BadInputError, match="device 'tpu'"):
        resolve_device("tpu")


def test_precision_is_fp16_on_cuda_and_fp32_on_cpu() -> None:
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(BadInputError, match="precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))


class LimitedMemoryModel:
    """A real computation (a fixed projection) that runs out of 'GPU memory' above ``limit`` rows."""

    def __init__(self, limit: int, error: type[Exception] = torch.cuda.OutOfMemoryError) -> None:
        self.limit = limit
        self.error = error
        self.calls: list[int] = []
        self.weight = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(batch))
        if len(batch) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch @ self.weight


def test_out_of_memory_halves_the_batch_and_goes_on() -> None:
    model = LimitedMemoryModel(limit=3)
    embed = BatchEmbedder(model, batch_size=16)
    batch = torch.randn(16, 5)
    out = embed(batch)
    np.testing.assert_allclose(out, (batch @ model.weight).numpy(), rtol=1e-6)
    assert embed.batch_size == 2 and embed.halvings == 3
    assert model.calls[:4] == [16, 8, 4, 2]  # then chunks of 2 until done
    assert sum(c for c in model.calls if c <= 3) == 16
    model.calls.clear()
    embed(torch.randn(5, 5))  # the smaller size is remembered for later batches
    assert model.calls == [2, 2, 1]


def test_runtime_error_saying_out_of_memory_also_halves() -> None:
    embed = BatchEmbedder(LimitedMemoryModel(limit=4, error=RuntimeError), batch_size=8)
    assert embed(torch.randn(8, 5)).shape == (8, 4)
    assert embed.batch_size == 4


def test_other_errors_and_oom_at_batch_one_are_raised() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        BatchEmbedder(LimitedMemoryModel(limit=0), batch_size=4)(torch.randn(4, 5))

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        BatchEmbedder(broken, batch_size=4)(torch.randn(4, 5))
    assert not is_oom(ValueError("out of memory"))
    with pytest.raises(BadInputError, match="batch_size"):
        BatchEmbedder(broken, batch_size=0)
