"""LAION's subset rules as lazy polars queries over the aesthetic-tags table."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from laion_assets.core.atomic import PARQUET_OPTIONS, atomic_dir, naming_write_errors
from laion_assets.core.errors import BadInputError, OutputWriteError
from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS
from laion_assets.selection.tags import BUILT_FROM, recorded_ids, write_built_from
from laion_assets.selection.thresholds import PUNSAFE_MAX, PWATERMARK_MAX, V1Subset, V2Subset
from laion_assets.sources.metadata import ENGLISH, missing_url


def english_rows(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Keep English rows: ``LANGUAGE == "en"``; a null LANGUAGE is unknown, not English.

    A source without a language column has its declared language filled in at indexing (``metadata.read_metadata``),
    so laion2B-en's rows arrive here as English.
    """
    return tags.filter(pl.col("LANGUAGE") == ENGLISH)


def publishable(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Drop rows with a null or blank URL: img2dataset cannot fetch them, so no published subset carries them."""
    return tags.filter(~missing_url())


def v2_subset(tags: pl.LazyFrame, subset: V2Subset) -> pl.LazyFrame:
    """``improved_aesthetics_{t}plus``: English rows with a URL and ``AESTHETIC_SCORE >= t``, V2 subset columns."""
    return (
        publishable(english_rows(tags))
        .filter(pl.col("AESTHETIC_SCORE") >= subset.threshold)
        .select([pl.col(name).cast(dtype) for name, dtype in V2_SUBSET_COLUMNS.items()])
    )


def _safe() -> pl.Expr:
    return (pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX)


def safe_unique(tags: pl.LazyFrame) -> pl.LazyFrame:
    """LAION's V1 pre-filter: ``punsafe < 0.5``, ``pwatermark < 0.8`` (and a URL), then one row per hash (the first)."""
    return publishable(tags.filter(_safe())).unique(subset=["hash"], keep="first", maintain_order=True)


def v1_subset(tags: pl.LazyFrame, subset: V1Subset, filtered: bool = False) -> pl.LazyFrame:
    """laion-aesthetic / laion-art: safe, de-duplicated rows with ``aesthetic > t``, LAION's column order.

    ``filtered=True`` only selects the columns, for rows already chosen by :func:`v1_keep_rows`.
    """
    if not filtered:
        tags = safe_unique(tags).filter(pl.col("aesthetic") > subset.threshold)
    return tags.select([pl.col(name).cast(dtype) for name, dtype in V1_SUBSET_COLUMNS.items()])


def rule_funnel(files: Sequence[Path], rule: V1Subset | V2Subset, rows: int) -> dict[str, int]:
    """Where a rule's candidates went: rows meeting the score threshold, and how many each filter dropped.

    ``rows`` is the written subset's row count; for V1 the rows lost to de-duplication are what remains.
    """
    tags = pl.scan_parquet(list(files))
    url = ~missing_url()
    if isinstance(rule, V2Subset):
        candidate = pl.col("AESTHETIC_SCORE") >= rule.threshold
        english = (pl.col("LANGUAGE") == ENGLISH).fill_null(False)
        counts = tags.select(
            candidate.sum().alias("candidates"),
            (candidate & ~english).sum().alias("dropped_by_language"),
            (candidate & english & ~url).sum().alias("dropped_without_url"),
        )
        return {k: int(v) for k, v in counts.collect().row(0, named=True).items()}
    candidate = pl.col("aesthetic") > rule.threshold
    tagged = pl.col("punsafe").is_not_null() & pl.col("pwatermark").is_not_null()
    safe = _safe().fill_null(False)
    counts = tags.select(
        candidate.sum().alias("candidates"),
        (candidate & ~tagged).sum().alias("dropped_without_safety_tags"),
        (candidate & tagged & ~safe).sum().alias("dropped_unsafe_or_watermarked"),
        (candidate & safe & ~url).sum().alias("dropped_without_url"),
        (candidate & safe & url).sum().alias("kept_before_dedup"),
    )
    funnel = {k: int(v) for k, v in counts.collect().row(0, named=True).items()}
    funnel["dropped_by_language"] = 0  # laion-aesthetic and laion-art were cut from every language
    funnel["dropped_duplicate_hash"] = funnel.pop("kept_before_dedup") - rows
    return funnel


# A subset is a folder of parquet parts of at most SUBSET_PART_ROWS rows each (LAION published theirs in parts too):
# part-00000.parquet, part-00001.parquet, ... in row order. About 70 bytes a V2 row compressed: ~350 MB a part.
SUBSET_PART_ROWS = 5_000_000
SUBSET_PARTS = "part-*.parquet"
SUBSET_FILE = "part-00000.parquet"  # the first part; a subset always has it, empty when no row meets the rule
ROW_GROUP_ROWS = 1 << 18  # rows of one tags part are gathered into row groups of this size (fewer, larger groups)


def part_name(index: int) -> str:
    """The file name of a subset's ``index``-th part."""
    return f"part-{index:05d}.parquet"


def subset_files(folder: Path) -> list[Path]:
    """The parquet parts of a written subset folder, in row order; raises naming the folder when it holds none."""
    files = sorted(Path(folder).glob(SUBSET_PARTS))
    if not files:
        raise BadInputError(f"{folder}: no subset parts ({SUBSET_PARTS}) found; re-materialize the subset")
    return files


def _paths(files: Path | Sequence[Path]) -> list[Path]:
    """One subset file or its parts, as a list (a folder means its parts)."""
    if isinstance(files, (str, Path)):
        return subset_files(Path(files)) if Path(files).is_dir() else [Path(files)]
    return [Path(f) for f in files]


class PartWriter:
    """Append arrow tables to ``part-00000.parquet``, ``part-00001.parquet``, ... of at most ``part_rows`` rows each.

    Small tables are gathered into row groups of up to ``group_rows`` rows, so memory holds at most one row group
    besides the table being added. A part is opened only when a row goes into it; with no row at all, an empty
    ``part-00000.parquet`` is written (a subset always has its first part).
    """

    def __init__(self, folder: Path, schema: pa.Schema, part_rows: int = SUBSET_PART_ROWS,
                 group_rows: int = ROW_GROUP_ROWS) -> None:  # fmt: skip
        if part_rows < 1:
            raise BadInputError(f"part_rows must be at least 1, not {part_rows}")
        self.folder, self.schema, self.part_rows = Path(folder), schema, part_rows
        self.group_rows = max(1, min(group_rows, part_rows))
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_part = 0

    def write(self, table: pa.Table) -> None:
        """Queue rows; whole row groups are written out as soon as they are complete."""
        if table.num_rows:
            self.pending.append(table.select(self.schema.names).cast(self.schema))
            self.pending_rows += table.num_rows
            if self.pending_rows >= self.group_rows:
                self._flush(final=False)

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.paths.append(self.folder / part_name(len(self.paths)))
        with naming_write_errors(self.paths[-1]):
            self._writer = pq.ParquetWriter(self.paths[-1], self.schema, **PARQUET_OPTIONS)
        self._in_part = 0

    def _flush(self, final: bool) -> None:
        table = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        start = 0
        while start < table.num_rows:
            fresh = self._writer is None or self._in_part == self.part_rows  # the next row opens a new part
            room = self.part_rows if fresh else self.part_rows - self._in_part
            full = min(self.group_rows, room)
            take = min(full, table.num_rows - start)
            if take < full and not final:
                break  # an incomplete row group waits for more rows
            if fresh:
                self._open_next()
            with naming_write_errors(self.paths[-1]):
                # One contiguous chunk per row group: the bytes depend on the rows only, not on how they arrived.
                group = table.slice(start, take).combine_chunks()
                self._writer.write_table(group, row_group_size=take)  # type: ignore[union-attr]
            self._in_part += take
            start += take
        rest = table.slice(start)
        self.pending, self.pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> list[Path]:
        """Write what is queued, close the last part and return every part's path."""
        if self.pending:
            self._flush(final=True)
        if self._writer is None and not self.paths:
            self._open_next()  # no row at all: an empty first part carries the schema
        if self._writer is not None:
            with naming_write_errors(self.paths[-1]):
                self._writer.close()
            self._writer = None
        return list(self.paths)


def _arrow_schema(columns: dict[str, pl.DataType]) -> pa.Schema:
    return pl.DataFrame(schema=columns).to_arrow().schema


def write_subset(
    queries: pl.LazyFrame | Iterable[pl.LazyFrame], folder: Path, tags_id: str | None = None,
    part_rows: int = SUBSET_PART_ROWS,
) -> list[Path]:  # fmt: skip
    """Write the rows of lazy queries, in turn, into ``folder/part-NNNNN.parquet`` parts of at most ``part_rows`` rows.

    Memory holds one query's result at a time (for a subset: the rows of one tags part). The folder is replaced
    only on success; ``tags_id`` (the tags table the queries read) is recorded beside the parts, in the same swap.
    """
    queries = [queries] if isinstance(queries, pl.LazyFrame) else queries
    with atomic_dir(folder) as tmp:
        writer: PartWriter | None = None
        try:
            for query in queries:
                frame = query.collect()
                if writer is None:
                    writer = PartWriter(tmp, frame.to_arrow().schema, part_rows)
                writer.write(frame.to_arrow())
        except pl.exceptions.ComputeError as exc:  # a full disk can also surface as a broken parquet file
            raise OutputWriteError(f"{folder}: writing failed: {exc}; nothing was replaced") from exc
        if writer is None:
            raise BadInputError(f"{folder}: no query to write")
        names = [p.name for p in writer.close()]
        if tags_id is not None:
            write_built_from(tmp / BUILT_FROM, tags_id)
    return [folder / name for name in names]


def subset_rows(files: Path | Sequence[Path]) -> int:
    """Row count of a written subset (its parts' footers); a folder, one part or the list of parts."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in _paths(files))


def top_rows(files: Path | Sequence[Path], column: str, n: int = 10) -> pl.DataFrame:
    """The n highest-scoring rows of a subset (all its parts), for previews."""
    return pl.scan_parquet(_paths(files)).sort(column, descending=True).head(n).collect()


# Rows whose hashes one pass of the duplicate count holds at most; a larger subset is counted in hash partitions.
DUPLICATE_PASS_ROWS = 8_000_000


def duplicate_rows(files: Sequence[Path], rows_per_pass: int = DUPLICATE_PASS_ROWS) -> int:
    """Rows of a subset whose hash an earlier row already has, counted one hash partition at a time."""
    rows = subset_rows(files)
    passes = max(1, -(-rows // max(1, rows_per_pass)))
    hashes = pl.scan_parquet(list(files)).select("hash")
    part = pl.col("hash").hash(seed=0x5EED) % passes
    return sum(
        int(hashes.filter(part == k).select(pl.len() - pl.col("hash").n_unique()).collect().item())
        for k in range(passes)
    )


def rule_violations(files: Path | Sequence[Path], rule: V1Subset | V2Subset) -> int:
    """Count rows of a written subset (all its parts) that break its rule (threshold, URL, safety, duplicates)."""
    files = _paths(files)
    frame = pl.scan_parquet(files)
    if isinstance(rule, V2Subset):
        # The V2 columns carry no LANGUAGE: the language rule is checked by the recount (``audit``) instead.
        bad = (pl.col("AESTHETIC_SCORE") < rule.threshold) | missing_url()
        return int(frame.filter(bad.fill_null(True)).select(pl.len()).collect().item())
    bad = (
        (pl.col("aesthetic") <= rule.threshold)
        | (pl.col("punsafe") >= PUNSAFE_MAX)
        | (pl.col("pwatermark") >= PWATERMARK_MAX)
        | missing_url()
    ).fill_null(True)
    return int(frame.select(bad.sum()).collect().item()) + duplicate_rows(files)


# The V1 de-duplication (first safe row of each hash across the whole table) is hash-partitioned on disk: pass 1
# appends (hash, global row, score) of every safe row to one of B bucket files chosen by the hash, so that all rows
# of a hash land in one bucket, in table order; each bucket then fits DEDUP_MEMORY and yields its kept rows; pass 2
# hands them back per tags file. Memory: one tags part's narrow columns, or one bucket; never the whole table.
DEDUP_MEMORY = 256 << 20
_RECORD = np.dtype([("hash", "<i8"), ("row", "<i8"), ("score", "<f4")])
# Working bytes per record while a bucket is reduced: the record (20), a stable argsort (8) and its merge scratch
# (4), the sorted hashes (8), the first-of-run mask (1) and the kept rows (8), rounded up.
_BUCKET_BYTES_PER_ROW = 56
MAX_BUCKETS = 512  # open bucket files at once; past 512 x DEDUP_MEMORY of safe rows a bucket grows instead


def dedup_buckets(rows: int, memory: int = DEDUP_MEMORY) -> int:
    """How many bucket files the de-duplication of ``rows`` rows uses so that one bucket fits ``memory`` bytes."""
    per_bucket = max(1, memory // _BUCKET_BYTES_PER_ROW)
    return int(min(MAX_BUCKETS, max(1, -(-rows // per_bucket))))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output, so structured hashes fill the buckets evenly."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each hash, in ``[0, buckets)``: the mixed hash's high 32 bits scaled to the bucket count."""
    high = _mix(np.ascontiguousarray(hashes, dtype=np.int64).view(np.uint64)) >> np.uint64(32)
    return ((high * np.uint64(buckets)) >> np.uint64(32)).astype(np.int64)


def _safe_records(path: Path, first_row: int, rows: int) -> np.ndarray:
    """(hash, global row, V1 score) of one tags part's safe rows with a URL, in row order."""
    narrow = pl.read_parquet(path, columns=["hash", "punsafe", "pwatermark", "aesthetic", "URL"])
    if narrow.height != rows:
        raise BadInputError(f"{path}: {narrow.height} rows, its footer said {rows}; the tags changed while read")
    ok = narrow.select((_safe() & ~missing_url()).fill_null(False)).to_series().to_numpy()
    safe = np.flatnonzero(ok)
    records = np.empty(safe.size, _RECORD)
    records["hash"] = narrow["hash"].to_numpy()[safe]
    records["row"] = safe + first_row
    records["score"] = narrow["aesthetic"].cast(pl.Float32).fill_null(np.nan).to_numpy()[safe]
    return records


def _kept_in_bucket(records: np.ndarray, threshold: float) -> np.ndarray:
    """Sorted global rows of a bucket's first record per hash whose score is above the threshold.

    Records arrive in table order, so a stable sort by hash puts each hash's first row first.
    """
    if not records.size:
        return np.empty(0, np.int64)
    order = np.argsort(records["hash"], kind="stable")
    hashes = records["hash"][order]
    first = np.empty(hashes.size, bool)
    first[0] = True
    np.not_equal(hashes[1:], hashes[:-1], out=first[1:])
    del hashes
    pick = order[first]
    del order, first
    pick = pick[records["score"][pick] > np.float32(threshold)]  # a NaN (null) score never passes
    return np.sort(records["row"][pick])


def v1_keep_rows(
    files: Sequence[Path], rule: V1Subset, workdir: Path, memory: int = DEDUP_MEMORY
) -> Iterator[np.ndarray]:
    """Yield, per tags file in order, the sorted row numbers of its rows in a V1 subset (safe, first per hash,
    ``aesthetic > t``).

    The de-duplication by hash spans the whole table through bucket files under ``workdir`` (an existing, empty
    folder on a disk with room for 20 bytes per safe row), so memory stays near ``memory`` plus one tags part's
    narrow columns, whatever the table's size.
    """
    sizes = [pq.ParquetFile(path).metadata.num_rows for path in files]
    bounds = np.cumsum([0, *sizes], dtype=np.int64)
    buckets = dedup_buckets(int(bounds[-1]), memory)
    spill = [workdir / f"bucket-{b:05d}.bin" for b in range(buckets)]
    kept = [workdir / f"kept-{b:05d}.bin" for b in range(buckets)]
    with ExitStack() as stack:
        outs = [stack.enter_context(open(path, "wb")) for path in spill]
        for path, first_row, rows in zip(files, bounds[:-1], sizes, strict=True):
            records = _safe_records(path, int(first_row), rows)
            which = bucket_of(records["hash"], buckets)
            order = np.argsort(which, kind="stable")  # stable: each bucket keeps the rows in table order
            records = records[order]
            cuts = np.concatenate([[0], np.cumsum(np.bincount(which, minlength=buckets))])
            del which, order
            for b in np.flatnonzero(np.diff(cuts)):
                records[cuts[b] : cuts[b + 1]].tofile(outs[b])
    counts = np.zeros((buckets, len(files)), np.int64)  # kept rows of bucket b in tags file i
    for b in range(buckets):
        rows_kept = _kept_in_bucket(np.fromfile(spill[b], _RECORD), rule.threshold)
        spill[b].unlink()
        rows_kept.tofile(kept[b])
        counts[b] = np.diff(np.searchsorted(rows_kept, bounds))
    with ExitStack() as stack:
        ins = [stack.enter_context(open(path, "rb")) for path in kept]
        for i, first_row in enumerate(bounds[:-1]):
            found = [np.fromfile(ins[b], np.int64, count=int(counts[b, i])) for b in range(buckets) if counts[b, i]]
            yield np.sort(np.concatenate(found)) - first_row if found else np.empty(0, np.int64)


def write_v1_subset(
    files: Sequence[Path], rule: V1Subset, folder: Path, tags_id: str | None = None,
    part_rows: int = SUBSET_PART_ROWS, memory: int = DEDUP_MEMORY,
) -> list[Path]:  # fmt: skip
    """Write a V1 subset one tags file at a time (the same rows as :func:`v1_subset`), in parts of ``part_rows``.

    Memory is bounded by one tags part plus the de-duplication's ``memory``; its bucket files live in a temporary
    folder beside ``folder`` (the same disk), removed afterwards, also on error.
    """
    schema = _arrow_schema(V1_SUBSET_COLUMNS)
    with atomic_dir(folder) as tmp:
        with tempfile.TemporaryDirectory(prefix=f".{Path(folder).name}.dedup.", dir=Path(folder).parent) as work:
            writer = PartWriter(tmp, schema, part_rows)
            for path, rows in zip(files, v1_keep_rows(files, rule, Path(work), memory), strict=True):
                if rows.size:
                    part = pl.read_parquet(path, columns=list(V1_SUBSET_COLUMNS))[rows]
                    writer.write(v1_subset(part.lazy(), rule, filtered=True).collect().to_arrow())
            names = [p.name for p in writer.close()]
        if tags_id is not None:
            write_built_from(tmp / BUILT_FROM, tags_id)
    return [folder / name for name in names]


def write_rule(
    files: Sequence[Path], rule: V1Subset | V2Subset, folder: Path, part_rows: int = SUBSET_PART_ROWS
) -> list[Path]:
    """Write one subset of the tags table (given as its part files) into ``folder/part-NNNNN.parquet`` parts.

    Rows keep the tags table's order (shard, then row), ``part_rows`` at most per part. The folder also records
    which tags table it was cut from, so a release never pairs it with another one.
    """
    tags_id = recorded_ids(files)
    if isinstance(rule, V2Subset):
        return write_subset([v2_subset(pl.scan_parquet(path), rule) for path in files], folder, tags_id, part_rows)
    return write_v1_subset(files, rule, folder, tags_id, part_rows)
