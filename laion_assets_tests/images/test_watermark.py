"""Acceptance 4: the watermark head against LAION's own recipe, computed directly with torchvision and timm.

The reference side is written out here as LAION's inference.py has it (torchvision Resize((256, 256)), ToTensor,
Normalize; timm 'efficientnet_b3a' with the 1536-625-256-2 classifier; softmax[:, 0]), never through our module.
Random weights: with timm's initialisation alone the network answers ~0.503 for every image, which could not tell
one row from another, so the test weights get BatchNorm statistics from a few images first (still random weights of
LAION's architecture, saved as a state_dict file and loaded through our loader like LAION's file would be).
"""

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import timm
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.identity import weights_sha256
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import MODELS_DIR, V1_WEIGHTS
from laion_assets.demos.url_server import url_frame
from laion_assets.images.clip_model import ClipSpec, load_clip
from laion_assets.images.image_embeddings import embed_shard
from laion_assets.images.image_reader import image_loader
from laion_assets.images.watermark import (
    WatermarkSpec,
    identity_of,
    load_watermark,
    normalize_pixels,
    random_state,
    read_weights,
    watermark_pixels,
    watermark_transform,
)
from laion_assets.images.watermark_scores import (
    CURRENT,
    NEEDS_IMAGES,
    STALE,
    UNSCORED,
    indexed_watermark,
    read_watermark,
    rescore_watermark,
    watermark_state,
)
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import find_part
from laion_assets.sources.metadata import read_hashes
from laion_assets.sources.url_sources import ROW_COLUMN
from laion_assets_tests.img2dataset_tars import NOT_AN_IMAGE, sample, write_tar

TINY = str(MODELS_DIR / "tiny-clip" / "tiny-clip-768.json")
LAION_PREPROCESS = T.Compose(
    [T.Resize((256, 256)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
)


def laion_model(state: dict) -> nn.Module:
    """LAION's load_model (inference.py), with a state_dict in place of ./model.pt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm 1.x: "Mapping deprecated model name efficientnet_b3a to ..."
        model = timm.create_model("efficientnet_b3a", pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(in_features=1536, out_features=625),
        nn.ReLU(),
        nn.Dropout(p=0.3),
        nn.Linear(in_features=625, out_features=256),
        nn.ReLU(),
        nn.Linear(in_features=256, out_features=2),
    )
    model.load_state_dict(state)
    return model.eval()


def laion_pwatermark(state: dict, images: list[Image.Image]) -> np.ndarray:
    batch = torch.stack([LAION_PREPROCESS(image.convert("RGB")) for image in images])
    with torch.no_grad():
        return torch.nn.functional.softmax(laion_model(state)(batch), dim=1)[:, 0].numpy()


def _photo(seed: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base, freq = rng.uniform(0, 255, 3), rng.uniform(0.02, 0.2, 3)
    pixels = np.stack([(base[c] + 90 * np.sin(freq[c] * (x + 2 * y))) % 256 for c in range(3)], axis=-1)
    return np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"transparency": 0} if image.mode == "P" else {}))
    return buf.getvalue()


def _images() -> list[tuple[str, bytes]]:
    """(extension, file bytes): non-square RGB JPEG and PNG, RGBA, palette with transparency, grayscale, CMYK."""
    rgba = np.dstack([_photo(3, 90, 64), np.linspace(0, 255, 90 * 64).reshape(64, 90).astype(np.uint8)])
    return [
        ("jpg", _encoded(Image.fromarray(_photo(0, 120, 80)), "JPEG")),
        ("png", _encoded(Image.fromarray(_photo(1, 300, 60)), "PNG")),  # shrunk: bilinear antialiasing counts
        ("png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG")),
        ("png", _encoded(Image.fromarray(_photo(4, 64, 96)).quantize(16), "PNG")),
        ("jpg", _encoded(Image.fromarray(_photo(5, 100, 128)[..., 0], "L"), "JPEG")),
        ("jpg", _encoded(Image.fromarray(_photo(6, 48, 128)).convert("CMYK"), "JPEG")),
    ]


IMAGES = _images()


def decoded(row: int) -> Image.Image:
    return Image.open(io.BytesIO(IMAGES[row][1]))


def calibrated(seed: int) -> dict:
    """Random weights of LAION's architecture that tell the test images apart: BatchNorm statistics from the
    images (at half size, a quarter of the cost) and a last layer 30 times larger."""
    model = laion_model(random_state(seed))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the one calibration batch
    model.train()
    with torch.no_grad():
        batch = torch.stack([LAION_PREPROCESS(decoded(i).convert("RGB")) for i in range(len(IMAGES))])
        model(nn.functional.avg_pool2d(batch, 2))
        model.classifier[5].weight *= 30
    return {k: v.clone() for k, v in model.eval().state_dict().items()}


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two weights files: ``a`` and ``b``, the same network with one classifier weight nudged."""
    folder = tmp_path_factory.mktemp("watermark_weights")
    state = calibrated(3)
    torch.save(state, folder / "a.pt")
    nudged = {**state, "classifier.5.bias": state["classifier.5.bias"] + torch.tensor([0.5, -0.5])}
    torch.save(nudged, folder / "b.pt")
    return {"a": folder / "a.pt", "b": folder / "b.pt"}


@pytest.fixture(scope="module")
def tiny():
    return load_clip(ClipSpec(TINY, "none", "cpu"))


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory, tiny, heads):
    """Shard 00004: the images in img2dataset's layout (one undecodable), embedded with head ``a`` and indexed."""
    layout = OutputLayout(tmp_path_factory.mktemp("watermark_shard"))
    attempt = layout.images_dir("00004") / "attempt-000"
    attempt.mkdir(parents=True)
    samples = [sample(row, data, ext=ext) for row, (ext, data) in enumerate(IMAGES)]
    first = write_tar(attempt / "00000.tar", [samples[5], samples[0], samples[3]])
    broken = sample(len(IMAGES), NOT_AN_IMAGE)
    second = write_tar(attempt / "00001.tar", [samples[1], broken, samples[2], samples[4]])
    source = url_frame([f"http://127.0.0.1/{i}" for i in range(len(IMAGES) + 1)], seed=2).with_row_index(ROW_COLUMN)
    source = source.with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
    head = load_watermark(WatermarkSpec(str(heads["a"]), "cpu"))
    result = embed_shard(
        [first, second], source, tiny, layout.embedded_dir, 4, batch_size=3, num_workers=2, watermark=head,
        watermark_out=layout.shard_watermark("00004"),
    )  # fmt: skip
    index_part(result.part, layout.shard_metadata("00004"), 768)
    return layout, result, source, [first, second]


def test_preprocessing_is_laions_torchvision_transform() -> None:
    transform = watermark_transform()
    for row in range(len(IMAGES)):
        image = decoded(row)
        expected = LAION_PREPROCESS(image.convert("RGB"))
        assert expected.shape == (3, 256, 256)
        assert torch.equal(transform(image), expected), f"image {row} ({image.mode} {image.size})"


def test_one_decode_feeds_both_models_their_own_preprocessing(tiny, shard) -> None:
    _, _, _, tars = shard
    seen = {}
    for batch in image_loader(tars, tiny.preprocess, batch_size=3, num_workers=2, extra=watermark_pixels):
        assert batch.extra is not None and batch.extra.dtype == torch.uint8
        normalised = normalize_pixels(batch.extra)
        for meta, clip_input, mark_input in zip(batch.metas, batch.images, normalised, strict=True):
            seen[meta[ROW_COLUMN]] = (clip_input, mark_input)
    assert sorted(seen) == list(range(len(IMAGES)))  # the undecodable sample is skipped for both
    for row, (clip_input, mark_input) in seen.items():
        rgb = decoded(row).convert("RGB")
        assert torch.equal(clip_input, tiny.preprocess(rgb))
        assert torch.equal(mark_input, LAION_PREPROCESS(rgb)), f"image {row}"


def test_shard_pwatermark_equals_laions_model_on_the_same_images(shard, heads) -> None:
    layout, result, _, _ = shard
    frame, record = read_watermark(layout.shard_watermark("00004"))
    meta = pl.read_parquet(result.part.metadata)
    assert meta[ROW_COLUMN].to_list() == list(range(len(IMAGES)))
    assert frame.schema == {"hash": pl.Int64, "pwatermark": pl.Float32}
    assert frame["hash"].to_list() == read_hashes(result.part.metadata).to_list()
    assert frame["hash"].to_list() == pl.read_parquet(layout.shard_metadata("00004"))["hash"].to_list()
    expected = laion_pwatermark(torch.load(heads["a"], weights_only=True), [decoded(r) for r in meta[ROW_COLUMN]])
    assert np.ptp(expected) > 1e-2  # rows differ enough that a row mixed up would show
    np.testing.assert_allclose(frame["pwatermark"].to_numpy(), expected, rtol=0, atol=1e-5)
    assert record.identity == str(identity_of(read_weights(heads["a"])))
    assert record.part["rows"] == len(IMAGES) and record.part["key"] == "00004"
    assert result.watermark is not None and result.watermark.rows == len(IMAGES)
    assert result.watermark.summary["max"] == pytest.approx(float(expected.max()), abs=1e-5)
    aligned, _ = indexed_watermark(layout, "00004")
    assert aligned is not None and aligned.equals(frame)


def test_clip_outputs_do_not_change_with_the_watermark_head(tiny, shard, tmp_path: Path) -> None:
    layout, with_head, source, tars = shard
    stale = tmp_path / "watermark.parquet"
    stale.write_bytes(layout.shard_watermark("00004").read_bytes())
    without = embed_shard(tars, source, tiny, tmp_path / "out", 4, batch_size=3, num_workers=2, watermark_out=stale)
    assert without.watermark is None and not stale.exists()  # no head: no file, and an earlier one is removed
    assert np.load(without.part.embeddings).tobytes() == np.load(with_head.part.embeddings).tobytes()
    assert np.load(without.part.text_embeddings).tobytes() == np.load(with_head.part.text_embeddings).tobytes()
    assert pl.read_parquet(without.part.metadata).equals(pl.read_parquet(with_head.part.metadata))


def test_loading_refuses_what_is_not_laions_watermark_model(tmp_path: Path, heads) -> None:
    with pytest.raises(MissingUpstreamError, match=r"missing\.pt: watermark weights file not found.*LAION"):
        read_weights(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(BadInputError, match=r"garbage\.pt: cannot load as a torch state_dict"):
        read_weights(garbage)
    with pytest.raises(BadInputError, match=r"linear\.pth: not the weights of LAION's watermark model.*unexpected"):
        read_weights(V1_WEIGHTS)  # an aesthetic head: a state_dict, but not this model's
    state = torch.load(heads["a"], weights_only=True)
    cases = {
        "wrapped.pt": {f"module.{k}": v for k, v in state.items()},
        "nested.pt": {"state_dict": state, "epoch": 3},
        "three.pt": {**state, "classifier.5.weight": torch.zeros(3, 256), "classifier.5.bias": torch.zeros(3)},
        "nan.pt": {**state, "classifier.0.bias": torch.full((625,), float("nan"))},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
    with pytest.raises(BadInputError, match=r"wrapped\.pt: .*'module\.' prefix.*key\(s\) missing"):
        read_weights(tmp_path / "wrapped.pt")
    with pytest.raises(BadInputError, match=r"nested\.pt: not a watermark model state_dict.*'state_dict'"):
        read_weights(tmp_path / "nested.pt")
    with pytest.raises(BadInputError, match=r"three\.pt: wrong shapes.*classifier\.5\.weight \(3, 256\) \(expected"):
        read_weights(tmp_path / "three.pt")
    with pytest.raises(BadInputError, match=r"nan\.pt: refused: NaN or Inf in classifier\.0\.bias"):
        read_weights(tmp_path / "nan.pt")
    with pytest.raises(BadInputError, match="seed after 'random:' must be an integer"):
        load_watermark(WatermarkSpec("random:x", "cpu"))


def test_identity_is_the_tensors_stable_across_save_and_load(tmp_path: Path, heads) -> None:
    state = random_state(0)
    assert identity_of(random_state(0)) == identity_of(state)  # the seed makes the same tensors every time
    assert identity_of(random_state(1)) != identity_of(state)
    torch.save(state, tmp_path / "saved.pt")
    loaded = load_watermark(WatermarkSpec(str(tmp_path / "saved.pt"), "cpu"))
    assert loaded.identity == identity_of(state)
    assert str(loaded.identity).startswith("watermark-effnet-b3a@sha256:")
    assert identity_of(read_weights(heads["a"])) != identity_of(read_weights(heads["b"]))
    # The identity is the canonical encoding's digest, the one every head records (scoring/predictors.py).
    assert identity_of(state).sha256 == weights_sha256(state)


def test_a_new_head_outdates_exactly_its_shards_and_rescore_fixes_them_from_images(shard, heads, tmp_path: Path):
    built, _, source, _ = shard
    layout = OutputLayout(tmp_path / "out")
    shutil.copytree(built.root, layout.root)  # this test changes the files
    part = find_part(layout.embedded_dir, "00004")
    a = load_watermark(WatermarkSpec(str(heads["a"]), "cpu"))
    b = load_watermark(WatermarkSpec(str(heads["b"]), "cpu"))
    # A second shard, scored by head b already: switching to b must leave it alone.
    attempt = layout.images_dir("00005") / "attempt-000"
    attempt.mkdir(parents=True)
    tar = write_tar(attempt / "00000.tar", [sample(r, IMAGES[r][1], ext=IMAGES[r][0]) for r in (1, 2)])
    other = embed_shard([tar], source, load_clip(ClipSpec(TINY, "none", "cpu")), layout.embedded_dir, 5, 2, 1,
                        watermark=b, watermark_out=layout.shard_watermark("00005")).part  # fmt: skip
    parts = {"00004": part, "00005": other}
    assert [watermark_state(k, layout, a.identity, p).status for k, p in parts.items()] == [CURRENT, STALE]
    states = {k: watermark_state(k, layout, b.identity, p) for k, p in parts.items()}
    assert [s.status for s in states.values()] == [STALE, CURRENT]
    assert states["00004"].reason == f"scored by another head ({a.identity} -> {b.identity})"

    before = layout.shard_watermark("00005").read_bytes()
    rescored = rescore_watermark("00004", layout, part, b, batch_size=4, num_workers=1)
    assert rescored.rows == len(IMAGES) and rescored.identity == b.identity
    assert watermark_state("00004", layout, b.identity, part).status == CURRENT
    assert layout.shard_watermark("00005").read_bytes() == before
    frame, record = read_watermark(layout.shard_watermark("00004"))
    expected = laion_pwatermark(torch.load(heads["b"], weights_only=True), [decoded(r) for r in range(len(IMAGES))])
    np.testing.assert_allclose(frame["pwatermark"].to_numpy(), expected, rtol=0, atol=1e-5)
    assert record.identity == str(b.identity) and indexed_watermark(layout, "00004")[0] is not None

    # Without images a stale shard cannot be re-scored: it is reported, with what to run, and rescore refuses.
    shutil.rmtree(layout.images_dir("00004"))
    lacking = watermark_state("00004", layout, a.identity, part)
    assert lacking.status == NEEDS_IMAGES
    assert "its images are gone" in lacking.reason
    assert "--select images,image_embeddings --partition 00004" in lacking.reason
    with pytest.raises(MissingUpstreamError, match="shard 00004: cannot re-score pwatermark: its images are gone"):
        rescore_watermark("00004", layout, part, a)
    layout.shard_watermark("00005").unlink()
    assert watermark_state("00005", layout, b.identity, other).status == UNSCORED
    stored = watermark_state("00006", layout, b.identity, None, url_mode=False)
    assert stored.status == NEEDS_IMAGES and "stored embeddings has no images" in stored.reason
