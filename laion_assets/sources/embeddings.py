"""Checks on stored CLIP embeddings: width, dtype, row count, finite values and unit norms.

Local parts are read through a memory map in chunks, so a 1M x 768 part never sits in RAM as float32 at once;
parts behind an fsspec URL are streamed chunk by chunk with range reads (never copied whole first).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, is_local, open_binary

# Stored embeddings are L2-normalised before the float16 cast; a norm off by more than this is an error.
NORM_TOLERANCE = 0.02

CHUNK_ROWS = 65536
_LOW_SQUARE, _HIGH_SQUARE = np.float32((1 - NORM_TOLERANCE) ** 2), np.float32((1 + NORM_TOLERANCE) ** 2)
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

    def __getitem__(self, rows: slice | np.ndarray | list[int]) -> np.ndarray:
        if not isinstance(rows, slice):
            return self._take(np.asarray(rows, dtype=np.int64))
        if rows.step not in (None, 1):
            raise TypeError("StreamedNpy supports contiguous row slices and integer row arrays only")
        start, stop, _ = rows.indices(self.shape[0])
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        count = max(stop - start, 0)
        with open_binary(self.path) as f:
            f.seek(self.offset + start * row_bytes)
            data = f.read(count * row_bytes)
        if len(data) != count * row_bytes:
            raise BadInputError(f"{self.path}: file is truncated (rows {start}..{stop} not all present)")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))

    def _take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index (any order, repeats allowed): one range read per run of consecutive rows."""
        if rows.ndim != 1:
            raise TypeError("StreamedNpy takes a 1-D array of row numbers")
        n = self.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"{self.path}: row index out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        wanted = np.unique(rows)
        out = np.empty((len(wanted), *self.shape[1:]), dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        for run in np.split(np.arange(len(wanted)), breaks):
            if run.size:
                first, last = int(wanted[run[0]]), int(wanted[run[-1]])
                out[run] = self[first : last + 1]
        return out[np.searchsorted(wanted, rows)]


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


# Rows per step of the fused pass: the raw and float32 chunks (1.5 + 3 MiB at 768-d) stay in the CPU's cache from
# the read through the conversion, the norms and every head's product, and both buffers are reused, so nothing is
# page-faulted in per chunk. One value for every caller: BLAS results can depend on a row's place in its chunk,
# and the CLI's scores must equal the asset's bit for bit.
SCAN_CHUNK_ROWS = 2048

# Bytes hashed per read past the rows (trailing bytes a header does not count; normally none).
_TAIL_BLOCK = 1 << 20

ChunkSink = Callable[[int, np.ndarray], None]
"""Called with ``(start_row, float32 chunk)`` for every chunk of a pass; the chunk is valid only during the call."""


def _read_header(f: BinaryIO, path: Location) -> tuple[tuple[int, ...], np.dtype, int]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read as .npy: {exc}") from exc
    if fortran and len(shape) > 1:
        raise BadInputError(f"{path}: Fortran-ordered .npy is not supported; save it C-ordered")
    if len(shape) != 2:
        raise BadInputError(f"{path}: embeddings must be 2-D (rows, dim), got shape {tuple(shape)}")
    if np.dtype(dtype) not in ALLOWED_DTYPES:
        raise BadInputError(f"{path}: embeddings dtype is {np.dtype(dtype)}, expected float16 or float32")
    return tuple(shape), np.dtype(dtype), f.tell()


def _read_exactly(f: BinaryIO, view: memoryview, path: Location, start: int, stop: int) -> None:
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise BadInputError(f"{path}: file is truncated (rows {start}..{stop} not all present)")
        done += got


def _map_rows(path: Location, dtype: np.dtype, offset: int, rows: int, dim: int) -> np.memmap:
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(rows, dim))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read as .npy: file is truncated ({exc})") from exc


class _Float32:
    """Converts raw float16 chunks to float32 in one reused buffer (torch's vectorised kernel; exact)."""

    def __init__(self, rows: int, dim: int) -> None:
        import torch  # here, not at the top: loading the definitions must not pay for torch

        self.buffer = np.empty((rows, dim), dtype=np.float32)
        self.target = torch.from_numpy(self.buffer)
        self.torch = torch

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            source = self.torch.from_numpy(raw)
        n = raw.shape[0]
        self.target[:n].copy_(source)
        return self.buffer[:n]


def float32_converter(rows: int, dim: int, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """A function turning a raw (<= rows, dim) chunk of ``dtype`` into float32 (the same values, exactly)."""
    if dtype == np.float32:
        return np.asarray
    return _Float32(rows, dim)


def check_chunk(path: str | Location, start: int, chunk: np.ndarray) -> tuple[float, float]:
    """Check a float32 chunk (finite values, non-zero unit L2 norms); returns its (min, max) norm.

    Raises naming the file and the first bad row: rows with NaN/Inf first, then zero vectors, then norms off by
    more than :data:`NORM_TOLERANCE`, as :func:`validate_embeddings` always has. A NaN or Inf anywhere in a row
    makes its squared norm non-finite, so the one pass computing the squared norms also finds them.
    """
    if not len(chunk):
        return np.inf, -np.inf
    squares = np.vecdot(chunk, chunk)  # one pass; the norm bounds are compared squared, no sqrt per row
    suspect = np.flatnonzero(~np.isfinite(squares))
    for row in suspect:  # a finite but huge float32 row overflows its norm: that is a bad norm, not a NaN
        if not np.isfinite(chunk[row]).all():
            raise BadInputError(f"{path}: row {start + int(row)} has NaN or Inf values")
    zero = squares == 0
    if zero.any():
        raise BadInputError(f"{path}: row {start + int(np.argmax(zero))} is a zero vector (norm 0)")
    off = ~((squares >= _LOW_SQUARE) & (squares <= _HIGH_SQUARE))
    if off.any():
        row = int(np.argmax(off))
        raise BadInputError(
            f"{path}: row {start + row} has L2 norm {np.sqrt(squares[row]):.4f}; stored embeddings must be "
            f"L2-normalised (tolerance {NORM_TOLERANCE})"
        )
    return float(np.sqrt(squares.min())), float(np.sqrt(squares.max()))


def scan_embeddings(
    path: str | Location,
    expected_dim: int | None = None,
    expected_rows: int | None = None,
    rows_from: str | Location = "its metadata",
    make_sink: Callable[[int, int], ChunkSink] | None = None,
    validate: bool = True,
    sha256: bool = False,
    chunk_rows: int = SCAN_CHUNK_ROWS,
) -> EmbeddingStats:
    """One pass over an embeddings file: checks, the file's sha256 and a sink (e.g. scoring heads), chunk by chunk.

    The file is read once, in order: a local file through a memory map (no copy), a URL as one streamed read into
    a reused buffer; each chunk is converted to float32 once, checked (with ``validate``: finite values, unit norms,
    see :func:`check_chunk`) and handed to the sink that ``make_sink(rows, dim)`` returns once the header is read
    (it may raise, e.g. on a width its heads do not take). Width and row count are checked before any row is
    read. With ``sha256`` the whole file (header, rows, trailing bytes) is hashed from the same bytes. Errors name
    the file, and the row where one is at fault.
    """
    path = Path(path) if isinstance(path, str) else path
    try:
        f = open(path, "rb", buffering=0) if is_local(path) else open_binary(path)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read as .npy: {exc}") from exc
    with f:
        (rows, dim), dtype, offset = _read_header(f, path)
        if expected_dim is not None and dim != expected_dim:
            raise BadInputError(f"{path}: embedding width is {dim}, expected {expected_dim}")
        if expected_rows is not None and rows != expected_rows:
            raise BadInputError(f"{path}: {rows} embedding rows but {rows_from} has {expected_rows} rows")
        sink = make_sink(rows, dim) if make_sink is not None else None
        digest = None
        if sha256:
            f.seek(0)
            digest = hashlib.sha256(f.read(offset))
        step = max(1, min(chunk_rows, rows))
        mapped = _map_rows(path, dtype, offset, rows, dim) if is_local(path) and rows else None
        raw = np.empty((step, dim), dtype=dtype) if mapped is None else None
        to_float32 = float32_converter(step, dim, dtype)
        norm_min, norm_max = np.inf, -np.inf
        for start in range(0, rows, step):
            n = min(step, rows - start)
            if mapped is not None:  # page-cache pages mapped in place: no copy, and few page faults (fault-around)
                chunk_raw = np.asarray(mapped[start : start + n])
            else:  # a URL: one sequential streamed read into the reused buffer
                chunk_raw = raw[:n]  # type: ignore[index]
                _read_exactly(f, memoryview(chunk_raw).cast("B"), path, start, start + n)
            if digest is not None:
                digest.update(memoryview(chunk_raw).cast("B"))
            chunk = to_float32(chunk_raw)
            if validate:
                low, high = check_chunk(path, start, chunk)
                norm_min, norm_max = min(norm_min, low), max(norm_max, high)
            if sink is not None:
                sink(start, chunk)
        del mapped
        if digest is not None:
            f.seek(offset + rows * dim * dtype.itemsize)
            while block := f.read(_TAIL_BLOCK):  # bytes past the rows, if any
                digest.update(block)
    sha = digest.hexdigest() if digest is not None else ""
    return EmbeddingStats(rows, dim, str(dtype), float(norm_min), float(norm_max), sha)


def validate_embeddings(
    path: str | Location,
    expected_dim: int,
    expected_rows: int | None = None,
    rows_from: str | Location = "its metadata",
) -> EmbeddingStats:
    """Check an embeddings file and return its stats; any problem raises naming the file and row.

    The file's sha256 is computed in the same pass over the bytes (header, rows, any trailing bytes), so the
    release can name the exact input without reading every part a second time. This is :func:`scan_embeddings`
    with no sinks: scoring runs the same pass with its heads as sinks.
    """
    return scan_embeddings(path, expected_dim, expected_rows, rows_from, sha256=True)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)
