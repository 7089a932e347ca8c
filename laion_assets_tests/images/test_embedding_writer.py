from pathlib import Path

import numpy as np
import polars as pl
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.images.embedding_writer import write_part
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import discover_parts


def _meta(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "URL": [f"http://127.0.0.1/{i}" for i in range(rows)],
            "TEXT": [f"t{i}" for i in range(rows)],
            "WIDTH": [1.0] * rows,
            "HEIGHT": [2.0] * rows,
            "similarity": [0.3] * rows,
            "punsafe": pl.Series([0.1] * rows, dtype=pl.Float32),
            "pwatermark": pl.Series([0.2] * rows, dtype=pl.Float32),
        }
    )


def test_written_part_is_clip_retrieval_layout_and_indexes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img, text = rng.normal(size=(6, 768)) * 7, rng.normal(size=(6, 768))
    part = write_part(tmp_path, 3, img, text, _meta(6))
    assert part.embeddings == tmp_path / "img_emb" / "img_emb_00003.npy"
    assert part.metadata == tmp_path / "metadata" / "metadata_00003.parquet"
    assert part.text_embeddings == tmp_path / "text_emb" / "text_emb_00003.npy"
    stored = np.load(part.embeddings)
    assert stored.dtype == np.float16 and stored.shape == (6, 768)
    np.testing.assert_allclose(np.linalg.norm(stored.astype(np.float32), axis=1), 1, atol=2e-3)
    expected = img / np.linalg.norm(img, axis=1, keepdims=True)
    np.testing.assert_allclose(stored.astype(np.float32), expected, atol=2e-3)
    assert np.load(part.text_embeddings).dtype == np.float16
    (found,) = discover_parts(tmp_path)
    assert found == part
    assert index_part(found, tmp_path / "indexed.parquet", 768).rows == 6
    assert not list(tmp_path.rglob("*.tmp"))


def test_misaligned_inputs_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="5 metadata rows"):
        write_part(tmp_path, 0, np.ones((4, 8)), None, _meta(5))
    with pytest.raises(BadInputError, match="text embeddings"):
        write_part(tmp_path, 0, np.ones((5, 8)), np.ones((4, 8)), _meta(5))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
