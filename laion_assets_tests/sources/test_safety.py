import numpy as np
import polars as pl
import pytest

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.sources.safety import SafetyIndex, build_safety_index


def write(path, rows, schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)


def test_index_dedups_fills_and_looks_up(tmp_path):
    src = tmp_path / "safety"
    write(src / "part-00000.parquet", [(5, 0.1, 0.2), (3, 0.9, None), (5, 0.7, 0.7)],
          {"hash": pl.Int64, "punsafe": pl.Float32, "pwatermark": pl.Float32})  # fmt: skip
    write(src / "sub" / "part-00001.parquet", [(-8, 0.3), (3, 0.0)], {"hash": pl.Int64, "punsafe": pl.Float64})
    summary = build_safety_index(src, tmp_path / "index")
    assert (summary.files, summary.rows_read, summary.unique_hashes) == (2, 5, 3)
    # hash 3: first occurrence wins (0.9) and its missing pwatermark becomes 0.5; -8's file has no pwatermark at all.
    assert summary.pwatermark_filled == 2
    index = SafetyIndex.open(tmp_path / "index")
    assert index.hashes.tolist() == [-8, 3, 5]
    punsafe, pwatermark = index.lookup(np.array([5, 42, 3, -8], dtype=np.int64))
    assert punsafe.null_count() == 1 and punsafe[1] is None
    np.testing.assert_allclose(punsafe.drop_nulls().to_numpy(), [0.1, 0.9, 0.3], atol=1e-7)
    np.testing.assert_allclose(pwatermark.drop_nulls().to_numpy(), [0.2, 0.5, 0.5], atol=1e-7)


def test_safety_table_without_hash_is_named(tmp_path):
    write(tmp_path / "s" / "joined-0003.parquet", [("http://a", "t", 0.1)], {"URL": pl.String, "TEXT": pl.String,
          "punsafe": pl.Float32})  # fmt: skip
    with pytest.raises(BadInputError, match=r"joined-0003\.parquet: safety table has no 'hash' column"):
        build_safety_index(tmp_path / "s", tmp_path / "index")


def test_safety_table_without_punsafe_is_named(tmp_path):
    write(tmp_path / "s" / "joined-0.parquet", [(1, 0.1)], {"hash": pl.Int64, "pwatermark": pl.Float32})
    with pytest.raises(BadInputError, match=r"joined-0\.parquet: safety table has no 'punsafe' column"):
        build_safety_index(tmp_path / "s", tmp_path / "index")


def test_missing_index_says_what_to_run(tmp_path):
    with pytest.raises(MissingUpstreamError, match="safety_tags is not materialized yet"):
        SafetyIndex.open(tmp_path / "nothing")
    with pytest.raises(MissingUpstreamError, match="safety table folder not found"):
        build_safety_index(tmp_path / "nope", tmp_path / "index")
