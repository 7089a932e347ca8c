"""LAION-POP's CPU steps (issue 14): k-means of the concepts and the kNN selection, CPU time side by side.

Usage: python bench/pop_selection.py [--rows 200000] [--concepts 100000] [--k 1000] [--neighbours 100] [--tmp DIR]
Generates CLIP-like clustered unit vectors (laion_assets_tests/retrieval/clustered.py): ``--rows`` indexed rows in
4 shards with LAION-like metadata (sizes, scores, pwatermark) and ``--concepts`` concept vectors from other draws
of the same centres. Builds the flat kNN index folder, then times, in this process and one thread each:
``train_centroids`` (faiss k-means, k centroids, 20 iterations, then every concept assigned) and ``select`` (every
centroid's neighbours, filters, one row per hash), and the check's completeness recount of 32 centroids. Reported:
CPU seconds (user+sys of this process over the step), wall seconds, rows, and the load average before and after.
Extrapolation to LAION's 4.25 M concepts x 10,000 centroids is printed as a line per step; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from laion_assets.pop.centroids import KmeansParams, train_centroids  # noqa: E402
from laion_assets.pop.concepts import read_concepts  # noqa: E402
from laion_assets.pop.selection import PopParams, completeness_problems, select  # noqa: E402
from laion_assets.retrieval.index_build import IndexParams  # noqa: E402
from laion_assets.retrieval.index_folder import IndexedShard, build_index_folder  # noqa: E402
from laion_assets.retrieval.served import open_index  # noqa: E402
from laion_assets_tests.retrieval.clustered import clustered_embeddings  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(label: str, work):
    start_cpu, start = cpu(), time.perf_counter()
    out = work()
    spent, wall = cpu() - start_cpu, time.perf_counter() - start
    print(f"{label:<28} CPU {spent:8.1f} s   wall {wall:8.1f} s", flush=True)
    return out, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss

    faiss.omp_set_num_threads(1)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        vectors = clustered_embeddings(args.rows + args.concepts, 768, centres=3000, seed=1)
        shards, per = [], args.rows // 4
        for s in range(4):
            v = vectors[s * per : (s + 1) * per]
            np.save(root / f"emb_{s}.npy", v)
            ids = np.arange(s * per, (s + 1) * per)
            pl.DataFrame(
                {
                    "URL": [f"http://example.com/{i}.jpg" for i in ids],
                    "TEXT": [f"caption {i}" for i in ids],
                    "WIDTH": rng.choice([512.0, 800.0, 1024.0, 2048.0], per),
                    "HEIGHT": rng.choice([600.0, 768.0, 1200.0], per),
                    "similarity": rng.uniform(0.28, 0.4, per),
                    "hash": ids.astype(np.int64),
                    "aesthetic": rng.uniform(3, 8, per).astype(np.float32),
                    "AESTHETIC_SCORE": rng.uniform(3, 7, per).astype(np.float32),
                    "punsafe": rng.uniform(0, 1, per).astype(np.float32),
                    "pwatermark": rng.uniform(0, 1, per).astype(np.float32),
                }
            ).write_parquet(root / f"tags_{s}.parquet")
            shards.append(IndexedShard(f"{s:05d}", root / f"emb_{s}.npy", root / f"tags_{s}.parquet"))
        (root / "concepts" / "img_emb").mkdir(parents=True)
        np.save(root / "concepts" / "img_emb" / "img_emb_0.npy", vectors[args.rows :])
        timed("index (flat)", lambda: build_index_folder(root / "knn", shards, IndexParams("flat"), "bench", {}))
        buckets = root / "buckets"
        buckets.mkdir()
        for k in range(10):
            np.save(buckets / f"rating{k}.npy", vectors[rng.integers(args.rows)].astype(np.float32).reshape(1, -1))
        concepts = read_concepts(root / "concepts", 768)
        found, kmeans_cpu = timed(
            f"k-means {args.concepts} -> {args.k}", lambda: train_centroids(concepts, KmeansParams(k=args.k))
        )
        served = open_index(root / "knn", ratings_dirs=[buckets])
        rule = PopParams(neighbours=args.neighbours)
        rows, select_cpu = timed(f"select {args.k} x {args.neighbours}", lambda: select(served, found.vectors, rule))
        sample = np.arange(min(32, args.k))
        problems, _ = timed("check: recount 32 centroids", lambda: completeness_problems(
            served, found.vectors, rows, rule, sample))  # fmt: skip
        print(f"selected {rows.height} rows from {args.k} centroids; recount problems: {len(problems)}")
        print(f"k-means sizes: {found.summary()}")
        # faiss k-means costs about n_train x k x iterations; LAION: 2.56 M training rows (256 x 10,000) x 10,000.
        train = min(args.concepts, args.k * 256)
        scale = (2_560_000 * 10_000) / (train * args.k)
        print(
            f"k-means at LAION's size (x{scale:.0f} the work): ~{kmeans_cpu * scale / 3600:.0f} CPU-hours on this box"
        )
        print(f"selection per centroid: {select_cpu / args.k * 1000:.1f} CPU-ms (flat index of {args.rows} rows)")
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
