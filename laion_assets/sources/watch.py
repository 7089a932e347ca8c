"""Watching a clip-retrieval folder (local path or fsspec URL) for new parts that are completely written.

A part is ready when both its ``img_emb_N.npy`` and ``metadata_N.parquet`` exist, the npy header is readable
and the file is as long as the header says, the parquet ends in its footer with the same row count, and the
sizes and modification times have not changed since the previous look (so a copy in progress that happens to
pass the other checks still waits one more look).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow.parquet as pq

from laion_assets.sources.layout import part_key

_EMB = re.compile(r"img_emb_(\d+)\.npy$")
_META = re.compile(r"metadata_(\d+)\.parquet$")
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class FileInfo:
    """One file as the filesystem lists it."""

    path: str
    size: int
    mtime: str


@dataclass(frozen=True)
class Candidate:
    """A part whose two files are both present (not yet known to be complete)."""

    number: int
    embeddings: FileInfo
    metadata: FileInfo

    @property
    def key(self) -> str:
        """Partition key of the part."""
        return part_key(self.number)

    @property
    def fingerprint(self) -> str:
        """Sizes and modification times of both files; a change means the part is still being written."""
        e, m = self.embeddings, self.metadata
        return f"{e.size}:{e.mtime}|{m.size}:{m.mtime}"


@dataclass
class WatchResult:
    """What one look at the folder found."""

    ready: list[str] = field(default_factory=list)
    settling: dict[str, str] = field(default_factory=dict)  # key -> fingerprint seen this time
    waiting: dict[str, str] = field(default_factory=dict)  # key -> why it is not ready


def filesystem(source: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec filesystem and root path of a local folder or URL."""
    fs, root = fsspec.core.url_to_fs(source)
    return fs, root.rstrip("/")


def _listing(fs: fsspec.AbstractFileSystem, folder: str, pattern: re.Pattern[str]) -> dict[int, FileInfo]:
    found: dict[int, FileInfo] = {}
    if not fs.isdir(folder):
        return found
    for info in fs.ls(folder, detail=True):
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        match = pattern.fullmatch(name)
        if match is None or info.get("type") == "directory":
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
        found[int(match.group(1))] = FileInfo(str(info["name"]), int(info.get("size") or 0), str(mtime))
    return found


def candidates(fs: fsspec.AbstractFileSystem, root: str) -> tuple[list[Candidate], dict[str, str]]:
    """Pair the folder's parts by number; a file whose partner is not there yet is reported as waiting."""
    embs = _listing(fs, f"{root}/img_emb", _EMB)
    metas = _listing(fs, f"{root}/metadata", _META)
    waiting = {}
    for number in sorted(set(embs) ^ set(metas)):
        lonely = embs.get(number) or metas[number]
        waiting[part_key(number)] = f"{lonely.path}: its partner file is not there yet"
    both = sorted(set(embs) & set(metas))
    return [Candidate(n, embs[n], metas[n]) for n in both], waiting


def npy_rows(fs: fsspec.AbstractFileSystem, info: FileInfo) -> int:
    """Rows of a complete 2-D .npy file; raises ValueError when its header is unreadable or the data is short."""
    with fs.open(info.path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{info.path}: unsupported .npy format version {version}")
        offset = f.tell()
    if len(shape) != 2:
        raise ValueError(f"{info.path}: shape {shape} is not 2-D")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if info.size != expected:
        raise ValueError(f"{info.path}: {info.size} bytes but its header announces {expected}")
    return int(shape[0])


def parquet_rows(fs: fsspec.AbstractFileSystem, info: FileInfo) -> int:
    """Rows of a complete parquet file; raises ValueError when its footer is missing or unreadable."""
    if info.size < 12:
        raise ValueError(f"{info.path}: {info.size} bytes, too short for a parquet file")
    with fs.open(info.path, "rb") as f:
        f.seek(info.size - 4)
        if f.read(4) != _PARQUET_MAGIC:
            raise ValueError(f"{info.path}: no parquet footer yet")
        f.seek(0)
        try:
            return int(pq.read_metadata(f).num_rows)
        except Exception as exc:  # pyarrow raises several types for a damaged footer
            raise ValueError(f"{info.path}: unreadable parquet footer: {exc}") from exc


def incomplete_reason(fs: fsspec.AbstractFileSystem, part: Candidate) -> str | None:
    """Why a part is not completely written, or None when both files are whole and agree on rows."""
    try:
        rows = npy_rows(fs, part.embeddings)
        meta_rows = parquet_rows(fs, part.metadata)
    except (ValueError, OSError) as exc:
        return str(exc)
    if rows != meta_rows:
        return f"{part.embeddings.path} has {rows} rows but {part.metadata.path} has {meta_rows}"
    return None


def look(source: str, known: set[str], previous: dict[str, str]) -> WatchResult:
    """Look at ``source`` once: parts that are whole and unchanged since ``previous`` are ready, others wait."""
    fs, root = filesystem(source)
    found, waiting = candidates(fs, root)
    result = WatchResult(waiting={k: v for k, v in waiting.items() if k not in known})
    for part in found:
        if part.key in known:
            continue
        reason = incomplete_reason(fs, part)
        if reason is not None:
            result.waiting[part.key] = reason
        elif previous.get(part.key) == part.fingerprint:
            result.ready.append(part.key)
        else:
            result.settling[part.key] = part.fingerprint
            result.waiting[part.key] = "complete, waiting one more look to see it unchanged"
    return result
