import polars as pl
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.sources.hashing import laion_hash
from laion_assets.sources.metadata import read_metadata
from laion_assets.sources.schemas import METADATA_COLUMNS

ROW = {"URL": "http://a/1.jpg", "TEXT": "a cat", "WIDTH": 10, "HEIGHT": 20, "similarity": 0.3, "punsafe": 0.1,
       "pwatermark": 0.2}  # fmt: skip


def test_columns_are_cast_and_hashed(tmp_path):
    path = tmp_path / "metadata_0.parquet"
    pl.DataFrame([ROW, {**ROW, "TEXT": None}]).write_parquet(path)
    frame = read_metadata(path)
    for name, dtype in METADATA_COLUMNS.items():
        assert frame.schema[name] == dtype
    assert frame["LANGUAGE"].to_list() == ["en", "en"]  # no LANGUAGE column: the declared language (default en)
    assert frame["hash"].to_list() == [laion_hash("http://a/1.jpg", "a cat"), laion_hash("http://a/1.jpg", None)]


def test_language_declared_for_a_source_without_one_but_null_stays_unknown_in_a_real_column(tmp_path):
    absent, all_null, real = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    pl.DataFrame([ROW, ROW]).write_parquet(absent)
    pl.DataFrame([{**ROW, "language": None}] * 2, schema_overrides={"language": pl.String}).write_parquet(all_null)
    pl.DataFrame([{**ROW, "LANGUAGE": "de"}, {**ROW, "LANGUAGE": None}]).write_parquet(real)
    assert read_metadata(absent)["LANGUAGE"].to_list() == ["en", "en"]
    assert read_metadata(all_null, language="fr")["LANGUAGE"].to_list() == ["fr", "fr"]
    assert read_metadata(absent, language="")["LANGUAGE"].to_list() == [None, None]  # nothing declared: unknown
    # A real language column: null is "unknown", never the declared language.
    assert read_metadata(real)["LANGUAGE"].to_list() == ["de", None]


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "metadata_4.parquet"
    pl.DataFrame([{k: v for k, v in ROW.items() if k != "similarity"}]).write_parquet(path)
    with pytest.raises(BadInputError, match=r"metadata_4\.parquet: missing column\(s\) \['similarity'\]"):
        read_metadata(path)


def test_unmappable_lowercase_columns_are_named(tmp_path):
    path = tmp_path / "metadata_0007.parquet"
    pl.DataFrame([{"image_path": "0.jpg", "caption": "c", "width": 1, "height": 2, "similarity": 0.3}]).write_parquet(
        path
    )
    with pytest.raises(BadInputError, match=r"metadata_0007\.parquet: missing column\(s\) \['URL'\]: cannot map URL"):
        read_metadata(path)


def test_clip_retrieval_columns_map_to_laion_columns(tmp_path):
    path = tmp_path / "metadata_0000.parquet"
    row = {"image_path": "00000.jpg", "caption": "a cat", "url": "http://a/1.jpg", "key": "000000000",
           "status": "success", "error_message": None, "width": 256, "height": 256, "original_width": 640,
           "original_height": 480, "exif": "{}", "similarity": 0.31, "NSFW": "UNLIKELY", "LICENSE": "?",
           "md5": "x"}  # fmt: skip
    pl.DataFrame([row]).write_parquet(path)
    frame = read_metadata(path)
    assert frame.row(0, named=True) | {"hash": 0} == {
        "URL": "http://a/1.jpg", "TEXT": "a cat", "WIDTH": 640.0, "HEIGHT": 480.0, "similarity": 0.31,
        "punsafe": None, "pwatermark": None, "LANGUAGE": "en", "hash": 0,
    }  # fmt: skip
    assert frame["hash"][0] == laion_hash("http://a/1.jpg", "a cat")
    swapped = read_metadata(path, swap_width_height=True)
    assert (swapped["WIDTH"][0], swapped["HEIGHT"][0]) == (480.0, 640.0)


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


def test_an_all_null_column_gives_way_to_a_filled_candidate(tmp_path):
    path = tmp_path / "metadata_8.parquet"
    row = {k: v for k, v in ROW.items() if k != "URL"}
    pl.DataFrame([{**row, "URL": None, "url": "http://a/2.jpg"}], schema_overrides={"URL": pl.String}).write_parquet(
        path
    )
    assert read_metadata(path)["URL"].to_list() == ["http://a/2.jpg"]
