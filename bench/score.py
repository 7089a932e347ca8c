"""Scoring throughput vs a plain numpy read of the same stored embeddings (clip-retrieval layout).

Usage: python bench/score.py [--rows 2000000] [--part-rows 1000000] [--dir /tmp/laion_assets_bench/score]
Builds the parts once (float16, unit-norm, 768-d, with metadata parquet), then in one run times, per pass over
all parts: (a) ``np.load`` of each npy (a plain read into memory), (b) the scoring path ``score_file`` with both
predictors (V1 linear + V2 collapsed MLP). Both run ``--repeat`` times, interleaved, after a warm-up; best pass
reported (wall time, and CPU time of the process: the machine may be shared).
"""

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.stored import score_file
from laion_assets.sources.layout import discover_parts

DIM = 768


def build(folder: Path, rows: int, part_rows: int) -> None:
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number, start in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - start)
        path = folder / "img_emb" / f"img_emb_{number}.npy"
        if path.exists() and np.load(path, mmap_mode="r").shape == (n, DIM):
            continue
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(n, DIM))
        for i in range(0, n, 65536):
            x = rng.standard_normal((min(65536, n - i), DIM), dtype=np.float32)
            out[i : i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        path.with_suffix(".tmp.npy").rename(path)
        urls = [f"https://example.com/{start + i}.jpg" for i in range(n)]
        pl.DataFrame({"URL": urls, "TEXT": urls}).write_parquet(folder / "metadata" / f"metadata_{number}.parquet")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved(repeat: int, fns: dict) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) time of each function over ``repeat`` rounds, alternating them so load hits both alike."""
    for fn in fns.values():
        fn()  # warm-up: page cache and allocator
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            fn()
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--part-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/score")
    args = parser.parse_args()
    folder = Path(args.dir)
    build(folder, args.rows, args.part_rows)
    parts = discover_parts(folder)
    rows = sum(np.load(p.embeddings, mmap_mode="r").shape[0] for p in parts)
    predictors = {"aesthetic": load_predictor(V1_WEIGHTS), "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS)}

    def plain_read() -> None:
        for part in parts:
            np.load(part.embeddings)

    def scoring() -> None:
        for part in parts:
            score_file(part.embeddings, predictors)

    best = interleaved(args.repeat, {"read": plain_read, "score": scoring})
    (read_s, read_cpu), (score_s, score_cpu) = best["read"], best["score"]
    size_gb = sum(p.embeddings.stat().st_size for p in parts) / 1e9
    print(f"{rows:,} rows in {len(parts)} parts ({size_gb:.2f} GB float16, {DIM}-d) under {folder}")
    for label, wall, cpu in (
        ("plain numpy read (np.load)", read_s, read_cpu),
        ("scoring (V1 + V2)", score_s, score_cpu),
    ):
        print(f"{label:<27} {wall:6.2f} s wall {rows / wall:>11,.0f} rows/s  ({cpu:.2f} s CPU)")
    print(f"ratio scoring / plain read: {read_s / score_s:.2f} wall, {read_cpu / score_cpu:.2f} CPU (goal >= 0.5)")


if __name__ == "__main__":
    main()
