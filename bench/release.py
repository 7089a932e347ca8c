"""Release-level fan-in over a large tags table: every subset plus the score histogram, timed, with peak RSS.

Usage: python bench/release.py [--rows 10000000] [--parts 10] [--dir /tmp/laion_assets_bench/release]
Builds ``tags/part-*.parquet`` once (LAION's tags columns, realistic URL/caption lengths, ~6% unsafe, ~10%
watermarked, ~2% duplicate hashes, 72% English), then runs the work in a child process — the same calls the
assets make (``write_rule`` for the 8 subsets, ``lazy_counts`` for both score
columns). Each step runs in its own child process, as Dagster's default multiprocess executor runs each asset,
and reports its wall time and peak RSS (``ru_maxrss`` of that child, from ``os.wait4``); then all steps run once
more in a single child (as the in-process executor of ``make demo`` runs them) for the one-process peak.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import write_parquet
from laion_assets.core.outputs import OutputLayout
from laion_assets.selection.histogram import lazy_counts
from laion_assets.selection.schemas import TAGS_COLUMNS
from laion_assets.selection.subsets import subset_rows, write_rule
from laion_assets.selection.tags import scan_tags, tag_files
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS

LANGS = np.array(["en"] * 18 + ["de", "fr", "es", "ja", "zh", "ru", "pt"])


def build(layout: OutputLayout, rows: int, parts: int) -> None:
    per = rows // parts
    for p in range(parts):
        path = layout.tags_part(f"{p:05d}")
        if path.exists():
            continue
        rng = np.random.default_rng(p)
        ids = np.arange(p * per, (p + 1) * per)
        dup = rng.random(per) < 0.02
        ids[dup] = ids[dup] - rng.integers(1, 1000, dup.sum()).clip(max=ids[dup] - p * per)
        url = pl.Series(ids).cast(pl.String)
        frame = pl.DataFrame({
            "URL": "https://images.example-cdn.com/photos/2021/" + url + "/large_" + url + ".jpg",
            "TEXT": "A photo of item number " + url + " on a wooden table, high resolution stock image",
            "WIDTH": rng.choice([256.0, 512.0, 640.0, 1024.0], per),
            "HEIGHT": rng.choice([256.0, 512.0, 480.0, 768.0], per),
            "similarity": rng.uniform(0.28, 0.45, per),
            "punsafe": np.where(rng.random(per) < 0.06, rng.uniform(0.5, 1, per), rng.beta(0.6, 12, per)),
            "pwatermark": np.where(rng.random(per) < 0.1, rng.uniform(0.8, 1, per), rng.beta(1.2, 6, per)),
            "LANGUAGE": LANGS[rng.integers(0, len(LANGS), per)],
            "hash": (ids * 2654435761) % (2**62) - 2**61,
            "aesthetic": rng.normal(5.2, 2.0, per),
            "AESTHETIC_SCORE": rng.normal(5.0, 1.0, per),
        }).select([pl.col(c).cast(t) for c, t in TAGS_COLUMNS.items()])  # fmt: skip
        write_parquet(frame.to_arrow(), path)


STEPS = [*(r.asset_name for r in [*V2_SUBSETS, *V1_SUBSETS]), "score_histogram"]


def work(root: Path, steps: list[str]) -> None:
    layout = OutputLayout(root)
    rules = {r.asset_name: r for r in [*V2_SUBSETS, *V1_SUBSETS]}
    for step in steps:
        start = time.perf_counter()
        if step == "score_histogram":
            counts = {c: lazy_counts(scan_tags(layout), c) for c in ("aesthetic", "AESTHETIC_SCORE")}
            rows = sum(counts["aesthetic"].values())
        else:
            rule = rules[step]
            rows = subset_rows(write_rule(tag_files(layout), rule, layout.subset_dir(rule.asset_name)))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        print(f"  {step:<16} {time.perf_counter() - start:6.2f} s  {rows:>11,} rows  (process peak {peak:.2f} GB)")


def child(root: Path, steps: list[str]) -> tuple[float, float]:
    """Run steps in a child process; return its wall time and peak RSS in GB."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--dir", str(root), "--work", *steps])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"step(s) {steps} failed with exit code {process.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / 1e9  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/release")
    parser.add_argument("--work", nargs="+", help=argparse.SUPPRESS)  # inside a timed child
    args = parser.parse_args()
    root = Path(args.dir)
    if args.work:
        work(root, args.work)
        return
    build(OutputLayout(root), args.rows, args.parts)
    rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in sorted((root / "tags").glob("*.parquet")))
    size = sum(f.stat().st_size for f in (root / "tags").glob("*.parquet")) / 1e9
    print(f"tags: {rows:,} rows in {args.parts} parts ({size:.2f} GB parquet) under {root / 'tags'}")
    print("one process per step (Dagster's multiprocess executor):")
    results = [child(root, [step]) for step in STEPS]
    wall, peak = sum(w for w, _ in results), max(p for _, p in results)
    print(
        f"fan-in, 9 steps in sequence: {wall:.1f} s incl. process starts (goal < 60 s), max step peak RSS {peak:.2f} GB"
    )
    print("all steps in one process (in-process executor):")
    wall, peak = child(root, STEPS)
    print(f"fan-in in one process: {wall:.1f} s (goal < 60 s), peak RSS {peak:.2f} GB (goal < 2 GB)")


if __name__ == "__main__":
    main()
