"""A local working copy of a remote data root (``s3://…``, ``hf://…``, ``memory://…``).

Assets compute on local files (memory maps, atomic renames, streaming parquet writers) and the mirror moves
their inputs down and their outputs up at the asset's edges. Uploading a folder goes to a temporary sibling
first and replaces the old folder only once every file is up, so a push that fails while uploading leaves the
previous output whole. The replacement itself moves file by file (no object store renames a prefix at once): each
file is replaced whole, but a reader during those moves, or a push killed during them, sees old and new files mixed.
A folder whose files are mostly unchanged between pushes (the tags table) can instead be pushed with
:meth:`Mirror.push_changes`, which uploads only the files that changed and its record file last.

The remote is the source of truth: a pull keeps a local file only when it is known to hold the remote's current
bytes. For that, every file the mirror pulls or pushes gets a small record, ``<local>/.mirror/records/<path>.json``:
what the remote said about it then (size and the version fields of fsspec's ``info()``: etag, generation, mtime,
…, see :func:`~laion_assets.locations.remote_version`) and the local file's size and mtime once in place. The
records live outside every mirrored folder, so they are never pushed nor removed by a pull's clean-up, and each
is written whole by a rename, so several step processes can pull and push at once. Size alone says nothing
(score arrays, same-count KV stores and JSON files keep theirs when rewritten).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fsspec import AbstractFileSystem
from upath import UPath

from laion_assets.core.atomic import atomic_path
from laion_assets.core.locations import forget_listings, remote_version, stat_fingerprint

STATE_DIR = ".mirror"  # below the local root: sync records and in-flight downloads, never mirrored


@dataclass(frozen=True)
class Mirror:
    """Maps files under ``local`` to the same relative paths under ``remote``."""

    local: Path
    remote: UPath

    def _remote(self, path: Path) -> UPath:
        return self.remote / path.relative_to(self.local).as_posix()

    def pull(self, path: Path) -> bool:
        """Make ``path`` (file or folder) hold the remote's current content; False when the remote has nothing there.

        A file is downloaded unless its record shows that the remote still reports the version last pulled or
        pushed here and that the local copy was not changed since; a changed local copy is replaced, not kept.
        When the remote reports no version field at all, the file is downloaded on every pull (fsspec's
        ``checksum()``/``ukey()`` are derived from the same ``info()``, or from the URL over http, so they cannot
        tell two versions apart either). Local files of a folder that the remote no longer has are removed.
        """
        self._sweep_downloads()
        remote = self._remote(path)
        forget_listings(remote)
        fs = remote.fs
        try:
            info = fs.info(remote.path)
        except FileNotFoundError:
            return False
        if info.get("type") != "directory":
            self._pull_file(fs, remote.path, info, path)
            return True
        wanted = _listing(fs, remote.path)
        for rel, (name, entry) in wanted.items():
            self._pull_file(fs, name, entry, path / rel)
        # The local folder is only a working copy: drop files (and their records) the remote no longer has.
        for stale in [p for p in path.rglob("*") if p.is_file() and not self._is_state(p)]:
            if stale.relative_to(path).as_posix() not in wanted:
                stale.unlink()
                self._record_path(stale).unlink(missing_ok=True)
        return True

    def push(self, path: Path) -> None:
        """Upload ``path`` (file or folder); a folder replaces the remote folder's files only once fully uploaded.

        Its files are uploaded to a temporary sibling ``.<name>.<id>.tmp``, then moved over the remote folder's
        files one by one, then the remote files the folder no longer has are removed; the sibling is removed on
        failure too (a killed process leaves it behind).
        """
        remote = self._remote(path)
        forget_listings(remote)
        fs = remote.fs
        if path.is_file():
            remote.parent.mkdir(parents=True, exist_ok=True)
            fs.put_file(str(path), remote.path)
            self._record(path, fs.info(remote.path))
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and not self._is_state(p))
        # The remote folder is about to be replaced: what was recorded for its old files no longer holds.
        shutil.rmtree(self._records(path), ignore_errors=True)
        if not files:
            if remote.exists():
                fs.rm(remote.path, recursive=True)
            return
        names = [file.relative_to(path).as_posix() for file in files]
        old = _listing(fs, remote.path) if fs.exists(remote.path) else {}
        staging = remote.parent / f".{remote.name}.{uuid.uuid4().hex}.tmp"
        try:
            for name, file in zip(names, files, strict=True):
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.put_file(str(file), target.path)
            # Moved file by file, by name, over the old files, then the old folder's other files removed: an object
            # store has no folder rename (fsspec's recursive ``mv`` there copies the prefix's pseudo-directory
            # entries, which fails), and the remote folder is never absent on the way.
            for name in names:
                (remote / name).parent.mkdir(parents=True, exist_ok=True)
                fs.mv((staging / name).path, (remote / name).path)
            for stale in sorted(set(old) - set(names)):
                fs.rm(old[stale][0])
        finally:
            if staging.exists():
                fs.rm(staging.path, recursive=True)
        # Recorded as listed after the move (a move is a copy on object stores: new etags, new times).
        uploaded = _listing(fs, remote.path)
        for file in files:
            listed = uploaded.get(file.relative_to(path).as_posix())
            if listed is not None:
                self._record(file, listed[1])

    def push_changes(self, path: Path, written: Collection[str], commit: str) -> list[str]:
        """Upload only what changed in folder ``path``: ``written`` files, and any the remote does not hold as recorded.

        For a folder whose record file ``commit`` names its other files (the tags table's ``_table.json``): a file
        not in ``written`` (relative names) whose record shows the remote still holds the version pushed or pulled
        here, with the same size and mtime, is left alone; its ctime is not compared, since carrying a file over by
        a hard link changes only that. The others are uploaded to a temporary sibling first (a failure there leaves
        the remote folder as it was), then moved into place, then ``commit`` is uploaded, and last the remote's
        files that the folder no longer has are removed. Object stores have no atomic multi-file commit: between
        the first move and the commit upload a reader sees parts that the old record does not name, which the
        record's per-part ids refuse as a mixed table. Returns the relative names uploaded.
        """
        remote = self._remote(path)
        forget_listings(remote)
        fs = remote.fs
        files = {
            p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file() and not self._is_state(p)
        }
        listed = _listing(fs, remote.path) if fs.exists(remote.path) else {}
        changed = [
            rel for rel in files if rel == commit or rel in written or not self._pushed(files[rel], listed.get(rel))
        ]
        uploads = [rel for rel in changed if rel != commit]
        staging = remote.parent / f".{remote.name}.{uuid.uuid4().hex}.tmp"
        try:
            for rel in uploads:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.put_file(str(files[rel]), target.path)
            for rel in uploads:
                (remote / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.mv((staging / rel).path, (remote / rel).path)
        finally:
            if staging.exists():
                fs.rm(staging.path, recursive=True)
        if commit in files:
            fs.put_file(str(files[commit]), (remote / commit).path)
        for rel in sorted(set(listed) - set(files)):
            fs.rm(listed[rel][0])
            self._record_path(path / rel).unlink(missing_ok=True)
        # Recorded as listed after the moves; carried-over files get their new local stat (same version remotely).
        uploaded = _listing(fs, remote.path)
        for rel, file in files.items():
            entry = uploaded.get(rel)
            if entry is not None:
                self._record(file, entry[1])
        return changed

    def _pushed(self, local: Path, listed: tuple[str, Mapping[str, Any]] | None) -> bool:
        """Whether the remote holds ``local``'s bytes as last pushed or pulled here (size and mtime unchanged)."""
        if listed is None:
            return False
        try:
            record = json.loads(self._record_path(local).read_text())
        except (OSError, ValueError):
            return False
        now = stat_fingerprint(local)
        seen = record.get("local") if isinstance(record, dict) else None
        if not isinstance(seen, dict) or any(seen.get(k) != now[k] for k in ("size", "mtime_ns")):
            return False
        version, recorded = remote_version(listed[1]), record.get("version") or {}
        shared = recorded.keys() & version.keys()
        return (
            record.get("size") == int(listed[1]["size"])
            and bool(shared)
            and all(recorded[k] == version[k] for k in shared)
        )

    def _pull_file(self, fs: AbstractFileSystem, name: str, info: Mapping[str, Any], local: Path) -> None:
        if self._in_sync(local, info):
            return
        # Downloaded under the state folder, not beside the file: a concurrent push or clean-up of the same
        # folder must not see (upload or delete) another process's half-downloaded file.
        tmp = self._downloads / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(name, str(tmp))
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)
        self._record(local, info)

    def _in_sync(self, local: Path, info: Mapping[str, Any]) -> bool:
        version = remote_version(info)
        if not version or not local.is_file():
            return False
        try:
            record = json.loads(self._record_path(local).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("local") != stat_fingerprint(local):
            return False
        if record.get("size") != int(info["size"]):
            return False
        recorded = record.get("version") or {}
        # A listing and info() may report different fields (s3: HEAD has VersionId, LIST does not): compare those
        # both name; any one that differs means a rewrite.
        shared = recorded.keys() & version.keys()
        return bool(shared) and all(recorded[key] == version[key] for key in shared)

    def _record(self, local: Path, info: Mapping[str, Any]) -> None:
        record = {
            "size": int(info["size"]),
            "version": remote_version(info),
            "local": stat_fingerprint(local),
        }
        with atomic_path(self._record_path(local)) as tmp:
            tmp.write_text(json.dumps(record, sort_keys=True))

    def _records(self, local: Path) -> Path:
        """Where the records of ``local`` (a folder) or of the files below it are kept."""
        return self.local / STATE_DIR / "records" / local.relative_to(self.local)

    def _record_path(self, local: Path) -> Path:
        return self._records(local.parent) / f"{local.name}.json"

    @property
    def _downloads(self) -> Path:
        return self.local / STATE_DIR / "tmp"

    def _sweep_downloads(self) -> None:
        """Remove half-downloaded files left by processes that died (a killed step) instead of keeping them forever."""
        if not self._downloads.is_dir():
            return
        for leftover in self._downloads.glob("*.part"):
            pid = leftover.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                leftover.unlink(missing_ok=True)

    def _is_state(self, path: Path) -> bool:
        return path.relative_to(self.local).parts[:1] == (STATE_DIR,)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _listing(fs: AbstractFileSystem, folder: str) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Every file below a remote folder, by path relative to it: (its name on ``fs``, its listing entry)."""
    base = PurePosixPath(folder.rstrip("/"))
    found = fs.find(folder, detail=True)
    return {
        PurePosixPath(name).relative_to(base).as_posix(): (name, entry)
        for name, entry in found.items()
        if entry.get("type", "file") == "file"
    }
