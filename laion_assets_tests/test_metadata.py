import polars as pl
import pytest

from laion_assets.errors import BadInputError
from laion_assets.hashing import laion_hash
from laion_assets.metadata import read_metadata
from laion_assets.schemas import METADATA_COLUMNS

ROW = {"URL": "http://a/1.jpg", "TEXT": "a cat", "WIDTH": 10, "HEIGHT": 20, "similarity": 0.3, "punsafe": 0.1,
       "pwatermark": 0.2}  # fmt: skip


def test_columns_are_cast_and_hashed(tmp_path):
    path = tmp_path / "metadata_0.parquet"
    pl.DataFrame([ROW, {**ROW, "TEXT": None}]).write_parquet(path)
    frame = read_metadata(path)
    for name, dtype in METADATA_COLUMNS.items():
        assert frame.schema[name] == dtype
    assert frame["LANGUAGE"].null_count() == 2  # absent LANGUAGE becomes an all-null column
    assert frame["hash"].to_list() == [laion_hash("http://a/1.jpg", "a cat"), laion_hash("http://a/1.jpg", None)]


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "metadata_4.parquet"
    pl.DataFrame([{k: v for k, v in ROW.items() if k != "pwatermark"}]).write_parquet(path)
    with pytest.raises(BadInputError, match=r"metadata_4\.parquet: missing column\(s\) \['pwatermark'\]"):
        read_metadata(path)


def test_uncastable_column_is_named(tmp_path):
    path = tmp_path / "metadata_5.parquet"
    pl.DataFrame([{**ROW, "WIDTH": "wide"}]).write_parquet(path)
    with pytest.raises(BadInputError, match=r"metadata_5\.parquet: a column has the wrong type"):
        read_metadata(path)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "metadata_6.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(BadInputError, match=r"metadata_6\.parquet: cannot read parquet"):
        read_metadata(path)
