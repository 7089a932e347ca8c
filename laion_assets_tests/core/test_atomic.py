import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_assets.core.atomic import atomic_dir, atomic_path, save_npy, write_parquet


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_failed_directory_build_keeps_the_old_directory(tmp_path):
    folder = tmp_path / "out"
    with atomic_dir(folder) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(folder) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in folder.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_dir(folder) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["c"]  # replaced as a whole


def test_parquet_and_npy_writers(tmp_path):
    table = pa.table({"a": [1, 2]})
    path = write_parquet(table, tmp_path / "t.parquet", {"k": "v"})
    assert pq.read_table(path).equals(table)
    assert pq.read_schema(path).metadata[b"k"] == b"v"
    assert (path.stat().st_mode & 0o777) != 0o600  # follows the umask like any other file
    arr = save_npy(np.arange(4, dtype=np.float32).reshape(1, 4), tmp_path / "r.npy")
    assert np.load(arr).tolist() == [[0, 1, 2, 3]]
