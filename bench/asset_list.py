"""CPU time of loading the code location: ``dagster asset list -m laion_assets.definitions``, per tree.

Usage: python bench/asset_list.py [--runs 7] [TREE ...]
Each TREE is a checkout of the project (default: this one); the command runs in TREE with ``PYTHONPATH=TREE``, so
that tree's ``laion_assets`` is loaded (``-m`` puts the working directory first on the path). Runs of the trees
alternate, so drift in machine load falls on all of them. Reported per tree: the median user+sys CPU seconds of the
command and its children (``getrusage(RUSAGE_CHILDREN)``), the median wall time, and the load average before and
after (the machine may be shared).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMAND = ["asset", "list", "-m", "laion_assets.definitions"]


def one_run(tree: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one ``dagster asset list`` loading ``tree``'s code location."""
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("DAGSTER_HOME", None)  # a throwaway instance: the measure is the load, not an instance's storage
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(dagster), *COMMAND], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: dagster {' '.join(COMMAND)} failed:\n{done.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[Path(__file__).resolve().parents[1]])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    times: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in args.trees}
    for _ in range(args.runs):
        for tree in args.trees:
            times[tree].append(one_run(tree))
    for tree, runs in times.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"{tree}: CPU {cpu:.2f} s (median of {len(runs)}), wall {wall:.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
