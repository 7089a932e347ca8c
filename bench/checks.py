"""What issue 9's guarantees cost, in CPU time side by side in one process (wall time on a shared box is noise).

1. Validating a part (``clip_embeddings``) now hashes the whole file in the same pass: compare the validation
   with a plain read + float32 cast of the same file and with ``file_sha256`` alone.
2. Each subset's completeness check (the independent recount, ``audit.audit_subset``) against writing the subset
   (``subsets.write_rule``) on the tags table of ``bench/release.py``.

Usage: python bench/checks.py [--rows 10000000] [--part-rows 500000] [--rounds 3] [--dir /tmp/laion_assets_bench]
Each measurement alternates the compared calls over ``--rounds`` rounds and reports the median CPU seconds
(user + system of this process) and the load average at the start and end.
"""

import argparse
import os
import resource
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release import build  # noqa: E402  (bench/release.py builds the tags table)

from laion_assets.core.locations import file_sha256
from laion_assets.core.outputs import OutputLayout
from laion_assets.selection.audit import audit_subset
from laion_assets.selection.subsets import subset_files, write_rule
from laion_assets.selection.tags import tag_files
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.embeddings import open_embeddings, validate_embeddings


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def side_by_side(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median CPU seconds of each call, the calls alternated round by round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = cpu()
            call()
            times[name].append(cpu() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def plain_read(path: Path) -> None:
    array = open_embeddings(path)
    for start in range(0, array.shape[0], 65536):
        np.asarray(array[start : start + 65536], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--part-rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench")
    args = parser.parse_args()
    root = Path(args.dir)
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs")

    part = root / "checks" / "img_emb_0.npy"
    if not part.exists():
        part.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.part_rows, 768), dtype=np.float32)
        np.save(part, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    size = part.stat().st_size / 1e6
    print(f"1. validating one part: {args.part_rows:,} rows x 768 float16 ({size:.0f} MB), CPU s (median)")
    timed = side_by_side(
        {
            "read + float32 cast": lambda: plain_read(part),
            "file_sha256 alone": lambda: file_sha256(part),
            "validate_embeddings (checks + sha256)": lambda: validate_embeddings(part, 768, args.part_rows),
        },
        args.rounds,
    )
    for name, seconds in timed.items():
        print(f"   {name:<40} {seconds:6.2f} s  {args.part_rows / seconds / 1e6:5.2f} M rows/CPU-s")

    layout = OutputLayout(root / "release")
    build(layout, args.rows, 10)
    files = tag_files(layout)
    print(f"2. each subset over {args.rows:,} tag rows: writing it vs its completeness recount, CPU s (median)")
    for rule in (*V2_SUBSETS, *V1_SUBSETS):
        folder = layout.subset_dir(rule.asset_name)
        timed = side_by_side(
            {
                "write": lambda rule=rule, folder=folder: write_rule(files, rule, folder),
                "recount": lambda rule=rule, folder=folder: audit_subset(
                    rule.asset_name, files, subset_files(folder), rule
                ),
            },
            args.rounds,
        )
        ratio = timed["recount"] / timed["write"]
        print(
            f"   {rule.asset_name:<16} write {timed['write']:6.2f} s  recount {timed['recount']:6.2f} s  ({ratio:.2f}x)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(f"peak RSS of this process: {peak:.2f} GB; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
