import os
import uuid

import numpy as np
import pytest
from fsspec import register_implementation
from fsspec.implementations.memory import MemoryFileSystem
from upath import UPath

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import (
    changed_fields,
    file_sha256,
    is_local,
    list_folder,
    location,
    read_parquet,
    stat_fingerprint,
)
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.sources.embeddings import StreamedNpy, open_embeddings, validate_embeddings
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.metadata import read_metadata
from laion_assets.sources.mirror import Mirror


@pytest.fixture
def memory_root():
    root = UPath(f"memory://laion-assets-test-{uuid.uuid4().hex}")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    root.fs.rm(root.path, recursive=True)


def upload(local, remote):
    for path in local.rglob("*"):
        if path.is_file():
            target = remote / path.relative_to(local).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_location_kinds():
    assert is_local(location("data/models")) and location("data/models") == PROJECT_DIR / "data/models"
    assert not is_local(location("memory://bucket/x"))
    assert location("s3://bucket/prefix").protocol == "s3"


def test_remote_parts_are_discovered_and_streamed(small_sample, memory_root):
    upload(small_sample, memory_root / "src")
    parts = discover_parts(str(memory_root / "src"))
    local = discover_parts(small_sample)
    assert [p.key for p in parts] == [p.key for p in local]
    array = open_embeddings(parts[1].embeddings)
    assert isinstance(array, StreamedNpy)
    expected = np.load(local[1].embeddings)
    assert array.shape == expected.shape and array.dtype == expected.dtype
    assert np.array_equal(array[10:25], expected[10:25]) and np.array_equal(array[395:999], expected[395:])
    stats = validate_embeddings(parts[1].embeddings, 768, expected.shape[0])
    assert stats.rows == expected.shape[0]
    assert read_metadata(parts[1].metadata).equals(read_metadata(local[1].metadata))
    assert read_parquet(parts[0].metadata).height == 400


def test_truncated_remote_npy_is_named(small_sample, memory_root):
    data = (small_sample / "img_emb" / "img_emb_0.npy").read_bytes()
    (memory_root / "img_emb_0.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"img_emb_0\.npy: file is truncated"):
        validate_embeddings(memory_root / "img_emb_0.npy", 768)


def test_mirror_round_trip_replaces_folders_whole(tmp_path, memory_root):
    mirror = Mirror(tmp_path / "work", memory_root / "out")
    folder = tmp_path / "work" / "subsets" / "a"
    folder.mkdir(parents=True)
    (folder / "x.parquet").write_bytes(b"1")
    (folder / "y.parquet").write_bytes(b"2")
    mirror.push(folder)
    (folder / "y.parquet").unlink()
    (folder / "x.parquet").write_bytes(b"33")
    mirror.push(folder)
    remote = memory_root / "out" / "subsets" / "a"
    assert sorted(p.name for p in remote.iterdir()) == ["x.parquet"]  # the old y is gone with the old folder
    assert (remote / "x.parquet").read_bytes() == b"33"
    assert not [p for p in (memory_root / "out" / "subsets").iterdir() if p.name.endswith(".tmp")]

    other = Mirror(tmp_path / "other", memory_root / "out")
    stale = tmp_path / "other" / "subsets" / "a" / "old.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    assert other.pull(tmp_path / "other" / "subsets" / "a")
    assert sorted(p.name for p in stale.parent.iterdir()) == ["x.parquet"]
    assert not other.pull(tmp_path / "other" / "nothing-there")
    single = tmp_path / "work" / "stats" / "h.json"
    single.parent.mkdir(parents=True)
    single.write_text("{}")
    mirror.push(single)
    assert (memory_root / "out" / "stats" / "h.json").read_text() == "{}"


class _NoVersionFS(MemoryFileSystem):
    """A filesystem whose info() says nothing that changes on a rewrite (like a plain HTTP server without ETag)."""

    protocol = "noversion"

    def info(self, path, **kwargs):
        info = super().info(path, **kwargs)
        return {k: v for k, v in info.items() if k in ("name", "size", "type")}


@pytest.mark.filterwarnings("ignore:UPath 'noversion' filesystem not explicitly implemented")
def test_a_rewrite_of_the_same_size_is_seen_with_or_without_version_information(tmp_path):
    register_implementation("noversion", _NoVersionFS, clobber=True)
    local = tmp_path / "part.bin"
    local.write_bytes(b"a" * 64)
    remote = UPath(f"noversion://fp-{uuid.uuid4().hex}/part.bin")
    remote.write_bytes(b"a" * 64)
    records = {}
    for path in (local, remote):
        records[path] = {**stat_fingerprint(path), "sha256": file_sha256(path)}
        assert changed_fields(records[path], path) == []
    assert stat_fingerprint(remote)["version"] is None
    stat = local.stat()
    local.write_bytes(b"b" * 64)
    os.utime(local, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: same size, same mtime
    assert [f.split()[0] for f in changed_fields(records[local], local)] == ["ctime_ns"]
    remote.write_bytes(b"b" * 64)  # same size, and the filesystem has no version to compare
    (change,) = changed_fields(records[remote], remote)
    assert change.startswith(f"sha256 {records[remote]['sha256']} -> ") and "gives no version" in change


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_listing_gives_the_fingerprints_a_stat_gives(where, tmp_path, memory_root):
    folder = (tmp_path / "files") if where == "local" else (memory_root / "files")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a.npy", "b.parquet"):
        (folder / name).write_bytes(name.encode())
    listed = list_folder(folder)
    assert sorted(listed) == ["a.npy", "b.parquet"]
    for name, entry in listed.items():
        assert str(entry.path) == str(folder / name)
        # The same fields and values as a stat (an info() request) of the file: the gate compares either way.
        assert entry.fingerprint == stat_fingerprint(folder / name)
        recorded = {**entry.fingerprint, "sha256": file_sha256(folder / name)}
        assert changed_fields(recorded, folder / name, entry.fingerprint) == []
    (folder / "a.npy").write_bytes(b"rewritten, longer")
    again = list_folder(folder)
    recorded = {**listed["a.npy"].fingerprint, "sha256": "x"}
    assert changed_fields(recorded, folder / "a.npy", again["a.npy"].fingerprint)[0].startswith("size 5 -> 17")
    assert list_folder(folder / "absent") == {}
