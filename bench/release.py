"""Release-level fan-in over large tags tables: every subset plus the score histogram, with CPU time and peak RSS.

Usage: nice -n 10 python bench/release.py [--rows 10000000 30000000 100000000] [--part-rows 1000000]
       [--dir /tmp/laion_assets_bench/fanin] [--compare-upto 10000000] [--in-memory-upto 30000000]
       [--checks-upto 30000000] [--keep]

For each row count, builds ``tags/part-*.parquet`` (one part per ``--part-rows`` rows, as one tags part per
shard of ~1M rows in laion2B-en; LAION's tags columns, URL/caption strings of 60-90 chars, ~6% unsafe, ~10%
watermarked, ~2% duplicate hashes within and across parts, 72% English), then runs each step in its own child
process, as Dagster's multiprocess executor runs each asset, with the calls the assets make (``write_rule`` for
the 8 subsets, ``lazy_counts`` for both score columns): its wall time, CPU time (user + system) and peak RSS
(``ru_maxrss``) come from ``os.wait4`` of that child. Up to ``--in-memory-upto`` rows, the V1 subset is also
written with the de-duplication it replaced (every safe hash in memory, ``in_memory_dedup``) for its peak RSS; up
to ``--compare-upto`` rows, both V1 subsets are checked identical (same rows, same order, same values) to that
version's output; up to ``--checks-upto`` rows, the ``complete`` and ``meets_rule`` checks of
subset_4_5plus and laion_aesthetic run after their write. Each table is deleted after its run unless ``--keep``;
subsets are deleted after their step.
"""

import argparse
import datetime
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # laion_assets_tests: the in-memory version
from laion_assets.core.atomic import PARQUET_OPTIONS, write_parquet
from laion_assets.core.outputs import OutputLayout
from laion_assets.selection.audit import audit_subset
from laion_assets.selection.histogram import lazy_counts
from laion_assets.selection.schemas import TAGS_COLUMNS, V1_SUBSET_COLUMNS
from laion_assets.selection.subsets import rule_violations, subset_files, subset_rows, v1_subset, write_rule
from laion_assets.selection.tags import TAGS_ID_KEY, scan_tags, tag_files
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS, V1Subset
from laion_assets_tests.selection.in_memory_dedup import in_memory_keep_rows

LANGS = np.array(["en"] * 18 + ["de", "fr", "es", "ja", "zh", "ru", "pt"])


def build(layout: OutputLayout, rows: int, parts: int) -> None:
    per = rows // parts
    for p in range(parts):
        path = layout.tags_part(f"{p:05d}")
        if path.exists():
            continue
        rng = np.random.default_rng(p)
        ids = np.arange(p * per, (p + 1) * per)
        dup = rng.random(per) < 0.02  # a repeat of a row up to three parts back: within and across parts
        ids[dup] = (ids[dup] - rng.integers(1, 3 * per, dup.sum())).clip(min=0)
        url = pl.Series(ids).cast(pl.String)
        frame = pl.DataFrame({
            "URL": "https://images.example-cdn.com/photos/" + url + "/large_" + url + ".jpg",
            "TEXT": "A photo of item number " + url + " on a wooden table, stock image",
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
        write_parquet(frame.to_arrow(), path, {TAGS_ID_KEY: f"bench-{rows}"})


STEPS = [*(r.asset_name for r in [*V2_SUBSETS, *V1_SUBSETS]), "score_histogram"]
IN_MEMORY = "laion_aesthetic (in-memory dedup)"
# The blocking checks of the largest V2 and V1 subsets run in the same run as the fan-in: measured after their write.
CHECKED = ("subset_4_5plus", "laion_aesthetic")
CHECKS = ("complete", "meets_rule")
COMPARE = "compare V1 subsets"


def write_in_memory(files: list[Path], rule: V1Subset, path: Path) -> int:
    """The V1 writer as it was: rows from the in-memory de-duplication, appended to one parquet file."""
    schema = pl.DataFrame(schema=V1_SUBSET_COLUMNS).to_arrow().schema
    rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, **PARQUET_OPTIONS) as writer:
        for tags, keep in zip(files, in_memory_keep_rows(files, rule), strict=True):
            if keep.size:
                part = pl.read_parquet(tags)[keep]
                writer.write_table(v1_subset(part.lazy(), rule, filtered=True).collect().to_arrow().cast(schema))
                rows += keep.size
    return rows


def compare(layout: OutputLayout) -> int:
    """Check each V1 subset written by ``write_rule`` equals the in-memory version's; return its rows."""
    files = tag_files(layout)
    rows = 0
    for rule in V1_SUBSETS:
        streamed = write_rule(files, rule, layout.subset_dir(rule.asset_name))
        old = layout.root / "in_memory" / f"{rule.asset_name}.parquet"
        write_in_memory(files, rule, old)
        a, b = pl.read_parquet(streamed), pl.read_parquet(old)
        if not a.equals(b):
            raise SystemExit(f"{rule.asset_name}: the streamed subset differs from the in-memory one")
        print(f"  {rule.asset_name}: identical, {a.height:,} rows in {len(streamed)} part(s), same order and values")
        rows += a.height
    return rows


def work(root: Path, step: str) -> None:
    layout = OutputLayout(root)
    rules = {r.asset_name: r for r in [*V2_SUBSETS, *V1_SUBSETS]}
    if step == "score_histogram":
        counts = {c: lazy_counts(scan_tags(layout), c) for c in ("aesthetic", "AESTHETIC_SCORE")}
        rows, parts = sum(counts["aesthetic"].values()), 0
    elif step == IN_MEMORY:
        rows, parts = (
            write_in_memory(tag_files(layout), V1_SUBSETS[0], root / "in_memory" / "laion_aesthetic.parquet"),
            1,
        )
    elif step == COMPARE:
        rows, parts = compare(layout), 0
    elif ":" in step:  # NAME:CHECK, on the subset written by the step before
        name, check = step.split(":")
        rule, parts_ = rules[name], subset_files(layout.subset_dir(name))
        if check == "complete":
            result = audit_subset(name, tag_files(layout), parts_, rule)
            if not result.passed:
                raise SystemExit(f"{name}: completeness check failed: {result.problems}")
            rows, parts = result.actual_rows, len(parts_)
        else:
            rows, parts = rule_violations(parts_, rule), len(parts_)
            if rows:
                raise SystemExit(f"{name}: {rows} rows break the rule")
    else:
        rule = rules[step]
        written = write_rule(tag_files(layout), rule, layout.subset_dir(rule.asset_name))
        rows, parts = subset_rows(written), len(written)
    print(f"ROWS {rows} {parts}")


def child(root: Path, step: str) -> dict[str, float]:
    """Run one step in a child process; its wall time, CPU time and peak RSS (GB), and what it wrote."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--dir", str(root), "--work", step], stdout=subprocess.PIPE, text=True
    )
    out = process.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"step {step} failed with exit code {os.waitstatus_to_exitcode(status)}:\n{out}")
    lines = out.splitlines()
    rows, parts = (int(v) for v in lines[-1].split()[1:])
    for line in lines[:-1]:
        print(line)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak": usage.ru_maxrss * 1024 / 1e9,
            "rows": rows, "parts": parts}  # fmt: skip


def run(
    root: Path, rows: int, part_rows: int, in_memory: bool, check: bool, checks: bool, only: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """Build a tags table of ``rows`` rows and time every step on it, each in its own process."""
    layout = OutputLayout(root)
    start = time.perf_counter()
    # Built in a child: Linux counts the RSS high-water mark of the process that execs a child into the child's
    # ru_maxrss, so this launcher must never hold much memory itself.
    subprocess.run(
        [sys.executable, __file__, "--dir", str(root), "--build", str(rows), str(max(1, rows // part_rows))],
        check=True,
    )
    files = tag_files(layout)
    size = sum(f.stat().st_size for f in files) / 1e9
    built = time.perf_counter() - start
    print(f"\ntags: {rows:,} rows in {len(files)} parts ({size:.2f} GB parquet), built in {built:.0f} s")
    print(f"  {'step':<34} {'wall':>8} {'CPU':>8} {'peak RSS':>9} {'rows':>12} parts   load")
    results = {}
    steps = [
        *(s for s in STEPS if not only or s in only),
        *([IN_MEMORY] if in_memory else []),
        *([COMPARE] if check else []),
    ]
    for step in steps:
        for name in [step, *(f"{step}:{c}" for c in (CHECKS if checks and step in CHECKED else ()))]:
            r = results[name] = child(root, name)
            print(
                f"  {name:<34} {r['wall']:7.1f}s {r['cpu']:7.1f}s {r['peak']:7.2f}GB {r['rows']:>12,} {r['parts']:>5}"
                f"   {os.getloadavg()[0]:.1f}"
            )
        if (layout.subsets_dir / step).is_dir():
            shutil.rmtree(layout.subsets_dir / step)  # disk: keep only the tags
    fan_in = [results[s] for s in STEPS if s in results]
    print(
        f"  fan-in ({len(fan_in)} steps): {sum(r['wall'] for r in fan_in):.0f} s wall, "
        f"{sum(r['cpu'] for r in fan_in):.0f} s CPU, max step peak RSS {max(r['peak'] for r in fan_in):.2f} GB"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 30_000_000, 100_000_000])
    parser.add_argument("--part-rows", type=int, default=1_000_000, help="rows per tags part (one shard's)")
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/fanin")
    parser.add_argument("--compare-upto", type=int, default=10_000_000)
    parser.add_argument("--in-memory-upto", type=int, default=30_000_000)
    # The V1 completeness recount de-duplicates in memory (polars): above 30M rows it would crowd a 24 GiB machine.
    parser.add_argument("--checks-upto", type=int, default=30_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated tables")
    parser.add_argument("--steps", nargs="+", choices=STEPS, help="only these steps (default: all)")
    parser.add_argument("--work", help=argparse.SUPPRESS)  # inside a timed child
    parser.add_argument("--build", type=int, nargs=2, help=argparse.SUPPRESS)  # ROWS PARTS, inside a child
    args = parser.parse_args()
    if args.work:
        work(Path(args.dir), args.work)
        return
    if args.build:
        build(OutputLayout(Path(args.dir)), *args.build)
        return
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()}")  # fmt: skip
    all_results = {}
    for rows in args.rows:
        root = Path(args.dir) / str(rows)
        try:
            all_results[rows] = run(
                root,
                rows,
                args.part_rows,
                rows <= args.in_memory_upto,
                rows <= args.compare_upto,
                rows <= args.checks_upto,
                args.steps,
            )
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    launcher = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(f"\npeak RSS (GB) per step (this launcher's own peak: {launcher:.2f} GB); load average {os.getloadavg()}")
    print(f"  {'step':<34}" + "".join(f"{rows:>14,}" for rows in all_results))
    for step in [*STEPS, *(f"{n}:{c}" for n in CHECKED for c in CHECKS), IN_MEMORY]:
        print(f"  {step:<34}" + "".join(
            f"{r[step]['peak']:>14.2f}" if step in r else f"{'-':>14}" for r in all_results.values()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
