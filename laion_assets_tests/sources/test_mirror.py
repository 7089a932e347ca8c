"""The working copy of a remote data root brings the remote's current bytes, and only when they changed."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from upath import UPath

from laion_assets.core.locations import remote_version
from laion_assets.sources.mirror import STATE_DIR, Mirror
from laion_assets_tests.moto_s3 import moto_s3


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket on a real S3 API (moto's server on 127.0.0.1), shared by the module's s3 cases."""
    with moto_s3("mirror", tmp_path_factory.mktemp("aws")):
        yield "mirror"


@pytest.fixture(params=["memory", "local", "s3"])
def remote_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UPath]:
    if request.param == "memory":
        root = UPath(f"memory://laion-assets-mirror-{uuid.uuid4().hex}")
    elif request.param == "s3":  # no folders, no rename: a folder is a key prefix, a move a copy and a delete
        root = UPath(f"s3://{request.getfixturevalue('s3_bucket')}/{uuid.uuid4().hex}")
    else:
        root = UPath(f"local://{tmp_path / 'remote'}")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    if request.param == "memory":
        root.fs.rm(root.path, recursive=True)


@pytest.fixture
def downloads(remote_root: UPath, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every remote file the filesystem itself hands out (the real ``get_file``, counted)."""
    fs = remote_root.fs
    calls: list[str] = []
    real = fs.get_file

    def counting(rpath: str, lpath: str, *args: object, **kwargs: object) -> object:
        calls.append(rpath.rsplit("/", 1)[-1])
        return real(rpath, lpath, *args, **kwargs)

    monkeypatch.setattr(fs, "get_file", counting)
    return calls


def machines(tmp_path: Path, root: UPath) -> tuple[Mirror, Mirror]:
    """Two working copies of one data root, as on two machines."""
    return Mirror(tmp_path / "a", root), Mirror(tmp_path / "b", root)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_same_size_change_on_the_remote_is_pulled(tmp_path: Path, remote_root: UPath) -> None:
    a, b = machines(tmp_path, remote_root)
    write(a.local / "kv" / "aesthetic.kv", b"old-kv-1")
    write(a.local / "kv" / "index.json", b'{"n": 1}')
    write(a.local / "stats" / "score_histogram.json", b'{"bins": [1, 2]}')
    a.push(a.local / "kv")
    a.push(a.local / "stats" / "score_histogram.json")
    assert b.pull(b.local / "kv") and b.pull(b.local / "stats" / "score_histogram.json")
    assert (b.local / "kv" / "aesthetic.kv").read_bytes() == b"old-kv-1"

    # A rebuilds: same sizes, new bytes (a folder push, a single-file push, and a write by someone else).
    write(a.local / "kv" / "aesthetic.kv", b"new-kv-2")
    a.push(a.local / "kv")
    write(a.local / "stats" / "score_histogram.json", b'{"bins": [3, 4]}')
    a.push(a.local / "stats" / "score_histogram.json")
    (remote_root / "kv" / "index.json").write_bytes(b'{"n": 2}')

    b.pull(b.local / "kv")
    b.pull(b.local / "stats" / "score_histogram.json")
    assert (b.local / "kv" / "aesthetic.kv").read_bytes() == b"new-kv-2"
    assert (b.local / "kv" / "index.json").read_bytes() == b'{"n": 2}'
    assert (b.local / "stats" / "score_histogram.json").read_bytes() == b'{"bins": [3, 4]}'


def test_unchanged_files_are_not_downloaded_again(tmp_path: Path, remote_root: UPath, downloads: list[str]) -> None:
    a, b = machines(tmp_path, remote_root)
    write(a.local / "buckets" / "rating0.npy", b"0" * 64)
    write(a.local / "buckets" / "rating1.npy", b"1" * 64)
    write(a.local / "stats" / "h.json", b"{}")
    a.push(a.local / "buckets")
    a.push(a.local / "stats" / "h.json")

    # Push then pull on the same machine: the pushed files are already the remote's.
    assert a.pull(a.local / "buckets") and a.pull(a.local / "stats" / "h.json")
    assert downloads == []

    b.pull(b.local / "buckets")
    b.pull(b.local / "stats" / "h.json")
    assert sorted(downloads) == ["h.json", "rating0.npy", "rating1.npy"]
    downloads.clear()
    b.pull(b.local / "buckets")
    b.pull(b.local / "stats" / "h.json")
    assert downloads == []

    # One file changes: only that one comes down. (A folder push rewrites every file of the folder remotely, so
    # on filesystems that version by time all of them would.)
    write(a.local / "buckets" / "rating1.npy", b"2" * 64)
    a.push(a.local / "buckets" / "rating1.npy")
    b.pull(b.local / "buckets")
    assert downloads == ["rating1.npy"]
    assert (b.local / "buckets" / "rating1.npy").read_bytes() == b"2" * 64


def test_a_local_change_is_replaced_by_the_remote_content(tmp_path: Path, remote_root: UPath) -> None:
    a, b = machines(tmp_path, remote_root)
    write(a.local / "tags" / "0.parquet", b"remote")
    a.push(a.local / "tags")
    b.pull(b.local / "tags")
    write(b.local / "tags" / "0.parquet", b"edited")  # same size, changed here since the last sync
    b.pull(b.local / "tags")
    assert (b.local / "tags" / "0.parquet").read_bytes() == b"remote"
    # A file that was never synced (no record) is not trusted on its size either.
    write(b.local / "tags" / "0.parquet", b"foreign")
    (b.local / STATE_DIR / "records" / "tags" / "0.parquet.json").unlink()
    write(a.local / "tags" / "0.parquet", b"remote2")
    a.push(a.local / "tags")
    b.pull(b.local / "tags")
    assert (b.local / "tags" / "0.parquet").read_bytes() == b"remote2"


def test_remote_without_version_info_is_downloaded_every_time(
    tmp_path: Path, remote_root: UPath, downloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = remote_root.fs
    info, find = fs.info, fs.find

    def bare(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k in ("name", "size", "type")}

    monkeypatch.setattr(fs, "info", lambda path, **kw: bare(info(path, **kw)))

    def bare_find(path: str, **kw: object) -> object:
        found = find(path, **kw)
        return {n: bare(e) for n, e in found.items()} if isinstance(found, dict) else found

    monkeypatch.setattr(fs, "find", bare_find)

    a, b = machines(tmp_path, remote_root)
    write(a.local / "kv" / "aesthetic.kv", b"old-kv-1")
    a.push(a.local / "kv")
    assert not remote_version(fs.info((remote_root / "kv" / "aesthetic.kv").path))
    b.pull(b.local / "kv")
    write(a.local / "kv" / "aesthetic.kv", b"new-kv-2")
    a.push(a.local / "kv")
    b.pull(b.local / "kv")
    assert (b.local / "kv" / "aesthetic.kv").read_bytes() == b"new-kv-2"
    assert downloads == ["aesthetic.kv", "aesthetic.kv"]  # nothing tells the versions apart but the bytes


def test_records_are_never_mirrored(tmp_path: Path, remote_root: UPath) -> None:
    a, b = machines(tmp_path, remote_root)
    write(a.local / "subsets" / "x" / "part-0.parquet", b"x")
    write(a.local / "subsets" / "y" / "part-0.parquet", b"y")
    a.push(a.local / "subsets")
    b.pull(b.local / "subsets")
    assert (b.local / STATE_DIR / "records" / "subsets" / "y" / "part-0.parquet.json").is_file()
    # The records stay local, and nothing half-downloaded is left.
    remote_files = sorted(p.relative_to(remote_root).as_posix() for p in remote_root.rglob("*") if p.is_file())
    assert remote_files == ["subsets/x/part-0.parquet", "subsets/y/part-0.parquet"]
    assert not list((b.local / STATE_DIR / "tmp").iterdir())
    # A file the remote dropped goes, and so does its record.
    (a.local / "subsets" / "y" / "part-0.parquet").unlink()
    a.push(a.local / "subsets")
    b.pull(b.local / "subsets")
    assert not (b.local / "subsets" / "y" / "part-0.parquet").exists()
    assert not (b.local / STATE_DIR / "records" / "subsets" / "y" / "part-0.parquet.json").exists()


def test_downloads_left_by_a_dead_process_are_removed(tmp_path: Path, remote_root: UPath) -> None:
    a, b = machines(tmp_path, remote_root)
    write(a.local / "kv" / "aesthetic.kv", b"kv")
    a.push(a.local / "kv")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = write(b.local / STATE_DIR / "tmp" / f"{int(dead.stdout)}-0123.part", b"half")
    running = write(b.local / STATE_DIR / "tmp" / f"{os.getpid()}-4567.part", b"in flight")
    b.pull(b.local / "kv")
    assert not leftover.exists() and running.exists()


def relinked(folder: Path, rewrite: dict[str, bytes]) -> None:
    """Replace ``folder`` as ``build_tags`` does: unchanged files hard-linked into a new folder, which is swapped in."""
    new = folder.with_name(folder.name + ".new")
    new.mkdir()
    for file in folder.iterdir():
        if file.name in rewrite:
            write(new / file.name, rewrite[file.name])
        else:
            os.link(file, new / file.name)
    folder.rename(folder.with_name(folder.name + ".old"))
    new.rename(folder)
    for file in folder.with_name(folder.name + ".old").iterdir():
        file.unlink()
    folder.with_name(folder.name + ".old").rmdir()


def test_push_changes_uploads_only_changed_files(
    tmp_path: Path, remote_root: UPath, downloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = machines(tmp_path, remote_root)
    tags = a.local / "tags"
    for i in range(3):
        write(tags / f"part-{i}.parquet", f"part {i} v1".encode())
    write(tags / "_table.json", b"table v1")
    fs = remote_root.fs
    uploads: list[str] = []
    real_put = fs.put_file

    def put(lpath: str, rpath: str, *args: object, **kwargs: object) -> object:
        if Path(lpath).read_bytes() == b"part 2 fails":
            raise OSError("connection reset")
        uploads.append(rpath.rsplit("/", 1)[-1])
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", put)
    assert a.push_changes(tags, [], "_table.json") == [
        "_table.json",
        "part-0.parquet",
        "part-1.parquet",
        "part-2.parquet",
    ]
    uploads.clear()

    relinked(tags, {"part-1.parquet": b"part 1 v2", "_table.json": b"table v2"})
    assert a.push_changes(tags, ["part-1.parquet"], "_table.json") == ["_table.json", "part-1.parquet"]
    assert uploads == [
        "part-1.parquet",
        "_table.json",
    ]  # the part (to a temporary sibling, then moved), the record last
    assert (remote_root / "tags" / "part-1.parquet").read_bytes() == b"part 1 v2"
    assert a.pull(tags) and downloads == []  # carried-over files are still known to be the remote's

    # An upload that fails leaves the remote folder as it was, with no temporary sibling.
    before = {p.name: p.read_bytes() for p in (remote_root / "tags").iterdir()}
    relinked(tags, {"part-2.parquet": b"part 2 fails", "_table.json": b"table v3"})
    with pytest.raises(OSError, match="connection reset"):
        a.push_changes(tags, ["part-2.parquet"], "_table.json")
    assert {p.name: p.read_bytes() for p in (remote_root / "tags").iterdir()} == before
    assert sorted(p.name for p in remote_root.iterdir()) == ["tags"]

    # A file gone from the folder goes from the remote, after the record; another machine pulls the new state.
    relinked(tags, {"part-2.parquet": b"part 2 v2", "_table.json": b"table v4"})
    (tags / "part-0.parquet").unlink()
    a.push_changes(tags, ["part-2.parquet"], "_table.json")
    assert b.pull(b.local / "tags")
    assert {p.name: p.read_bytes() for p in (b.local / "tags").iterdir()} == {
        "_table.json": b"table v4", "part-1.parquet": b"part 1 v2", "part-2.parquet": b"part 2 v2"
    }  # fmt: skip
