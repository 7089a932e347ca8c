"""Benchmark LAION's on-disk KV: build a large ``<qe`` file, then batched and single lookups with peak RSS.

Usage: python bench/kv.py [--entries 10000000] [--batch 100000] [--dir /tmp/laion-kv-bench]
Each phase runs in its own process so its peak RSS (ru_maxrss) is its own. Peak RSS counts the file pages the
memory map has touched (reclaimable page cache); RssAnon is the process's own memory, which stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from laion_assets.release.kv import OnDiskKV, write_kv


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_parts_mib() -> dict[str, float]:
    """Current anonymous vs file-backed (mmap/page-cache, reclaimable) resident memory, from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            name, value, _ = line.split()
            out[name.rstrip(":")] = round(int(value) / 1024, 1)
    return out


def build(path: Path, entries: int, batch: int = 1_000_000) -> dict:
    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, entries, batch):
            n = min(batch, entries - start)
            yield rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64), [rng.uniform(0, 10, size=n)]

    t = time.perf_counter()
    summary = write_kv(batches(), path)
    seconds = time.perf_counter() - t
    parts = rss_parts_mib()
    return {
        "records": summary.records,
        "build_s": round(seconds, 2),
        "build_peak_rss_mib": round(peak_rss_mib(), 1),
        "build_end_rss_anon_mib": parts.get("RssAnon"),
        "build_end_rss_file_mib": parts.get("RssFile"),
    }


def lookup(path: Path, batch: int, rounds: int) -> dict:
    base = peak_rss_mib()
    kv = OnDiskKV(path)
    rng = np.random.default_rng(1)
    # Query keys read straight from random records, so every lookup hits.
    with open(path, "rb") as f:
        data = np.memmap(f, dtype=kv.dtype, mode="r")
        queries = [np.array(data["hash"][rng.integers(0, len(kv), size=batch)]) for _ in range(rounds)]
        check = struct.unpack("<qe", bytes(data[123:124].tobytes()))
    t = time.perf_counter()
    for q in queries:
        kv.get_many(q)
    batched_s = time.perf_counter() - t
    singles = queries[0][:20_000]
    t = time.perf_counter()
    for k in singles:
        kv.get(int(k))
    single_s = time.perf_counter() - t
    assert kv[check[0]] == check[1]
    parts = rss_parts_mib()
    return {
        "lookup_end_rss_anon_mib": parts.get("RssAnon"),
        "lookup_end_rss_file_mib": parts.get("RssFile"),
        "batched_lookups_per_s": round(batch * rounds / batched_s),
        "single_lookups_per_s": round(len(singles) / single_s),
        "lookup_peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_open_mib": round(base, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir", default="/tmp/laion-kv-bench")
    parser.add_argument("--phase", choices=["all", "build", "lookup"], default="all")
    args = parser.parse_args()
    path = Path(args.dir) / f"aesthetic-{args.entries}.kv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.phase == "build":
        print(json.dumps(build(path, args.entries)))
        return
    if args.phase == "lookup":
        print(json.dumps(lookup(path, args.batch, args.rounds)))
        return
    result = {"entries": args.entries, "file_mib": None, "batch": args.batch}
    for phase in ("build", "lookup"):
        cmd = [sys.executable, __file__, "--phase", phase, "--entries", str(args.entries), "--batch", str(args.batch)]
        cmd += ["--rounds", str(args.rounds), "--dir", args.dir]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
        result.update(json.loads(out.strip().splitlines()[-1]))
    result["file_mib"] = round(path.stat().st_size / 2**20, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
