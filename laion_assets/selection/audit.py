"""Completeness of the released tables: an independent recount of every subset over the aesthetic-tags table.

The subset writers (``subsets.py``) pick rows with numpy masks and a part-by-part writer. This module recounts each
subset by another code path - one polars query per rule over the tags parts, written from LAION's rules as they are
stated, not from the writers' functions - and compares the two as multisets of whole rows (every released column,
cast to LAION's types): the same row count and the same order-independent 128-bit digest of the rows. A subset that
lost, gained or changed a row (any column: URL, caption, safety values, score, ...) fails; so does a subset that is
empty while rows meet its score threshold (the failure says which filter dropped them).

Memory stays bounded per tags part for the V2 rules. The V1 rules de-duplicate by hash across the whole table, as
LAION did: above ``RECOUNT_ROWS`` tag rows, a first pass writes (hash, row hash, score) of the safe rows in table
order to a narrow temporary file, and each following pass de-duplicates only the hashes of one partition of it, so
a pass holds about ``RECOUNT_ROWS`` rows whatever the table's size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS
from laion_assets.selection.thresholds import PUNSAFE_MAX, PWATERMARK_MAX, V1Subset, V2Subset
from laion_assets.sources.metadata import ENGLISH

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_SALTS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03))
EXAMPLES = 5


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64-bit output (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class RowDigest:
    """An order-independent digest of a multiset of rows: their count plus two sums of mixed row hashes."""

    rows: int = 0
    sums: tuple[int, int] = (0, 0)

    def add(self, row_hashes: np.ndarray) -> None:
        """Add rows given as one 64-bit hash each (of every column of the row)."""
        h = np.asarray(row_hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            sums = [int(_mix(h ^ salt).sum(dtype=np.uint64)) for salt in _SALTS]
        self.rows += int(h.size)
        self.sums = tuple((a + b) & int(_MASK) for a, b in zip(self.sums, sums, strict=True))  # type: ignore[assignment]


# One seed for every row hash of a comparison: polars' hash is stable within a process, which is all a recount needs.
_ROW_SEED = 0x5EED


def _columns(rule: V1Subset | V2Subset) -> dict[str, pl.DataType]:
    return V2_SUBSET_COLUMNS if isinstance(rule, V2Subset) else V1_SUBSET_COLUMNS


def row_hash(rule: V1Subset | V2Subset) -> pl.Expr:
    """One hash per row over every column the subset releases, cast to LAION's types."""
    columns = [pl.col(name).cast(dtype) for name, dtype in _columns(rule).items()]
    return pl.struct(columns).hash(seed=_ROW_SEED).alias("row")


def _url_present() -> pl.Expr:
    return pl.col("URL").is_not_null() & (pl.col("URL").str.strip_chars().str.len_chars() > 0)


def score_column(rule: V1Subset | V2Subset) -> str:
    """The score column a subset rule filters on."""
    return "AESTHETIC_SCORE" if isinstance(rule, V2Subset) else "aesthetic"


def _v2_keeps(rule: V2Subset) -> pl.Expr:
    score = pl.col(score_column(rule))
    return (pl.col("LANGUAGE") == ENGLISH) & _url_present() & (score >= rule.threshold)


def _v1_rows(tags_files: Sequence[Path], rule: V1Subset) -> pl.LazyFrame:
    score = score_column(rule)
    safe = (pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX) & _url_present()
    return (
        pl.scan_parquet(list(tags_files))
        .filter(safe)
        .select(list(V1_SUBSET_COLUMNS))
        .unique(subset="hash", keep="first", maintain_order=True)
        .filter(pl.col(score) > rule.threshold)
    )


# Tag rows one V1 recount pass de-duplicates at most (about 1 GB of polars memory); a larger table takes more passes.
RECOUNT_ROWS = 8_000_000
_PARTITION_SEED = 0xA11CE


def expected_digest(
    tags_files: Sequence[Path], rule: V1Subset | V2Subset, recount_rows: int = RECOUNT_ROWS
) -> RowDigest:
    """Recount a subset from the tags parts with polars, straight from LAION's rule."""
    digest = RowDigest()
    if isinstance(rule, V2Subset):
        for path in tags_files:  # no state across parts: one part in memory at a time
            rows = pl.scan_parquet(path).filter(_v2_keeps(rule)).select(row_hash(rule)).collect()
            digest.add(rows["row"].to_numpy())
        return digest
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in tags_files)
    passes = max(1, -(-total // max(1, recount_rows)))
    if passes == 1:
        rows = _v1_rows(tags_files, rule).select(row_hash(rule)).collect(engine="streaming")
        digest.add(rows["row"].to_numpy())
        return digest
    score = score_column(rule)
    safe = (pl.col("punsafe") < PUNSAFE_MAX) & (pl.col("pwatermark") < PWATERMARK_MAX) & _url_present()
    # Beside the tags folder (the data root: the same disk), removed afterwards, also on error.
    with tempfile.TemporaryDirectory(prefix=".recount.", dir=Path(tags_files[0]).parent.parent) as tmp:
        narrow = Path(tmp) / "safe.parquet"
        (
            pl.scan_parquet(list(tags_files))
            .filter(safe)
            .select("hash", row_hash(rule), pl.col(score).alias("score"))
            .sink_parquet(narrow, maintain_order=True)  # table order: the first row of a hash stays first
        )
        for k in range(passes):
            rows = (
                pl.scan_parquet(narrow)
                .filter(pl.col("hash").hash(seed=_PARTITION_SEED) % passes == k)
                .unique(subset="hash", keep="first", maintain_order=True)
                .filter(pl.col("score") > rule.threshold)
                .select("row")
                .collect(engine="streaming")
            )
            digest.add(rows["row"].to_numpy())
    return digest


def actual_digest(subset_files: Sequence[Path], rule: V1Subset | V2Subset) -> RowDigest:
    """Digest the rows of a written subset, one record batch at a time."""
    digest = RowDigest()
    for path in subset_files:
        for batch in pq.ParquetFile(path).iter_batches(columns=list(_columns(rule)), batch_size=1 << 20):
            digest.add(pl.from_arrow(batch).select(row_hash(rule))["row"].to_numpy())
    return digest


def candidates(tags_files: Sequence[Path], rule: V1Subset | V2Subset) -> int:
    """Rows of the tags table that meet the rule's score threshold, before any other filter."""
    score = pl.col(score_column(rule))
    meets = score >= rule.threshold if isinstance(rule, V2Subset) else score > rule.threshold
    return int(pl.scan_parquet(list(tags_files)).select(meets.sum()).collect().item())


@dataclass
class SubsetAudit:
    """The recount of one subset against the written one."""

    name: str
    expected_rows: int
    actual_rows: int
    digests_match: bool
    candidates: int
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the subset holds exactly the rows its rule selects, and is not empty while candidates exist."""
        return not self.problems

    def metadata(self) -> dict[str, object]:
        """Figures for a check's metadata."""
        return {
            "expected_rows": self.expected_rows,
            "actual_rows": self.actual_rows,
            "rows_match": self.expected_rows == self.actual_rows,
            "digests_match": self.digests_match,
            "candidates": self.candidates,
        }


def _differences(tags_files: Sequence[Path], subset_files: Sequence[Path], rule: V1Subset | V2Subset) -> str:
    """Which hashes are missing or extra (a few of each), computed only once the digests disagree."""
    actual = pl.scan_parquet(list(subset_files)).select("hash", row_hash(rule))
    if isinstance(rule, V2Subset):
        expected = pl.scan_parquet(list(tags_files)).filter(_v2_keeps(rule)).select("hash", row_hash(rule))
    else:
        expected = _v1_rows(tags_files, rule).select("hash", row_hash(rule))
    missing = expected.join(actual, on=["hash", "row"], how="anti").collect()
    extra = actual.join(expected, on=["hash", "row"], how="anti").collect()
    changed = set(missing["hash"].to_list()) & set(extra["hash"].to_list())
    parts = []
    if changed:
        parts.append(
            f"{len(changed)} row(s) differ from the rule's row in some column (e.g. hash {sorted(changed)[:EXAMPLES]})"
        )
    missing = missing.filter(~pl.col("hash").is_in(list(changed)))
    extra = extra.filter(~pl.col("hash").is_in(list(changed)))
    if missing.height:
        parts.append(
            f"{missing.height} row(s) meeting the rule are missing (e.g. hash {missing['hash'][:EXAMPLES].to_list()})"
        )
    if extra.height:
        parts.append(
            f"{extra.height} row(s) are there without meeting the rule (e.g. hash {extra['hash'][:EXAMPLES].to_list()})"
        )
    return "; ".join(parts) or "the rows differ in multiplicity (a row repeated or dropped among equal rows)"


def audit_subset(
    name: str, tags_files: Sequence[Path], subset_files: Sequence[Path], rule: V1Subset | V2Subset,
    funnel: Mapping[str, int] | None = None,
) -> SubsetAudit:  # fmt: skip
    """Recount one subset from the tags and compare it with the written files."""
    expected = expected_digest(tags_files, rule)
    actual = actual_digest(subset_files, rule)
    result = SubsetAudit(
        name=name,
        expected_rows=expected.rows,
        actual_rows=actual.rows,
        digests_match=expected.sums == actual.sums,
        # The funnel, when given, has already counted them in its pass over the tags.
        candidates=funnel["candidates"] if funnel and "candidates" in funnel else candidates(tags_files, rule),
    )
    if expected.rows != actual.rows or expected.sums != actual.sums:
        result.problems.append(
            f"{name} has {actual.rows} rows but the recount over aesthetic_tags gives {expected.rows}: "
            + _differences(tags_files, subset_files, rule)
        )
    if actual.rows == 0 and result.candidates > 0:
        dropped = ", ".join(
            f"{k.removeprefix('dropped_')} {v}" for k, v in (funnel or {}).items() if v and k != "candidates"
        )
        result.problems.append(
            f"{name} is empty although {result.candidates} row(s) meet its score threshold"
            + (f" (dropped: {dropped})" if dropped else "")
            + "; check storage.language (the source's declared language), the safety table and the URLs"
        )
    return result


@dataclass(frozen=True)
class TagsAudit:
    """The tags table's rows against the rows each shard's part was validated with."""

    expected_rows: int
    actual_rows: int
    problems: dict[str, str]

    @property
    def passed(self) -> bool:
        """True when every released shard is in the tags with exactly its validated row count."""
        return not self.problems


def audit_tags(tags_dir: Path, validated_rows: Mapping[str, int]) -> TagsAudit:
    """Compare each tags part's row count (parquet footer) with its shard's validated rows; no part missing or extra."""
    found = {p.stem.removeprefix("part-"): p for p in sorted(Path(tags_dir).glob("part-*.parquet"))}
    problems: dict[str, str] = {}
    actual = 0
    for key, rows in sorted(validated_rows.items()):
        path = found.get(key)
        if path is None:
            problems[key] = "no tags part"
            continue
        got = pq.ParquetFile(path).metadata.num_rows
        actual += got
        if got != rows:
            problems[key] = f"{got} tag rows, {rows} rows validated"
    for key in sorted(set(found) - set(validated_rows)):
        problems[key] = "a tags part for a shard that is not released"
        actual += pq.ParquetFile(found[key]).metadata.num_rows
    return TagsAudit(sum(validated_rows.values()), actual, problems)
