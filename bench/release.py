"""Release-level fan-in over a large tags table: every subset plus the score histogram, timed, with peak RSS.

Usage: python bench/release.py [--rows 10000000] [--parts 10] [--dir /tmp/laion_assets_bench/release]
Builds ``tags/part-*.parquet`` once (LAION's tags columns, realistic URL/caption lengths, ~6% unsafe, ~10%
watermarked, ~2% duplicate hashes, 72% English), then runs the work in a child process — the same calls the
assets make (``v2_subset``/``v1_subset`` + ``write_subset`` for the 8 subsets, ``lazy_counts`` for both score
columns) — and reports its wall time and peak RSS (``ru_maxrss`` of that child only).
"""

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.atomic import write_parquet
from laion_assets.histogram import lazy_counts
from laion_assets.outputs import OutputLayout
from laion_assets.schemas import TAGS_COLUMNS
from laion_assets.subsets import subset_rows, v1_subset, v2_subset, write_subset
from laion_assets.tags import scan_tags
from laion_assets.thresholds import V1_SUBSETS, V2_SUBSETS, V2Subset

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


def work(root: Path) -> None:
    layout = OutputLayout(root)
    timings = {}
    for rule in [*V2_SUBSETS, *V1_SUBSETS]:
        start = time.perf_counter()
        tags = scan_tags(layout)
        query = v2_subset(tags, rule) if isinstance(rule, V2Subset) else v1_subset(tags, rule)
        path = write_subset(query, layout.subset_dir(rule.asset_name))
        timings[rule.asset_name] = (time.perf_counter() - start, subset_rows(path))
    start = time.perf_counter()
    counts = {c: lazy_counts(scan_tags(layout), c) for c in ("aesthetic", "AESTHETIC_SCORE")}
    timings["score_histogram"] = (time.perf_counter() - start, sum(counts["aesthetic"].values()))
    for name, (seconds, rows) in timings.items():
        print(f"  {name:<16} {seconds:6.2f} s  {rows:>11,} rows", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/release")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)  # the timed child
    args = parser.parse_args()
    root = Path(args.dir)
    if args.work:
        work(root)
        return
    build(OutputLayout(root), args.rows, args.parts)
    rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in sorted((root / "tags").glob("*.parquet")))
    size = sum(f.stat().st_size for f in (root / "tags").glob("*.parquet")) / 1e9
    print(f"tags: {rows:,} rows in {args.parts} parts ({size:.2f} GB parquet) under {root / 'tags'}")
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--work", "--dir", str(root)], check=True)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    print(f"fan-in (8 subsets + histogram): {wall:.1f} s (goal < 60 s), peak RSS {peak_gb:.2f} GB (goal < 2 GB)")


if __name__ == "__main__":
    main()
