"""LAION's on-disk key-value files (``static_ondisk_kv``): hash -> score records, sorted, no header.

Each record is ``struct.pack(fmt, hash, *values)`` with ``fmt`` ``"<qe"`` (V1 aesthetic score) or ``"<qee"``
(punsafe, pwatermark). Records are sorted by the signed int64 hash; rows with a null or NaN value are dropped;
a hash seen twice keeps its first row (shard order), as laion-aesthetic's de-duplication does. Lookups are
binary searches over a memory map, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError, LaionAssetsError

AESTHETIC_FORMAT = "<qe"
SAFETY_FORMAT = "<qee"
# Rows sorted in memory at once before they are spilled as a sorted run (10 bytes each for "<qe").
RUN_ROWS = 4_000_000
# Rows read from each run per merge step.
MERGE_BLOCK = 262_144


class MissingKeyError(LaionAssetsError, KeyError):
    """A looked-up hash is not in the KV file."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def record_dtype(fmt: str, names: Sequence[str] | None = None) -> np.dtype:
    """The packed numpy dtype of one record of ``fmt`` (``"<q"`` key then ``e`` half-float values)."""
    if not fmt.startswith("<q") or set(fmt[2:]) - {"e"} or len(fmt) < 3:
        raise ValueError(f"unsupported KV record format {fmt!r}: expected '<q' followed by one or more 'e'")
    n = len(fmt) - 2
    names = list(names) if names is not None else [f"v{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{fmt!r} holds {n} values but {len(names)} names were given")
    dtype = np.dtype([("hash", "<i8"), *[(name, "<f2") for name in names]])
    assert dtype.itemsize == struct.calcsize(fmt)
    return dtype


def _clean(keys: np.ndarray, values: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Pack one batch into records, dropping rows with a missing key or any null/NaN value."""
    keys = np.asarray(keys)
    keep = np.ones(keys.shape[0], dtype=bool)
    if np.ma.isMaskedArray(keys):
        keep &= ~np.ma.getmaskarray(keys)
    out = np.empty(keys.shape[0], dtype=dtype)
    out["hash"] = np.asarray(keys, dtype=np.int64)
    for name, column in zip(dtype.names[1:], values, strict=True):
        column = np.asarray(column, dtype=np.float64)
        keep &= np.isfinite(column)
        out[name] = column.astype(np.float16)
    return out[keep]


def _write_run(records: np.ndarray, folder: Path, index: int) -> Path:
    # A stable sort keeps the first row of a repeated hash first, so de-duplication keeps it.
    order = np.argsort(records["hash"], kind="stable")
    path = folder / f"run-{index:05d}.bin"
    records[order].tofile(path)
    return path


def _dedup(block: np.ndarray, last: int | None) -> np.ndarray:
    """Drop records whose hash equals the previous one (block is sorted; ``last`` is the previous block's end)."""
    if block.size == 0:
        return block
    keys = block["hash"]
    keep = np.ones(block.size, dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    if last is not None:
        keep[0] = keys[0] != last
    return block[keep]


def _merge_runs(runs: list[Path], dtype: np.dtype, out, block_rows: int) -> int:
    """K-way merge of sorted run files in vectorised blocks; returns the number of records written."""
    maps = [np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.empty(0, dtype) for p in runs]
    pos = [0] * len(maps)
    pending = [np.empty(0, dtype) for _ in maps]
    last: int | None = None
    written = 0
    while True:
        for i, m in enumerate(maps):
            if pending[i].size == 0 and pos[i] < m.shape[0]:
                pending[i] = np.array(m[pos[i] : pos[i] + block_rows])
                pos[i] += pending[i].shape[0]
        live = [i for i in range(len(maps)) if pending[i].size]
        if not live:
            return written
        # Every record <= the smallest block end is final: no run can still hold a smaller hash.
        cut = min(int(pending[i]["hash"][-1]) for i in live)
        parts = []
        for i in live:
            n = int(np.searchsorted(pending[i]["hash"], cut, side="right"))
            parts.append(pending[i][:n])
            pending[i] = pending[i][n:]
        # Concatenated in run order and sorted stably: equal hashes keep input order.
        block = np.concatenate(parts)
        block = block[np.argsort(block["hash"], kind="stable")]
        block = _dedup(block, last)
        if block.size:
            block.tofile(out)
            last = int(block["hash"][-1])
            written += block.size


@dataclass(frozen=True)
class KVSummary:
    """What writing a KV file produced."""

    path: Path
    records: int
    dropped: int
    fmt: str


def write_kv(
    batches: Iterable[tuple[np.ndarray, Sequence[np.ndarray]]],
    path: str | Path,
    fmt: str = AESTHETIC_FORMAT,
    run_rows: int = RUN_ROWS,
    block_rows: int = MERGE_BLOCK,
) -> KVSummary:
    """Write ``(hashes, [values...])`` batches as a sorted KV file (external sort: memory bounded by ``run_rows``)."""
    path = Path(path)
    dtype = record_dtype(fmt)
    seen = 0
    kept = 0
    with tempfile.TemporaryDirectory(prefix=".kv-runs-", dir=path.parent if path.parent.exists() else None) as tmp:
        runs: list[Path] = []
        buffer: list[np.ndarray] = []
        buffered = 0
        for keys, values in batches:
            seen += len(keys)
            records = _clean(keys, values, dtype)
            buffer.append(records)
            buffered += records.size
            if buffered >= run_rows:
                runs.append(_write_run(np.concatenate(buffer), Path(tmp), len(runs)))
                buffer, buffered = [], 0
        if buffer or not runs:
            merged = np.concatenate(buffer) if buffer else np.empty(0, dtype)
            runs.append(_write_run(merged, Path(tmp), len(runs)))
            del buffer, merged
        with atomic_path(path) as out_path, open(out_path, "wb") as out:
            kept = _merge_runs(runs, dtype, out, block_rows)
    return KVSummary(path, kept, seen - kept, fmt)


class OnDiskKV:
    """Read-only view of a KV file: single and batched lookups by binary search over a memory map."""

    def __init__(self, path: str | Path, fmt: str = AESTHETIC_FORMAT, names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.dtype = record_dtype(fmt, names)
        self.record_size = self.dtype.itemsize
        self._struct = struct.Struct(fmt)
        if not self.path.is_file():
            raise BadInputError(f"{self.path}: KV file not found")
        size = self.path.stat().st_size
        if size % self.record_size:
            raise BadInputError(
                f"{self.path}: {size} bytes is not a whole number of {self.record_size}-byte {fmt!r} records; "
                "the file is truncated or has another format"
            )
        self.size = size // self.record_size
        # np.memmap refuses empty files; an empty KV simply has no keys.
        self._records = np.memmap(self.path, dtype=self.dtype, mode="r") if self.size else np.empty(0, self.dtype)
        self._keys = self._records["hash"]  # a strided view: no copy of the keys is ever made

    def __len__(self) -> int:
        return self.size

    def _find(self, key: int) -> int:
        lo, hi = 0, self.size
        keys = self._keys
        while lo < hi:
            mid = (lo + hi) // 2
            if keys[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def get(self, key: int) -> tuple[float, ...]:
        """Return the value(s) stored for one hash; raises :class:`MissingKeyError` when absent."""
        key = int(key)
        i = self._find(key)
        if i >= self.size or int(self._keys[i]) != key:
            raise MissingKeyError(f"{self.path}: hash {key} is not in the KV file")
        record = self._struct.unpack(bytes(self._records[i : i + 1].tobytes()))
        return tuple(float(v) for v in record[1:])

    def __getitem__(self, key: int) -> float | tuple[float, ...]:
        values = self.get(key)
        return values[0] if len(values) == 1 else values

    def __contains__(self, key: object) -> bool:
        try:
            self.get(int(key))  # type: ignore[arg-type]
        except (MissingKeyError, TypeError, ValueError):
            return False
        return True

    def positions(self, keys: Sequence[int] | np.ndarray) -> np.ndarray:
        """Vectorised binary search: index of each key's record, or -1 when absent."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        lo = np.zeros(keys.shape[0], dtype=np.int64)
        hi = np.full(keys.shape[0], self.size, dtype=np.int64)
        # log2(size) rounds of gathers from the memory map: only the touched pages are read.
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) // 2
            probe = np.full(keys.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
            probe[active] = self._keys[mid[active]]
            go_right = active & (probe < keys)
            go_left = active & ~go_right
            lo = np.where(go_right, mid + 1, lo)
            hi = np.where(go_left, mid, hi)
        found = lo < self.size
        found[found] = self._keys[lo[found]] == keys[found]
        return np.where(found, lo, -1)

    def get_many(self, keys: Sequence[int] | np.ndarray) -> np.ndarray:
        """Values for many hashes, shape (n, values) float32; raises naming the first missing hashes."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        pos = self.positions(keys)
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            shown = ", ".join(str(int(keys[i])) for i in missing[:5])
            raise MissingKeyError(f"{self.path}: {missing.size} of {keys.size} hashes are not in the KV file: {shown}")
        records = self._records[pos]
        return np.stack([records[name].astype(np.float32) for name in self.dtype.names[1:]], axis=1)

    def iter_records(self, chunk: int = MERGE_BLOCK) -> Iterator[np.ndarray]:
        """Yield the records in order, chunk by chunk."""
        for start in range(0, self.size, chunk):
            yield np.array(self._records[start : start + chunk])


# The KV files LAION released beside its tags: name -> (record format, value columns of the tags table).
KV_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aesthetic.kv": (AESTHETIC_FORMAT, ("aesthetic",)),
    "safety.kv": (SAFETY_FORMAT, ("punsafe", "pwatermark")),
}


def parquet_batches(
    files: Sequence[Path], columns: Sequence[str], batch_rows: int = 1 << 20
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yield ``(hash, [value columns])`` numpy batches from parquet files in order (nulls become NaN)."""
    import pyarrow.parquet as pq

    for path in files:
        parquet = pq.ParquetFile(path)
        missing = [c for c in ("hash", *columns) if c not in parquet.schema_arrow.names]
        if missing:
            raise BadInputError(f"{path}: column(s) {missing} missing; cannot build a KV file from it")
        for batch in parquet.iter_batches(columns=["hash", *columns], batch_size=batch_rows):
            hashes = batch.column(0)
            if hashes.null_count:
                raise BadInputError(f"{path}: {hashes.null_count} row(s) have a null hash")
            values = [
                batch.column(i + 1).to_numpy(zero_copy_only=False).astype(np.float64) for i in range(len(columns))
            ]
            yield hashes.to_numpy(), values
