import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.release.kv import (
    AESTHETIC_FORMAT,
    KV_FILES,
    SAFETY_FORMAT,
    MissingKeyError,
    OnDiskKV,
    parquet_batches,
    write_kv,
)
from laion_assets.release.rebuild import build_kvs
from laion_assets.selection.tags import scan_tags
from laion_assets_tests.release_helpers import build


def struct_read(path: Path, fmt: str) -> list[tuple]:
    """Independent reader: unpack every record with the struct module."""
    return list(struct.iter_unpack(fmt, path.read_bytes()))


def expected_map(keys: np.ndarray, *values: np.ndarray) -> dict[int, tuple[float, ...]]:
    """First finite row per hash, values rounded to float16 (what LAION's '<qe' stores)."""
    out: dict[int, tuple[float, ...]] = {}
    for i, k in enumerate(keys.tolist()):
        vals = tuple(float(v[i]) for v in values)
        if k in out or not all(np.isfinite(vals)):
            continue
        out[k] = tuple(float(np.float16(v)) for v in vals)
    return out


@pytest.fixture
def random_batches() -> list[tuple[np.ndarray, list[np.ndarray]]]:
    rng = np.random.default_rng(3)
    keys = rng.integers(-(2**63), 2**63 - 1, size=5000, dtype=np.int64)
    keys[100:110] = keys[0:10]  # repeated hashes: the first row wins
    keys[4000] = np.iinfo(np.int64).min
    keys[4001] = np.iinfo(np.int64).max
    scores = rng.uniform(-1, 11, size=5000)
    scores[[7, 300]] = np.nan  # null scores are dropped
    return [(keys[i : i + 1000], [scores[i : i + 1000]]) for i in range(0, 5000, 1000)]


def test_every_hash_maps_to_its_score(tmp_path: Path, random_batches) -> None:
    keys = np.concatenate([b[0] for b in random_batches])
    scores = np.concatenate([b[1][0] for b in random_batches])
    summary = write_kv(random_batches, tmp_path / "a.kv", run_rows=700, block_rows=64)
    expected = expected_map(keys, scores)
    records = struct_read(tmp_path / "a.kv", AESTHETIC_FORMAT)
    assert summary.records == len(records) == len(expected)
    assert [r[0] for r in records] == sorted(expected)  # sorted by signed hash, no repeats
    assert {r[0]: (r[1],) for r in records} == expected
    kv = OnDiskKV(tmp_path / "a.kv")
    for k, (v,) in expected.items():
        assert kv[k] == v
    got = kv.get_many(list(expected))
    np.testing.assert_array_equal(got[:, 0], np.array([v for (v,) in expected.values()], dtype=np.float32))


def test_external_sort_matches_in_memory_sort(tmp_path: Path, random_batches) -> None:
    write_kv(random_batches, tmp_path / "small_runs.kv", run_rows=300, block_rows=17)
    write_kv(random_batches, tmp_path / "one_run.kv", run_rows=10**9)
    assert (tmp_path / "small_runs.kv").read_bytes() == (tmp_path / "one_run.kv").read_bytes()


def test_missing_hash_raises(tmp_path: Path, random_batches) -> None:
    write_kv(random_batches, tmp_path / "a.kv")
    kv = OnDiskKV(tmp_path / "a.kv")
    present = int(random_batches[0][0][1])
    absent = 12345
    assert absent not in {int(k) for b in random_batches for k in b[0]}
    with pytest.raises(MissingKeyError, match="hash 12345 is not in"):
        kv.get(absent)
    with pytest.raises(KeyError):
        kv[absent]
    with pytest.raises(MissingKeyError, match="1 of 2 hashes .*12345"):
        kv.get_many([present, absent])
    assert present in kv and absent not in kv
    np.testing.assert_array_equal(kv.positions([absent, present]) >= 0, [False, True])


def test_safety_kv_two_values(tmp_path: Path) -> None:
    keys = np.array([5, -3, 9, -3], dtype=np.int64)
    punsafe = np.array([0.1, 0.9, np.nan, 0.2])
    pwatermark = np.array([0.5, 0.25, 0.3, 0.7])
    write_kv([(keys, [punsafe, pwatermark])], tmp_path / "safety.kv", SAFETY_FORMAT)
    records = struct_read(tmp_path / "safety.kv", SAFETY_FORMAT)
    assert records == [(-3, float(np.float16(0.9)), 0.25), (5, float(np.float16(0.1)), 0.5)]
    kv = OnDiskKV(tmp_path / "safety.kv", SAFETY_FORMAT)
    assert kv[-3] == (float(np.float16(0.9)), 0.25)
    with pytest.raises(MissingKeyError):
        kv.get(9)  # its punsafe was null: dropped


def test_bad_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.kv"
    bad.write_bytes(b"\x00" * 15)
    with pytest.raises(BadInputError, match="broken.kv: 15 bytes is not a whole number of 10-byte"):
        OnDiskKV(bad)
    with pytest.raises(BadInputError, match="not found"):
        OnDiskKV(tmp_path / "nope.kv")
    empty = tmp_path / "empty.kv"
    write_kv([], empty)
    assert empty.stat().st_size == 0 and len(OnDiskKV(empty)) == 0
    with pytest.raises(MissingKeyError):
        OnDiskKV(empty).get(1)


def test_kv_from_tags_table(small_sample: Path, tmp_path: Path) -> None:
    layout, _ = build(small_sample, tmp_path / "out")
    build_kvs(layout)
    tags = scan_tags(layout).select("hash", "aesthetic", "punsafe", "pwatermark").collect()
    expected = expected_map(tags["hash"].to_numpy(), tags["aesthetic"].to_numpy())
    assert tags.height > len(expected)  # the sample has repeated hashes
    records = struct_read(layout.kv_dir / "aesthetic.kv", AESTHETIC_FORMAT)
    assert {r[0]: (r[1],) for r in records} == expected
    safety = struct_read(layout.kv_dir / "safety.kv", SAFETY_FORMAT)
    want = expected_map(tags["hash"].to_numpy(), tags["punsafe"].to_numpy(), tags["pwatermark"].to_numpy())
    assert {r[0]: r[1:] for r in safety} == want


def test_parquet_batches_names_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame({"hash": [1, 2]}).write_parquet(path)
    with pytest.raises(BadInputError, match="t.parquet: column"):
        list(parquet_batches([path], KV_FILES["aesthetic.kv"][1]))
