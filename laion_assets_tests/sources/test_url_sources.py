from pathlib import Path

import polars as pl
import pytest

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.sources.url_sources import (
    ROW_COLUMN,
    discover_url_shards,
    find_url_shard,
    is_url_folder,
    read_url_shard,
)


def _shard(rows: int = 3, **extra: list) -> pl.DataFrame:
    data = {"URL": [f"http://127.0.0.1/{i}.jpg" for i in range(rows)], "TEXT": [f"caption {i}" for i in range(rows)]}
    data.update(extra)
    return pl.DataFrame(data)


def test_shards_are_numbered_by_their_file_names(tmp_path: Path) -> None:
    _shard().write_parquet(tmp_path / "part-00002.parquet")
    _shard().write_csv(tmp_path / "7.csv")
    (tmp_path / "README.txt").write_text("not a shard")
    shards = discover_url_shards(tmp_path)
    assert [(s.number, s.key, s.path.name) for s in shards] == [
        (2, "00002", "part-00002.parquet"),
        (7, "00007", "7.csv"),
    ]
    assert find_url_shard(tmp_path, "00007").path.name == "7.csv"
    assert is_url_folder(tmp_path)
    with pytest.raises(MissingUpstreamError, match="00003"):
        find_url_shard(tmp_path, "00003")


def test_two_files_with_one_number_are_an_error(tmp_path: Path) -> None:
    _shard().write_parquet(tmp_path / "a-1.parquet")
    _shard().write_csv(tmp_path / "b-001.csv")
    with pytest.raises(BadInputError, match="URL shard 1 also stored"):
        discover_url_shards(tmp_path)


def test_a_clip_retrieval_folder_is_not_a_url_folder(small_sample: Path, tmp_path: Path) -> None:
    assert not is_url_folder(small_sample)
    with pytest.raises(BadInputError, match="no numbered URL shards"):
        discover_url_shards(tmp_path)


def test_read_casts_laion_columns_and_numbers_rows(tmp_path: Path) -> None:
    path = tmp_path / "0.csv"
    _shard(WIDTH=[10, 20, 30], HEIGHT=[1, 2, 3], punsafe=[0.1, 0.2, 0.3], extra=["a", "b", "c"]).write_csv(path)
    frame = read_url_shard(path)
    assert frame[ROW_COLUMN].to_list() == [0, 1, 2]
    assert frame.schema["WIDTH"] == pl.Float64 and frame.schema["punsafe"] == pl.Float32
    assert frame["extra"].to_list() == ["a", "b", "c"]


def test_raw_laion5b_width_height_are_swapped_back(tmp_path: Path) -> None:
    path = tmp_path / "0.parquet"
    _shard(WIDTH=[640.0, 10.0, 1.0], HEIGHT=[480.0, 20.0, 2.0]).write_parquet(path)
    swapped = read_url_shard(path, swap_width_height=True)
    assert swapped["WIDTH"].to_list() == [480.0, 20.0, 2.0]
    assert swapped["HEIGHT"].to_list() == [640.0, 10.0, 1.0]
    assert read_url_shard(path)["WIDTH"].to_list() == [640.0, 10.0, 1.0]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame({"URL": ["http://x/1"]}), r"missing column\(s\) \['TEXT'\]"),
        (_shard(status=["a", "b", "c"]), "clash with img2dataset"),
        (pl.DataFrame({"URL": ["http://x/1", " "], "TEXT": ["a", "b"]}), "row 1 has an empty URL"),
        (_shard(similarity=["high", "low", "mid"]), "wrong type"),
    ],
)
def test_bad_shards_name_the_file_and_problem(tmp_path: Path, frame: pl.DataFrame, message: str) -> None:
    path = tmp_path / "00004.parquet"
    frame.write_parquet(path)
    with pytest.raises(BadInputError, match=message) as info:
        read_url_shard(path)
    assert str(path) in str(info.value)


def test_swap_needs_both_columns(tmp_path: Path) -> None:
    path = tmp_path / "0.parquet"
    _shard(WIDTH=[1.0, 2.0, 3.0]).write_parquet(path)
    with pytest.raises(BadInputError, match="WIDTH and HEIGHT"):
        read_url_shard(path, swap_width_height=True)
