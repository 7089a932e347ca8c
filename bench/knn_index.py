"""The kNN index (issue 13): flat vs ivf_pq built on a generated clustered set, CPU time, recall@10, peak memory.

Usage: python bench/knn_index.py [--rows 300000] [--dim 768] [--shards 6] [--kinds flat,ivf_pq] [--tmp DIR]
Writes ``--shards`` float16 .npy files of CLIP-like clustered unit vectors (laion_assets_tests/retrieval/clustered.py)
to a temporary folder, memory-maps them, and builds each kind in its own child process (each child's peak RSS and
CPU time come from ``os.wait4``, so they are that build's alone). Reported per kind: build CPU seconds
(user+sys of the child: build_index's own CPU time, recall measurement included) and per 1M rows, recall@10 on 200
sampled rows (and the codes' own, before re-ranking), CPU per query of ``search`` (k=10, one query a call, after
the build), peak RSS, index size on disk, the load average. The data and
the indices are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERIES = 200
sys.path.insert(0, str(ROOT))

from laion_assets_tests.retrieval.clustered import clustered_embeddings  # noqa: E402


def child(data: Path, kind: str, out: Path) -> None:
    """Build one index over the .npy files in ``data`` (memory-mapped) and print its IndexInfo as JSON."""
    from laion_assets.retrieval.index_build import IndexParams, ShardVectors, build_index, load_index, search

    shards = [ShardVectors(p.stem, np.load(p, mmap_mode="r")) for p in sorted(data.glob("*.npy"))]
    info = build_index(shards, out, IndexParams(kind=kind), progress=lambda line: print(line, file=sys.stderr))
    # Queries after the build: new rows around the same centres (a shorter draw of the same seed), one a call as the
    # service asks them.
    queries = clustered_embeddings(QUERIES, shards[0].embeddings.shape[1], seed=1)[-QUERIES:].astype(np.float32)
    index = load_index(out, info)
    start = os.times()
    for query in queries:
        search(index, info, shards, query[None, :], 10)
    end = os.times()
    per_query = (end.user + end.system - start.user - start.system) / QUERIES * 1000
    print(json.dumps({**info.to_dict(), "query_cpu_ms": per_query}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--kinds", default="flat,ivf_pq")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("DATA", "KIND", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="knn-bench-", dir=args.tmp))
    try:
        data = work / "data"
        data.mkdir()
        vectors = clustered_embeddings(args.rows, args.dim, seed=1)
        for i, part in enumerate(np.array_split(vectors, args.shards)):
            np.save(data / f"{i:05d}.npy", part)
        del vectors
        print(f"data: {args.rows} x {args.dim} float16 in {args.shards} shards")
        for kind in args.kinds.split(","):
            out = work / kind
            wall = time.perf_counter()
            logs = work / f"{kind}.log"
            with open(logs, "w") as err:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--child", str(data), kind, str(out)],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                stdout = proc.stdout.read()
                # wait4: this child's own rusage (RUSAGE_CHILDREN's maxrss is the largest of all children so far)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - wall
            if proc.returncode != 0:
                raise SystemExit(f"{kind} failed:\n{logs.read_text()[-3000:]}")
            info = json.loads(stdout.strip().splitlines()[-1])
            cpu = usage.ru_utime + usage.ru_stime
            size = sum(f.stat().st_size for f in out.iterdir())
            load = os.getloadavg()
            print(
                f"{kind}: {info['params']['index_factory']}, nprobe {info['params'].get('nprobe', '-')}, "
                f"train rows {info['params'].get('train_rows', '-')}\n"
                f"  build_index CPU {info['build_cpu_seconds']:.1f} s "
                f"({info['build_cpu_seconds'] / args.rows * 1e6:.1f} s per 1M rows), "
                f"child process CPU {cpu:.1f} s, wall {wall:.1f} s\n"
                f"  recall@10 {info['recall_at_10']:.3f} (codes alone "
                f"{info['params'].get('recall_at_10_codes_only', 1.0):.3f}) on {info['recall_queries']} rows\n"
                f"  search() k=10, one query at a time: {info['query_cpu_ms']:.2f} CPU-ms per query\n"
                f"  peak RSS {usage.ru_maxrss / 1024:.0f} MiB, on disk {size / 2**20:.1f} MiB, "
                f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
