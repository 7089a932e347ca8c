"""The streaming V1 de-duplication and subsets written in several parquet parts, read back whole."""

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.selection.audit import audit_subset, expected_digest
from laion_assets.selection.schemas import TAGS_COLUMNS, V1_SUBSET_COLUMNS, schema_mismatches
from laion_assets.selection.subsets import (
    DEDUP_MEMORY,
    SUBSET_FILE,
    bucket_of,
    dedup_buckets,
    duplicate_rows,
    rule_violations,
    subset_files,
    subset_rows,
    v1_keep_rows,
    v1_subset,
    v2_subset,
    write_rule,
    write_v1_subset,
)
from laion_assets.selection.tags import TAGS_ID_KEY
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets_tests.selection.in_memory_dedup import in_memory_keep_rows

# A few hundred bytes: a handful of records per bucket, so hundreds of buckets are used.
TINY_MEMORY = 56 * 8


def generated_tags(folder: Path, parts: int = 6, rows: int = 500, seed: int = 3) -> list[Path]:
    """Tags parts with hashes repeated within and across parts, null safety tags, null and blank URLs, null scores,
    extreme hashes, and an empty part."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for p in range(parts):
        n = 0 if p == 2 else rows
        hashes = rng.integers(-400, 400, n)  # few distinct hashes: many repeats, within and across parts
        hashes[::7] = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, hashes[::7].size, dtype=np.int64)
        if n:
            hashes[1] = np.iinfo(np.int64).min
            hashes[2] = np.iinfo(np.int64).max
        i = np.arange(n)
        frame = pl.DataFrame(
            {
                "URL": [None if k % 31 == 0 else (" " if k % 37 == 0 else f"http://x/{p}/{k}") for k in range(n)],
                "TEXT": [None if k % 11 == 0 else f"caption {p} {k}" for k in range(n)],
                "WIDTH": rng.integers(64, 900, n).astype(float),
                "HEIGHT": rng.integers(64, 900, n).astype(float),
                "similarity": rng.random(n),
                "punsafe": np.where(i % 13 == 0, np.nan, rng.random(n) * 0.7),
                "pwatermark": np.where(i % 17 == 0, np.nan, rng.random(n)),
                "LANGUAGE": rng.choice(["en", "de", "ja"], n),
                "hash": hashes,
                "aesthetic": np.where(i % 19 == 0, np.nan, rng.uniform(5, 10, n)),
                "AESTHETIC_SCORE": rng.uniform(3, 8, n),
                "punsafe_source": rng.choice(["provided", "computed"], n),
                "pwatermark_source": rng.choice(["provided", "computed"], n),
            }
        ).with_columns(pl.col("punsafe", "pwatermark", "aesthetic").fill_nan(None))
        frame = frame.select([pl.col(c).cast(t) for c, t in TAGS_COLUMNS.items()])
        files.append(folder / f"part-{p:05d}.parquet")
        write_parquet(frame.to_arrow(), files[-1], {TAGS_ID_KEY: "test-table"})
    return files


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generated_tags(tmp_path_factory.mktemp("tags") / "tags")


@pytest.mark.parametrize("memory", [DEDUP_MEMORY, TINY_MEMORY])
@pytest.mark.parametrize("rule", V1_SUBSETS, ids=lambda r: r.asset_name)
def test_streaming_dedup_picks_the_rows_the_in_memory_one_picks(tags, tmp_path, rule, memory) -> None:
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in tags)
    assert dedup_buckets(rows, memory) == (1 if memory == DEDUP_MEMORY else 313)  # 2,500 rows, 8 a bucket
    got = list(v1_keep_rows(tags, rule, tmp_path, memory))
    want = in_memory_keep_rows(tags, rule)
    assert len(got) == len(want) == len(tags)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(g, w, err_msg=f"tags part {i}")
    assert sum(len(g) for g in got) > 100
    assert sum(len(g) for g in got[3:]) > 0  # later parts keep rows too (not only first occurrences in part 0)


def test_buckets_spread_structured_hashes() -> None:
    hashes = (np.arange(100_000, dtype=np.int64) * 2654435761) % (2**62) - 2**61  # bench/release.py's hashes
    counts = np.bincount(bucket_of(hashes, 16), minlength=16)
    assert counts.min() > 0.9 * hashes.size / 16 and counts.max() < 1.1 * hashes.size / 16


def test_v1_subset_in_parts_equals_the_lazy_query_and_leaves_no_temporary_files(tags, tmp_path) -> None:
    out = tmp_path / "subsets"
    for rule in V1_SUBSETS:
        parts = write_rule(tags, rule, out / rule.asset_name, part_rows=17)
        want = v1_subset(pl.scan_parquet(tags), rule).collect()
        assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))] and len(parts) > 3
        sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
        assert sizes[:-1] == [17] * (len(parts) - 1) and 0 < sizes[-1] <= 17
        got = pl.read_parquet(subset_files(out / rule.asset_name))
        assert got.equals(want) and subset_rows(out / rule.asset_name) == want.height
        assert not schema_mismatches(got.schema, V1_SUBSET_COLUMNS)
        assert rule_violations(parts, rule) == 0
        assert audit_subset(rule.asset_name, tags, parts, rule).passed
    assert sorted(p.name for p in out.iterdir()) == sorted(r.asset_name for r in V1_SUBSETS)  # no bucket files left


def test_v2_subset_in_parts_keeps_the_row_order_and_splits_at_the_bound(tags, tmp_path) -> None:
    rule = V2_SUBSETS[0]
    whole = write_rule(tags, rule, tmp_path / "whole")
    parts = write_rule(tags, rule, tmp_path / "parts", part_rows=100)
    assert [p.name for p in whole] == [SUBSET_FILE]
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert len(parts) > 3 and sizes[:-1] == [100] * (len(parts) - 1) and 0 < sizes[-1] <= 100
    want = v2_subset(pl.scan_parquet(tags), rule).collect()
    assert pl.read_parquet(whole).equals(want) and pl.read_parquet(parts).equals(want)
    # The default part size writes a single part with the rows of every tags part in its row groups.
    assert pq.ParquetFile(whole[0]).metadata.num_row_groups == 1


def test_an_empty_subset_is_one_empty_first_part(tags, tmp_path) -> None:
    empty = [tags[2]]  # the empty tags part
    for rule in (V2_SUBSETS[0], V1_SUBSETS[0]):
        parts = write_rule(empty, rule, tmp_path / rule.asset_name, part_rows=5)
        assert [p.name for p in parts] == [SUBSET_FILE] and subset_rows(parts) == 0


def test_a_row_dropped_from_a_later_part_fails_the_checks(tags, tmp_path) -> None:
    rule = V1_SUBSETS[0]
    folder = tmp_path / rule.asset_name
    parts = write_rule(tags, rule, folder, part_rows=20)
    assert audit_subset(rule.asset_name, tags, subset_files(folder), rule).passed
    second = pl.read_parquet(parts[1])
    second.slice(1).write_parquet(parts[1])
    result = audit_subset(rule.asset_name, tags, subset_files(folder), rule)
    assert not result.passed and result.actual_rows == result.expected_rows - 1
    assert f"1 row(s) meeting the rule are missing (e.g. hash [{second['hash'][0]}])" in result.problems[0]
    pl.concat([second, second.head(1)]).write_parquet(parts[1])  # the row back, and a duplicate of it
    assert rule_violations(subset_files(folder), rule) == 1
    pl.concat([second, second.head(3)]).write_parquet(parts[1])
    assert duplicate_rows(subset_files(folder), rows_per_pass=5) == duplicate_rows(subset_files(folder)) == 3


def test_temporary_files_are_removed_when_writing_fails(tags, tmp_path) -> None:
    broken = tmp_path / "broken.parquet"
    pl.read_parquet(tags[0]).drop("aesthetic").write_parquet(broken)  # read in pass 1, after part 0's records
    out = tmp_path / "subsets"
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        write_v1_subset([tags[0], broken], V1_SUBSETS[0], out / "laion_aesthetic", memory=TINY_MEMORY)
    assert not out.exists() or list(out.iterdir()) == []


def test_part_rows_must_be_positive(tags, tmp_path) -> None:
    with pytest.raises(BadInputError, match="part_rows"):
        write_rule(tags, V2_SUBSETS[0], tmp_path / "s", part_rows=0)


@pytest.mark.parametrize("rule", V1_SUBSETS, ids=lambda r: r.asset_name)
def test_the_v1_recount_in_several_passes_equals_the_one_pass_recount(tags, rule) -> None:
    one = expected_digest(tags, rule)
    many = expected_digest(tags, rule, recount_rows=100)  # 2,500 rows: 25 passes over hash partitions
    assert (many.rows, many.sums) == (one.rows, one.sums) and one.rows > 100
    assert [p.name for p in tags[0].parent.parent.iterdir()] == ["tags"]  # its temporary file is gone
