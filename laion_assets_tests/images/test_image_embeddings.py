import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import MODELS_DIR
from laion_assets.demos.url_server import url_frame
from laion_assets.images.clip_model import ClipSpec, load_clip
from laion_assets.images.image_embeddings import embed_shard
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.url_sources import ROW_COLUMN
from laion_assets_tests.img2dataset_tars import NOT_AN_IMAGE, image_bytes, sample, write_tar

TINY = str(MODELS_DIR / "tiny-clip" / "tiny-clip-768.json")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip(ClipSpec(TINY, "none", "cpu"))


def _source(rows: int, **columns) -> pl.DataFrame:
    frame = url_frame([f"http://127.0.0.1/{i}.jpg" for i in range(rows)]).with_columns(**columns)
    return frame.with_row_index(ROW_COLUMN).with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))


def test_embeds_in_url_shard_order_and_skips_undecodable(tiny, tmp_path: Path) -> None:
    # Rows arrive out of order across two "attempts", one image is corrupt.
    first = write_tar(
        tmp_path / "a0.tar", [sample(4, image_bytes(4)), sample(0, image_bytes(0)), sample(2, NOT_AN_IMAGE)]
    )
    second = write_tar(tmp_path / "a1.tar", [sample(3, image_bytes(3, "PNG"), ext="png"), sample(1, image_bytes(1))])
    source = _source(6, note=pl.lit("kept"))
    result = embed_shard([first, second], source, tiny, tmp_path / "out", 7, batch_size=2, num_workers=2)
    assert (result.rows, result.skipped) == (4, 1)
    assert result.skipped_reasons == {"UnidentifiedImageError": 1}
    (part,) = discover_parts(tmp_path / "out")
    assert part.key == "00007" and part.text_embeddings is not None
    meta = pl.read_parquet(part.metadata)
    assert meta[ROW_COLUMN].to_list() == [0, 1, 3, 4]
    assert meta["key"].to_list() == ["000000000", "000000001", "000000003", "000000004"]
    assert (
        meta["caption"].to_list() == meta["TEXT"].to_list() == [f"a generated picture number {i}" for i in (0, 1, 3, 4)]
    )
    assert meta["URL"].to_list() == meta["url"].to_list() == [f"http://127.0.0.1/{i}.jpg" for i in (0, 1, 3, 4)]
    assert meta.columns[:11] == [
        "URL",
        "TEXT",
        "WIDTH",
        "HEIGHT",
        "similarity",
        "punsafe",
        "pwatermark",
        "LANGUAGE",
        "key",
        "url",
        "caption",
    ]
    assert meta["note"].to_list() == ["kept"] * 4
    img = np.load(part.embeddings)
    assert img.dtype == np.float16 and img.shape == (4, 768)
    np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1, atol=2e-3)
    # Row alignment: each stored row is the embedding of that row's own image.
    for i, row in enumerate(meta[ROW_COLUMN]):
        fmt = "PNG" if row == 3 else "JPEG"

        image = tiny.preprocess(Image.open(io.BytesIO(image_bytes(row, fmt))).convert("RGB"))
        own = tiny.encode_images(image[None])[0].numpy()
        own /= np.linalg.norm(own)
        np.testing.assert_allclose(img[i].astype(np.float32), own, atol=3e-3)
    text = np.load(part.text_embeddings)
    own_text = tiny.encode_texts(["a generated picture number 3"])[0].numpy()
    np.testing.assert_allclose(text[2].astype(np.float32), own_text / np.linalg.norm(own_text), atol=3e-3)


def test_sizes_come_from_the_images_when_the_source_has_none(tiny, tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "t.tar", [sample(0, image_bytes(0)), sample(1, image_bytes(1))])
    source = _source(2).drop("WIDTH", "HEIGHT", "punsafe")
    result = embed_shard([tar], source, tiny, tmp_path / "out", 0, batch_size=4, num_workers=0)
    meta = pl.read_parquet(result.part.metadata)
    assert meta["WIDTH"].to_list() == [40.0, 40.0] and meta["HEIGHT"].to_list() == [30.0, 30.0]
    assert meta["punsafe"].null_count() == 2 and meta.schema["punsafe"] == pl.Float32


def test_a_shard_without_any_decodable_image_is_an_error(tiny, tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "t.tar", [sample(0, NOT_AN_IMAGE)])
    with pytest.raises(BadInputError, match="shard 00003: no decodable image in 1 tar"):
        embed_shard([tar], _source(1), tiny, tmp_path / "out", 3, num_workers=0)
    assert not (tmp_path / "out").exists()
