import io

import fsspec
import numpy as np
import polars as pl
import pytest

from laion_assets.sources.watch import look


def npy_bytes(rows, dim=8):
    buffer = io.BytesIO()
    np.save(buffer, np.ones((rows, dim), dtype=np.float16))
    return buffer.getvalue()


def parquet_bytes(rows):
    buffer = io.BytesIO()
    pl.DataFrame({"URL": [f"u{i}" for i in range(rows)]}).write_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture
def memfs(request):
    fs = fsspec.filesystem("memory")
    root = f"/watch-{request.node.name}"
    yield fs, root
    fs.rm(root, recursive=True)


def put(fs, path, data):
    with fs.open(path, "wb") as f:
        f.write(data)


def test_memory_url_parts_become_ready_once_whole_and_unchanged(memfs):
    fs, root = memfs
    url = f"memory://{root}"
    put(fs, f"{root}/img_emb/img_emb_0.npy", npy_bytes(5))
    put(fs, f"{root}/metadata/metadata_0.parquet", parquet_bytes(5))
    put(fs, f"{root}/img_emb/img_emb_1.npy", npy_bytes(5)[:-7])  # still being written
    put(fs, f"{root}/metadata/metadata_1.parquet", parquet_bytes(5))
    put(fs, f"{root}/img_emb/img_emb_2.npy", npy_bytes(4))  # rows disagree with its metadata
    put(fs, f"{root}/metadata/metadata_2.parquet", parquet_bytes(5))
    put(fs, f"{root}/metadata/metadata_3.parquet", parquet_bytes(5)[:-4])  # no footer, no partner
    first = look(url, set(), {})
    assert first.ready == [] and list(first.settling) == ["00000"]
    assert "bytes but its header announces" in first.waiting["00001"]
    assert "has 4 rows but" in first.waiting["00002"]
    assert "partner file is not there yet" in first.waiting["00003"]
    second = look(url, set(), first.settling)
    assert second.ready == ["00000"]
    assert look(url, {"00000"}, second.settling).ready == []


def test_a_truncated_parquet_footer_waits(memfs):
    fs, root = memfs
    put(fs, f"{root}/img_emb/img_emb_7.npy", npy_bytes(3))
    put(fs, f"{root}/metadata/metadata_7.parquet", parquet_bytes(3)[:-10])
    result = look(f"memory://{root}", set(), {})
    assert result.ready == [] and "no parquet footer yet" in result.waiting["00007"]


def test_local_path_and_changed_fingerprint(tmp_path):
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    (tmp_path / "img_emb" / "img_emb_00.npy").write_bytes(npy_bytes(2))
    (tmp_path / "metadata" / "metadata_00.parquet").write_bytes(parquet_bytes(2))
    first = look(str(tmp_path), set(), {})
    stale_cursor = {"00000": first.settling["00000"] + "x"}
    assert look(str(tmp_path), set(), stale_cursor).ready == []
    assert look(str(tmp_path), set(), first.settling).ready == ["00000"]
