"""A local working copy of a remote data root (``s3://…``, ``hf://…``, ``memory://…``).

Assets compute on local files (memory maps, atomic renames, streaming parquet writers) and the mirror moves
their inputs down and their outputs up at the asset's edges. Uploading a folder goes to a temporary sibling
first and replaces the old folder only once every file is up, so a failed push leaves the previous output whole.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from upath import UPath


@dataclass(frozen=True)
class Mirror:
    """Maps files under ``local`` to the same relative paths under ``remote``."""

    local: Path
    remote: UPath

    def _remote(self, path: Path) -> UPath:
        return self.remote / path.relative_to(self.local).as_posix()

    def pull(self, path: Path) -> bool:
        """Download ``path`` (file or folder) if the remote has it and the local copy is missing or differs."""
        remote = self._remote(path)
        if not remote.exists():
            return False
        if remote.is_dir():
            wanted = {r.relative_to(remote).as_posix(): r for r in remote.rglob("*") if r.is_file()}
            for rel, r in wanted.items():
                self._pull_file(r, path / rel)
            # The local folder is only a working copy: drop files the remote no longer has.
            for stale in [p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() not in wanted]:
                stale.unlink()
            return True
        self._pull_file(remote, path)
        return True

    @staticmethod
    def _pull_file(remote: UPath, local: Path) -> None:
        size = remote.stat().st_size
        if local.is_file() and local.stat().st_size == size:
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
        try:
            remote.fs.get_file(remote.path, str(tmp))
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)

    def push(self, path: Path) -> None:
        """Upload ``path`` (file or folder); a folder replaces the remote folder only once fully uploaded."""
        remote = self._remote(path)
        fs = remote.fs
        if path.is_file():
            remote.parent.mkdir(parents=True, exist_ok=True)
            fs.put_file(str(path), remote.path)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            if remote.exists():
                fs.rm(remote.path, recursive=True)
            return
        staging = remote.parent / f".{remote.name}.{uuid.uuid4().hex}.tmp"
        try:
            for file in files:
                target = staging / file.relative_to(path).as_posix()
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.put_file(str(file), target.path)
            if remote.exists():
                fs.rm(remote.path, recursive=True)
            fs.mv(staging.path, remote.path, recursive=True)
        finally:
            if staging.exists():
                fs.rm(staging.path, recursive=True)
