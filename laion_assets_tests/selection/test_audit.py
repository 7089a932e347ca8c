from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import write_parquet
from laion_assets.selection.audit import RowDigest, audit_subset, audit_tags, row_hash
from laion_assets.selection.subsets import write_rule
from laion_assets.selection.tags import TAGS_ID_KEY, read_built_from
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS

BASE = {"URL": "u", "TEXT": "t", "WIDTH": 1.0, "HEIGHT": 2.0, "similarity": 0.3, "punsafe": 0.1, "pwatermark": 0.1,
        "LANGUAGE": "en", "aesthetic": 5.0, "AESTHETIC_SCORE": 5.0}  # fmt: skip


def write_tags(folder: Path, parts: list[list[dict]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, rows in enumerate(parts):
        path = folder / f"part-{i:05d}.parquet"
        frame = pl.DataFrame([{**BASE, **r} for r in rows]).with_columns(
            pl.col("punsafe", "pwatermark", "aesthetic", "AESTHETIC_SCORE").cast(pl.Float32)
        )
        write_parquet(frame.to_arrow(), path, {TAGS_ID_KEY: "test-table"})  # as build_tags records it
        files.append(path)
    return files


def random_tags(tmp_path: Path, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    parts = []
    for p in range(3):
        rows = []
        for i in range(300):
            rows.append({
                "hash": int(rng.integers(0, 400)) if i % 5 == 0 else p * 1000 + i,  # repeats within and across parts
                "URL": None if i % 37 == 0 else f"http://x/{p}/{i}",
                "LANGUAGE": rng.choice(["en", "de", None], p=[0.7, 0.2, 0.1]),
                "punsafe": None if i % 41 == 0 else float(rng.random()),
                "pwatermark": float(rng.random()),
                "aesthetic": float(rng.uniform(3, 10)), "AESTHETIC_SCORE": float(rng.uniform(3, 9)),
            })  # fmt: skip
        parts.append(rows)
    return write_tags(tmp_path / "tags", parts)


def test_digest_ignores_order_but_sees_a_lost_row_a_repeat_or_a_changed_value() -> None:
    rule = V2_SUBSETS[0]
    frame = pl.DataFrame(
        [{**BASE, "hash": i * 7919 - 300, "AESTHETIC_SCORE": i / 10} for i in range(100)]
    ).with_columns(pl.col("punsafe", "pwatermark", "AESTHETIC_SCORE").cast(pl.Float32))

    def digest(rows: pl.DataFrame) -> RowDigest:
        d = RowDigest()
        d.add(rows.select(row_hash(rule))["row"].to_numpy())
        return d

    whole = digest(frame)
    order = np.random.default_rng(1).permutation(100)
    split = RowDigest()
    split.add(frame[order[:30]].select(row_hash(rule))["row"].to_numpy())
    split.add(frame[order[30:]].select(row_hash(rule))["row"].to_numpy())
    assert (split.rows, split.sums) == (whole.rows, whole.sums)
    assert digest(frame.slice(1)).sums != whole.sums
    repeated = digest(pl.concat([frame.head(5), frame.head(1), frame.slice(6)]))  # row 5 replaced by row 0
    assert repeated.rows == whole.rows and repeated.sums != whole.sums
    scores = frame["AESTHETIC_SCORE"].to_numpy().copy()
    scores[3] = np.nextafter(scores[3], np.float32(11))  # one ulp
    one_ulp = frame.with_columns(pl.Series("AESTHETIC_SCORE", scores, dtype=pl.Float32))
    assert digest(one_ulp).sums != whole.sums
    caption = frame.with_columns(
        pl.when(pl.col("hash") == frame["hash"][7]).then(pl.lit("other")).otherwise("TEXT").alias("TEXT")
    )
    assert digest(caption).sums != whole.sums


def test_every_subset_written_by_the_writer_passes_its_independent_recount(tmp_path: Path) -> None:
    files = random_tags(tmp_path)
    for rule in (*V2_SUBSETS, *V1_SUBSETS):
        (path,) = write_rule(files, rule, tmp_path / "subsets" / rule.asset_name)
        assert read_built_from(path.parent) == "test-table"  # the subset names the tags table it was cut from
        result = audit_subset(rule.asset_name, files, [path], rule)
        assert result.passed, result.problems
        assert result.expected_rows == result.actual_rows > 0 and result.digests_match


def test_a_subset_missing_or_gaining_rows_fails_with_the_hashes(tmp_path: Path) -> None:
    files = random_tags(tmp_path)
    rule = V1_SUBSETS[0]
    (path,) = write_rule(files, rule, tmp_path / "subsets" / rule.asset_name)
    frame = pl.read_parquet(path)
    frame.slice(2).write_parquet(path)
    result = audit_subset(rule.asset_name, files, [path], rule)
    assert not result.passed and result.actual_rows == result.expected_rows - 2
    assert f"2 row(s) meeting the rule are missing (e.g. hash {frame['hash'][:2].to_list()})" in result.problems[0]
    pl.concat([frame, frame.head(1)]).write_parquet(path)  # every row is right, one is there twice
    repeated = audit_subset(rule.asset_name, files, [path], rule)
    assert not repeated.passed and "differ in multiplicity" in repeated.problems[0]
    frame.with_columns(pl.col("aesthetic") + 0.5).write_parquet(path)  # the right hashes, wrong scores
    changed = audit_subset(rule.asset_name, files, [path], rule)
    assert (
        not changed.passed and f"{frame.height} row(s) differ from the rule's row in some column" in changed.problems[0]
    )
    frame.with_columns(pl.lit(0.99, pl.Float32).alias("punsafe")).write_parquet(path)  # unsafe values, same scores
    assert "differ from the rule's row in some column" in audit_subset(rule.asset_name, files, [path], rule).problems[0]


def test_an_empty_subset_fails_when_rows_meet_its_threshold(tmp_path: Path) -> None:
    files = write_tags(tmp_path / "tags", [[{"hash": 1, "LANGUAGE": None, "AESTHETIC_SCORE": 9.0}]])
    rule = V2_SUBSETS[-1]
    (path,) = write_rule(files, rule, tmp_path / "s")
    funnel = {"candidates": 1, "dropped_by_language": 1, "dropped_without_url": 0}
    result = audit_subset(rule.asset_name, files, [path], rule, funnel)
    # The writer and the recount agree (nothing is English), yet the empty subset is refused, saying why.
    assert result.expected_rows == result.actual_rows == 0 and result.digests_match
    assert result.problems == [
        "subset_6_5plus is empty although 1 row(s) meet its score threshold (dropped: by_language 1); check "
        "storage.language (the source's declared language), the safety table and the URLs"
    ]


def test_tags_rows_against_validated_rows(tmp_path: Path) -> None:
    files = write_tags(tmp_path / "tags", [[{"hash": 1}, {"hash": 2}], [{"hash": 3}]])
    assert audit_tags(files[0].parent, {"00000": 2, "00001": 1}).passed
    result = audit_tags(files[0].parent, {"00000": 3, "00002": 5})
    assert result.problems == {
        "00000": "2 tag rows, 3 rows validated",
        "00002": "no tags part",
        "00001": "a tags part for a shard that is not released",
    }
    assert (result.expected_rows, result.actual_rows) == (8, 3)
