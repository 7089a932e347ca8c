"""Local paths and fsspec URLs (``s3://``, ``hf://``, ``memory://``, …) behind one path-like type.

Local paths stay plain :class:`pathlib.Path` subclasses (fast paths such as memory-mapping keep working);
anything with a ``scheme://`` becomes a :class:`upath.UPath` backed by fsspec, whose credentials come from the
usual environment (``AWS_*``, ``HF_TOKEN``, fsspec config), never from code.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import polars as pl
from upath import UPath

from laion_assets.core.paths import resolve

Location = Path | UPath


def location(path_or_url: str | Path) -> Location:
    """Return a local path (relative ones taken from the project folder) or a UPath for a URL."""
    text = str(path_or_url)
    if "://" in text and not text.startswith("file://"):
        return UPath(text)
    return resolve(text.removeprefix("file://"))


def is_local(path: Location) -> bool:
    """True for paths on the local filesystem (which can be memory-mapped and renamed atomically)."""
    return isinstance(path, Path)


def open_binary(path: Location) -> BinaryIO:
    """Open a local path or URL for reading bytes."""
    return path.open("rb")


def read_parquet(path: Location, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a parquet file from a local path or any fsspec URL."""
    if is_local(path):
        return pl.read_parquet(path, columns=columns)
    with open_binary(path) as f:
        return pl.read_parquet(f, columns=columns)


def parquet_columns(path: Location) -> list[str]:
    """Column names of a parquet file, read from its footer only."""
    import pyarrow.parquet as pq

    if is_local(path):
        return pq.read_schema(path).names
    with open_binary(path) as f:
        return pq.read_schema(f).names


def parquet_rows(path: Location) -> int:
    """Row count of a parquet file from its footer."""
    import pyarrow.parquet as pq

    if is_local(path):
        return pq.ParquetFile(path).metadata.num_rows
    with open_binary(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def file_sha256(path: str | Location) -> str:
    """Hex sha256 of a local or remote file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") if isinstance(path, str) else path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Keys of fsspec's ``info()`` that change when a remote object is rewritten, in order of preference: object
# stores' etags, hashes and generations first, then modification times (s3, gcs, azure, local, memory, http,
# webhdfs, ftp, hf).
_VERSION_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "generation",
    "version_id",
    "mtime",
    "LastModified",
    "last_modified",
    "created",
    "VersionId",
    "blob_id",
    "Last-Modified",
    "updated",
    "modificationTime",
    "modify",
)


def remote_version(info: Mapping[str, object]) -> dict[str, str]:
    """Every field of an fsspec ``info()`` (or ``find(detail=True)``) entry that changes on a rewrite, as text.

    Empty when the filesystem reports none (then only the content itself can tell two versions apart).
    """
    return {key: _comparable(info[key]) for key in _VERSION_KEYS if info.get(key) is not None}


def _comparable(value: object) -> str:
    # Some filesystems give a datetime from info() and the same instant as epoch seconds from a listing (memory).
    if isinstance(value, datetime):
        return repr(value.timestamp())
    return str(value)


def local_fingerprint(st: os.stat_result) -> dict[str, object]:
    """The fingerprint of a local file from its ``stat`` (size, mtime and ctime in ns)."""
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "ctime_ns": int(st.st_ctime_ns)}


def info_fingerprint(info: Mapping[str, object]) -> dict[str, object]:
    """The fingerprint of a remote file from an fsspec ``info()`` entry or a ``ls(detail=True)`` listing entry.

    Both give the same fields for the same object (a listing's entries are what ``info()`` answers), and values are
    compared as :func:`remote_version` writes them, so a listing taken once stands for one ``info()`` per file.
    """
    version = remote_version(info)
    key = next(iter(version), None)
    return {"size": int(info["size"]), "version": f"{key}={version[key]}" if key else None}  # type: ignore[call-overload]


def stat_fingerprint(path: Location) -> dict[str, object]:
    """Size plus what changes on a rewrite: a cheap "has it changed" key.

    Locally: size, mtime and ctime in ns (ctime cannot be set back by ``touch -r`` or ``cp -p``). Remotely: size and
    the first version key ``info()`` offers (etag, generation, Last-Modified, ...), or ``None`` when it offers none,
    in which case only the content can tell (:func:`changed_fields` then hashes it).
    """
    if is_local(path):
        return local_fingerprint(Path(path).stat())
    return info_fingerprint(path.fs.info(path.path))


def changed_fields(
    recorded: Mapping[str, object], path: Location, now: Mapping[str, object] | None = None
) -> list[str]:
    """What differs between a recorded :func:`stat_fingerprint` (with the file's ``sha256``) and the file now.

    ``now`` is the file's fingerprint taken from a listing of its folder (:func:`list_folder`), which then stands
    for a stat of the file; without it the file is stat-ed. ``["missing"]`` when it is gone. A remote file whose
    filesystem gives no version information is hashed again and compared by content, so a rewrite of the same size
    is never taken for the validated file.
    """
    if now is None:
        try:
            now = stat_fingerprint(path)
        except (OSError, KeyError):
            return ["missing"]
    changed = [f"{k} {recorded.get(k)} -> {now[k]}" for k in now if recorded.get(k) != now[k]]
    if not changed and not is_local(path) and now.get("version") is None and recorded.get("sha256"):
        digest = file_sha256(path)
        if digest != recorded["sha256"]:
            changed.append(f"sha256 {recorded['sha256']} -> {digest} (its filesystem gives no version to compare)")
    return changed


@dataclass(frozen=True)
class Listed:
    """One file of a folder listing: where it is and its fingerprint (what :func:`stat_fingerprint` gives)."""

    path: Location
    fingerprint: dict[str, object] = field(compare=False)


def forget_listings(path: UPath) -> None:
    """Drop what the filesystem cached about ``path`` and its parents, so the next ``ls``/``info`` asks the remote.

    s3fs (like gcsfs, adlfs) keeps every listing it made for the life of the process: a long-lived process (the
    sensor's code server, a run's process) would otherwise never see parts or outputs another machine wrote later.
    """
    path.fs.invalidate_cache(path.path)


def list_folder(folder: Location) -> dict[str, Listed]:
    """The files directly in ``folder`` by name, each with its fingerprint, from ONE listing (empty when absent).

    Locally one ``os.scandir`` (and a ``stat`` per entry, a system call); behind a URL one ``ls(detail=True)``,
    whose entries carry size and etag/mtime, so no request is made per file.
    """
    found: dict[str, Listed] = {}
    if is_local(folder):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file():
                        found[entry.name] = Listed(Path(folder) / entry.name, local_fingerprint(entry.stat()))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return found
    forget_listings(folder)
    try:
        entries = folder.fs.ls(folder.path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for info in entries:
        if info.get("type") != "file":
            continue
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        found[name] = Listed(folder / name, info_fingerprint(info))
    return found


def list_files(folder: Location, suffix: str) -> list[Location]:
    """Files below ``folder`` (recursively) whose name ends with ``suffix``, sorted by path."""
    return sorted((p for p in folder.rglob(f"*{suffix}") if p.is_file()), key=str)
