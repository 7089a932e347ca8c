"""Checks on stored CLIP embeddings: width, dtype, row count, finite values and unit norms.

Local parts are read through a memory map in chunks, so a 1M x 768 part never sits in RAM as float32 at once;
parts behind an fsspec URL are streamed chunk by chunk with range reads (never copied whole first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, is_local, open_binary

# Stored embeddings are L2-normalised before the float16 cast; a norm off by more than this is an error.
NORM_TOLERANCE = 0.02

CHUNK_ROWS = 65536
ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


@dataclass(frozen=True)
class EmbeddingStats:
    """What validation learned about one embeddings file (``sha256`` is the whole file's, hashed while reading)."""

    rows: int
    dim: int
    dtype: str
    norm_min: float
    norm_max: float
    sha256: str = ""


class StreamedNpy:
    """A read-only, row-sliceable view of a remote .npy file: each slice is one range read."""

    def __init__(self, path: Location) -> None:
        self.path = path
        with open_binary(path) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            self.offset = f.tell()
        if fortran and len(shape) > 1:
            raise BadInputError(f"{path}: Fortran-ordered .npy is not supported; save it C-ordered")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("StreamedNpy supports contiguous row slices only")
        start, stop, _ = rows.indices(self.shape[0])
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        count = max(stop - start, 0)
        with open_binary(self.path) as f:
            f.seek(self.offset + start * row_bytes)
            data = f.read(count * row_bytes)
        if len(data) != count * row_bytes:
            raise BadInputError(f"{self.path}: file is truncated (rows {start}..{stop} not all present)")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))


def open_embeddings(path: str | Location) -> np.ndarray | StreamedNpy:
    """Open a 2-D float16/float32 .npy file (memory-mapped, or streamed for URLs); errors name the file."""
    path = Path(path) if isinstance(path, str) else path
    try:
        array = np.load(path, mmap_mode="r") if is_local(path) else StreamedNpy(path)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read as .npy: {exc}") from exc
    if array.ndim != 2:
        raise BadInputError(f"{path}: embeddings must be 2-D (rows, dim), got shape {array.shape}")
    if array.dtype not in ALLOWED_DTYPES:
        raise BadInputError(f"{path}: embeddings dtype is {array.dtype}, expected float16 or float32")
    return array


def iter_chunks(array: np.ndarray | StreamedNpy, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, float32 chunk)`` over a (memory-mapped) embeddings array."""
    for start in range(0, array.shape[0], rows):
        yield start, np.asarray(array[start : start + rows], dtype=np.float32)


def _data_offset(array: np.ndarray | StreamedNpy) -> int:
    return int(array.offset)  # np.memmap and StreamedNpy both know where the rows start


def _read_range(path: Location, start: int, stop: int | None = None) -> bytes:
    with open_binary(path) as f:
        f.seek(start)
        return f.read() if stop is None else f.read(stop - start)


def validate_embeddings(
    path: str | Location,
    expected_dim: int,
    expected_rows: int | None = None,
    rows_from: str | Location = "its metadata",
) -> EmbeddingStats:
    """Check an embeddings file and return its stats; any problem raises naming the file and row.

    The file's sha256 is computed in the same pass over the bytes (header, rows, any trailing bytes), so the
    release can name the exact input without reading every part a second time.
    """
    path = Path(path) if isinstance(path, str) else path
    array = open_embeddings(path)
    rows, dim = array.shape
    if dim != expected_dim:
        raise BadInputError(f"{path}: embedding width is {dim}, expected {expected_dim}")
    if expected_rows is not None and rows != expected_rows:
        raise BadInputError(f"{path}: {rows} embedding rows but {rows_from} has {expected_rows} rows")
    offset = _data_offset(array)
    digest = hashlib.sha256(_read_range(path, 0, offset))
    norm_min, norm_max = np.inf, -np.inf
    for start in range(0, rows, CHUNK_ROWS):
        raw = np.ascontiguousarray(array[start : start + CHUNK_ROWS])
        digest.update(memoryview(raw).cast("B"))
        chunk = raw.astype(np.float32)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise BadInputError(f"{path}: row {row} has NaN or Inf values")
        norms = np.linalg.norm(chunk, axis=1)
        if (norms == 0).any():
            row = start + int(np.argmax(norms == 0))
            raise BadInputError(f"{path}: row {row} is a zero vector (norm 0)")
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            row = start + int(np.argmax(off))
            raise BadInputError(
                f"{path}: row {row} has L2 norm {norms[row - start]:.4f}; stored embeddings must be "
                f"L2-normalised (tolerance {NORM_TOLERANCE})"
            )
        if len(norms):
            norm_min, norm_max = min(norm_min, float(norms.min())), max(norm_max, float(norms.max()))
    digest.update(_read_range(path, offset + rows * dim * array.dtype.itemsize))  # bytes past the rows, if any
    return EmbeddingStats(rows, dim, str(array.dtype), float(norm_min), float(norm_max), digest.hexdigest())


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)
