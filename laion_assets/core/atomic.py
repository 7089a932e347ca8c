"""Write-then-rename helpers so that a failed step never leaves a half-written output behind."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_assets.core.errors import LaionAssetsError, OutputWriteError

# Fixed writer settings keep rebuilt files byte-identical (no timestamps or run ids inside).
_UMASK = os.umask(0)
os.umask(_UMASK)

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")

PARQUET_OPTIONS: dict = {"compression": "zstd", "compression_level": 3, "write_statistics": True}


@contextmanager
def naming_write_errors(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` (disk full, permissions, read-only or quota) into one naming the output being written.

    Libraries often raise without a file name (pyarrow: "Error writing bytes to file"), so the user would not know
    which output failed; our own errors pass through unchanged.
    """
    try:
        yield
    except LaionAssetsError:
        raise
    except Exception as exc:
        # Rust-backed writers (polars) report the OS error inside their own exception: "... (os error 28)".
        rust = _RUST_OS_ERROR.search(str(exc)) if not isinstance(exc, OSError) else None
        if not isinstance(exc, OSError) and rust is None:
            raise
        code = exc.errno if isinstance(exc, OSError) else int(rust.group(1))  # type: ignore[union-attr]
        reason = os.strerror(code) if code else str(exc)
        detail = "" if reason in str(exc) else f" ({exc})"
        raise OutputWriteError(f"{path}: writing failed: {reason}{detail}; nothing was replaced") from exc


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` as a whole only if the block succeeds."""
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)
            try:
                yield tmp
            except OutputWriteError as exc:  # name the output as it will be called, not its temporary folder
                raise OutputWriteError(str(exc).replace(str(tmp), str(path))) from exc.__cause__
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(table: pa.Table, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``table`` to ``path`` atomically with the project's fixed parquet settings."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
    return Path(path)


def save_npy(array: np.ndarray, path: str | Path) -> Path:
    """Save ``array`` to ``path`` as .npy atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return Path(path)
