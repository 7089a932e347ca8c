"""Acceptance 5: listing calls per step do not grow with the number of shards (a ``memory://`` source, counted).

The same graph runs on a source of 5 and of 40 parts held in fsspec's memory filesystem: one run of the shard steps
over all partitions, then the fan-in steps one by one. Every ``ls`` (a LIST request on an object store) and ``info``
(a HEAD request) on the source is counted. Listings are the same for 5 and 40 parts in every step; ``info`` calls
are too in the gate-only fan-in (``aesthetic_tags``); the shard steps make a fixed number per shard they validate or
score (the fingerprints taken around reading a part), and ``bucket_embeddings``, which reads every part's vectors
again, one per file it reads, never one per shard per shard.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import dagster as dg
import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from laion_assets.definitions import StorageResource, build_defs, register_shards
from laion_assets.demos.sample import SampleSpec, write_sample

SIZES = (5, 40)
_ids = itertools.count()


@pytest.fixture(scope="module")
def local_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 tiny parts (3 rows each) on disk, copied into memory:// by each case."""
    out = tmp_path_factory.mktemp("listing") / "source"
    write_sample(out, SampleSpec(parts=max(SIZES), rows_per_part=3, seed=11))
    return out


def memory_source(local: Path, parts: int) -> str:
    """The first ``parts`` parts of ``local`` copied to a fresh memory:// folder; returns its URL."""
    fs = fsspec.filesystem("memory")
    root = f"/listing-{next(_ids)}"
    for folder, pattern in (("img_emb", "img_emb_{}.npy"), ("metadata", "metadata_{}.parquet")):
        for n in range(parts):
            name = pattern.format(f"{n:02d}")
            fs.pipe(f"{root}/{folder}/{name}", (local / folder / name).read_bytes())
    return f"memory://{root}"


class Calls:
    """Counts ``ls`` and ``info`` on paths under one memory:// folder."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
        self.root, self.counts = root.removeprefix("memory://"), Counter()
        for name in ("ls", "info"):
            original = getattr(MemoryFileSystem, name)
            monkeypatch.setattr(MemoryFileSystem, name, self._counting(name, original))

    def _counting(self, name, original):
        def counted(fs, path, *args, **kwargs):
            if str(path).removeprefix("memory://").startswith(self.root):
                self.counts[name] += 1
            return original(fs, path, *args, **kwargs)

        return counted

    def take(self) -> dict[str, int]:
        """The counts since the last call."""
        taken = {"ls": self.counts["ls"], "info": self.counts["info"]}
        self.counts.clear()
        return taken


def count_steps(local: Path, parts: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Listing and info calls of each step on a source of ``parts`` parts."""
    source = memory_source(local, parts)
    calls = Calls(monkeypatch, source)
    storage = StorageResource(source=source, data_root=str(tmp_path / f"out-{parts}"), workers=2)
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, source)
    calls.take()
    job = build_defs({"storage": storage}).resolve_implicit_global_asset_job_def()
    counted = {}
    last = f"{parts - 1:05d}"
    shards = job.execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": "00000", "dagster/asset_partition_range_end": last},
        asset_selection=[dg.AssetKey("clip_embeddings"), dg.AssetKey("aesthetic_scores")],
    )
    assert shards.success
    counted["shard run"] = calls.take()
    for step in ("aesthetic_tags", "bucket_embeddings"):
        assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(step)]).success
        counted[step] = calls.take()
    return counted


def test_listing_calls_do_not_grow_with_the_number_of_shards(local_parts, tmp_path, monkeypatch):
    small, large = (count_steps(local_parts, n, tmp_path, monkeypatch) for n in SIZES)
    grown = max(SIZES) - min(SIZES)
    for step in small:
        assert large[step]["ls"] == small[step]["ls"], (step, small, large)
    assert large["aesthetic_tags"]["info"] == small["aesthetic_tags"]["info"], (small, large)
    # Per shard, the same few stats (the fingerprints around reading it), not a listing per shard.
    per_shard = (large["shard run"]["info"] - small["shard run"]["info"]) / grown
    assert per_shard == int(per_shard) and per_shard <= 8, (small, large)
    per_part = (large["bucket_embeddings"]["info"] - small["bucket_embeddings"]["info"]) / grown
    assert per_part <= 2, (small, large)
