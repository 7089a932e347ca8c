import hashlib

import numpy as np
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.sources.embeddings import iter_chunks, l2_normalize, validate_embeddings


def write(tmp_path, array, name="img_emb_0.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def unit(n=50, d=768, dtype=np.float16):
    x = np.random.default_rng(0).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def test_valid_part_reports_stats(tmp_path):
    stats = validate_embeddings(write(tmp_path, unit()), 768, 50)
    assert (stats.rows, stats.dim, stats.dtype) == (50, 768, "float16")
    assert 0.99 < stats.norm_min <= stats.norm_max < 1.01


def test_wrong_width(tmp_path):
    path = write(tmp_path, unit(d=512))
    with pytest.raises(BadInputError, match=r"img_emb_0\.npy: embedding width is 512, expected 768"):
        validate_embeddings(path, 768)


def test_row_count_differs_from_metadata(tmp_path):
    path = write(tmp_path, unit(n=49))
    with pytest.raises(BadInputError, match=r"img_emb_0\.npy: 49 embedding rows but meta_0\.parquet has 50 rows"):
        validate_embeddings(path, 768, 50, rows_from="meta_0.parquet")


@pytest.mark.parametrize("value, message", [(np.nan, "row 7 has NaN or Inf"), (np.inf, "row 7 has NaN or Inf")])
def test_non_finite_rows_are_named(tmp_path, value, message):
    x = unit()
    x[7, 3] = value
    with pytest.raises(BadInputError, match=message):
        validate_embeddings(write(tmp_path, x), 768)


def test_zero_vector_is_named(tmp_path):
    x = unit()
    x[11] = 0
    with pytest.raises(BadInputError, match=r"row 11 is a zero vector"):
        validate_embeddings(write(tmp_path, x), 768)


def test_unnormalised_rows_are_named(tmp_path):
    x = unit(dtype=np.float32)
    x[4] *= 3
    with pytest.raises(BadInputError, match=r"row 4 has L2 norm 3\.0000"):
        validate_embeddings(write(tmp_path, x), 768)


def test_wrong_dtype_and_shape(tmp_path):
    with pytest.raises(BadInputError, match="dtype is int32"):
        validate_embeddings(write(tmp_path, np.ones((3, 768), dtype=np.int32)), 768)
    with pytest.raises(BadInputError, match="must be 2-D"):
        validate_embeddings(write(tmp_path, np.ones(768, dtype=np.float16)), 768)
    garbage = tmp_path / "img_emb_9.npy"
    garbage.write_bytes(b"nope")
    with pytest.raises(BadInputError, match=r"img_emb_9\.npy: cannot read"):
        validate_embeddings(garbage, 768)


def test_chunks_cover_every_row_once():
    x = unit(n=23, d=4)
    starts = [(s, c.shape[0]) for s, c in iter_chunks(x, rows=7)]
    assert starts == [(0, 7), (7, 7), (14, 7), (21, 2)]
    assert np.array_equal(np.concatenate([c for _, c in iter_chunks(x, rows=7)]), x.astype(np.float32))


def test_l2_normalize_guards_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("rows", [0, 50, 70_000])  # empty, one chunk, two chunks
def test_validation_hashes_the_whole_file_in_the_same_pass(tmp_path, rows):
    path = write(tmp_path, unit(rows, 8) if rows else np.zeros((0, 8), np.float16))
    with open(path, "ab") as f:
        f.write(b"trailing bytes the header does not count")  # still part of the file's identity
    stats = validate_embeddings(path, 8, rows)
    assert stats.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_streamed_part_hashes_the_same(tmp_path):
    from upath import UPath

    path = write(tmp_path, unit(30, 16, np.float32))
    remote = UPath(f"memory://hash-test-{tmp_path.name}/img_emb_0.npy")
    remote.write_bytes(path.read_bytes())
    assert validate_embeddings(remote, 16, 30).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_streamed_part_takes_rows_by_index_like_a_memory_map(tmp_path):
    """Remote parts (fsspec URLs) serve the kNN index's row reads: any order, repeats, one read per run."""
    from upath import UPath

    from laion_assets.sources.embeddings import StreamedNpy

    array = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float16)
    np.save(tmp_path / "img_emb_0.npy", array)
    streamed = StreamedNpy(UPath(f"file://{tmp_path / 'img_emb_0.npy'}"))
    rows = np.array([9, 3, 4, 5, 63, 3, 0, -1])
    assert np.array_equal(streamed[rows], array[rows]) and np.array_equal(streamed[10:20], array[10:20])
    with pytest.raises(IndexError, match="row index out of range for 64 rows"):
        streamed[np.array([64])]
