import numpy as np
import polars as pl
import pytest

from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS, schema_mismatches
from laion_assets.selection.subsets import (
    rule_funnel,
    rule_violations,
    safe_unique,
    v1_subset,
    v2_subset,
    write_subset,
    write_v1_subset,
)
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS, V1Subset, V2Subset

BASE = {"URL": "u", "TEXT": "t", "WIDTH": 1.0, "HEIGHT": 2.0, "similarity": 0.3, "punsafe": 0.1, "pwatermark": 0.1,
        "LANGUAGE": "en", "aesthetic": 5.0, "AESTHETIC_SCORE": 5.0}  # fmt: skip


def tags(*rows: dict) -> pl.LazyFrame:
    full = [{**BASE, "hash": i, **row} for i, row in enumerate(rows)]
    return (
        pl.DataFrame(full)
        .with_columns(pl.col("punsafe", "pwatermark", "aesthetic", "AESTHETIC_SCORE").cast(pl.Float32))
        .lazy()
    )


def test_v2_threshold_is_inclusive_and_english_only():
    rule = V2Subset("subset_6_5plus", 6.5, "improved_aesthetics_6.5plus")
    frame = tags(
        {"AESTHETIC_SCORE": 6.5},  # kept: >= is inclusive
        {"AESTHETIC_SCORE": 6.4999},  # dropped
        {"AESTHETIC_SCORE": 9.0, "LANGUAGE": "de"},  # dropped: not English
        {"AESTHETIC_SCORE": 9.0, "LANGUAGE": None},  # dropped: no language is not English
        {"AESTHETIC_SCORE": 7.0, "punsafe": 0.99},  # kept: the V2 subsets do not filter on safety
    )
    out = v2_subset(frame, rule).collect()
    assert out["hash"].to_list() == [0, 4]
    assert not schema_mismatches(out.schema, V2_SUBSET_COLUMNS)


def test_v2_keeps_english_rows_with_a_url_only():
    rule = V2_SUBSETS[0]
    frame = tags(
        {"AESTHETIC_SCORE": 4.5},  # kept
        {"AESTHETIC_SCORE": 9.0, "LANGUAGE": None},  # unknown language is not English
        {"AESTHETIC_SCORE": 9.0, "LANGUAGE": "de"},
        {"AESTHETIC_SCORE": 9.0, "URL": None},  # no URL: never published
        {"AESTHETIC_SCORE": 9.0, "URL": "  "},
        {"AESTHETIC_SCORE": 9.0, "TEXT": None},  # a null caption is kept
    )
    assert v2_subset(frame, rule).collect()["hash"].to_list() == [0, 5]


def test_funnel_counts_where_candidates_went(tmp_path):
    frame = tags(
        {"AESTHETIC_SCORE": 4.5, "aesthetic": 9.0},
        {"AESTHETIC_SCORE": 9.0, "LANGUAGE": None, "aesthetic": 9.0, "punsafe": 0.9},
        {"AESTHETIC_SCORE": 9.0, "URL": None, "aesthetic": 9.0},
        {"AESTHETIC_SCORE": 1.0, "aesthetic": 9.0, "punsafe": None},
        {"AESTHETIC_SCORE": 1.0, "aesthetic": 9.0},
    ).collect()
    path = tmp_path / "part-00000.parquet"
    frame.with_columns(pl.Series("hash", [0, 1, 2, 3, 0])).write_parquet(path)
    v2 = rule_funnel([path], V2_SUBSETS[0], rows=1)
    assert v2 == {"candidates": 3, "dropped_by_language": 1, "dropped_without_url": 1}
    v1 = rule_funnel([path], V1Subset("laion_art", 8.0), rows=1)
    assert v1 == {"candidates": 5, "dropped_without_safety_tags": 1, "dropped_unsafe_or_watermarked": 1,
                  "dropped_without_url": 1, "dropped_by_language": 0, "dropped_duplicate_hash": 1}  # fmt: skip


def test_v1_safety_filters_are_strict_and_threshold_exclusive():
    rule = V1Subset("laion_art", 8.0)
    frame = tags(
        {"aesthetic": 8.0001},  # kept
        {"aesthetic": 8.0},  # dropped: > is exclusive
        {"aesthetic": 9.0, "punsafe": 0.5},  # dropped: punsafe < 0.5 is strict
        {"aesthetic": 9.0, "pwatermark": 0.8},  # dropped: pwatermark < 0.8 is strict
        {"aesthetic": 9.0, "punsafe": 0.4999, "pwatermark": 0.7999, "LANGUAGE": "ja"},  # kept: V1 takes all languages
    )
    out = v1_subset(frame, rule).collect()
    assert out["hash"].to_list() == [0, 4]
    assert out.columns == ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "LANGUAGE", "hash", "pwatermark",
                           "punsafe", "aesthetic"]  # fmt: skip
    assert not schema_mismatches(out.schema, V1_SUBSET_COLUMNS)


def test_dedup_keeps_first_safe_row_per_hash():
    frame = tags({"aesthetic": 9.0, "punsafe": 0.9}, {"aesthetic": 9.5}, {"aesthetic": 8.5}).with_columns(
        pl.lit(42, dtype=pl.Int64).alias("hash"), pl.Series("URL", ["a", "b", "c"])
    )
    # The unsafe first row is filtered out before de-duplication, so the first *safe* row wins.
    assert safe_unique(frame).collect()["URL"].to_list() == ["b"]
    assert v1_subset(frame, V1_SUBSETS[1]).collect()["URL"].to_list() == ["b"]


def test_written_subset_meets_rule_and_violations_are_counted(tmp_path):
    rule = V2_SUBSETS[2]
    frame = tags(*({"AESTHETIC_SCORE": s} for s in (4.0, 5.0, 5.5, 6.0)))
    (path,) = write_subset(v2_subset(frame, rule), tmp_path / rule.asset_name)
    assert pl.read_parquet(path)["AESTHETIC_SCORE"].to_list() == [5.0, 5.5, 6.0]
    assert rule_violations(path, rule) == 0
    bad = tmp_path / "bad.parquet"
    pl.read_parquet(path).with_columns(pl.lit(1.0, dtype=pl.Float32).alias("AESTHETIC_SCORE")).write_parquet(bad)
    assert rule_violations(bad, rule) == 3


def test_v1_violation_counter_sees_duplicates(tmp_path):
    path = tmp_path / "dups.parquet"
    frame = v1_subset(tags({"aesthetic": 9.0}, {"aesthetic": 9.5}), V1_SUBSETS[1]).collect()
    pl.concat([frame, frame]).write_parquet(path)
    assert rule_violations(path, V1_SUBSETS[1]) == 2


@pytest.mark.parametrize("rules", [V2_SUBSETS, V1_SUBSETS])
def test_thresholds_increase(rules):
    values = [r.threshold for r in rules]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_laion_thresholds():
    assert [(r.asset_name, r.threshold) for r in V2_SUBSETS] == [
        ("subset_4_5plus", 4.5), ("subset_4_75plus", 4.75), ("subset_5plus", 5.0),
        ("subset_6plus", 6.0), ("subset_6_25plus", 6.25), ("subset_6_5plus", 6.5),
    ]  # fmt: skip
    assert [(r.asset_name, r.threshold) for r in V1_SUBSETS] == [("laion_aesthetic", 7.0), ("laion_art", 8.0)]


def test_part_by_part_v1_writer_equals_the_lazy_query(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    frame = pl.DataFrame(
        {
            "URL": [f"http://x/{i}" for i in range(n)],
            "TEXT": [f"t{i}" for i in range(n)],
            "WIDTH": rng.integers(100, 900, n).astype(float),
            "HEIGHT": rng.integers(100, 900, n).astype(float),
            "similarity": rng.random(n),
            "punsafe": pl.Series(rng.random(n) * 0.7, dtype=pl.Float32),
            "pwatermark": pl.Series(rng.random(n), dtype=pl.Float32),
            "LANGUAGE": rng.choice(["en", "de"], n),
            # few distinct hashes: many duplicates, also across files, some unsafe first occurrences
            "hash": rng.integers(0, 600, n),
            "aesthetic": pl.Series(rng.uniform(5, 10, n), dtype=pl.Float32),
            "AESTHETIC_SCORE": pl.Series(rng.uniform(3, 8, n), dtype=pl.Float32),
        }
    ).with_columns(pl.when(pl.int_range(pl.len()) % 97 == 0).then(None).otherwise(pl.col("punsafe")).alias("punsafe"))
    files = []
    for i, chunk in enumerate(frame.iter_slices(n_rows=700)):
        files.append(tmp_path / f"part-{i:05d}.parquet")
        chunk.write_parquet(files[-1])
    files.append(tmp_path / "part-00099.parquet")
    frame.head(0).write_parquet(files[-1])  # an empty shard
    for rule in V1_SUBSETS:
        got = pl.read_parquet(write_v1_subset(files, rule, tmp_path / rule.asset_name))
        want = v1_subset(pl.scan_parquet(files), rule).collect()
        assert got.equals(want) and got.height > 0, rule
        assert not schema_mismatches(got.schema, V1_SUBSET_COLUMNS)
