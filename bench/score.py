"""CPU cost of ``laion-assets score`` against a plain ``np.load`` of the same files and against LAION's path.

Usage: python bench/score.py [--parts 4] [--part-rows 1000000] [--rounds 2] [--dir /tmp/laion_assets_bench/score4m]
                             [--embedding-reader DIR]

Builds the parts once (clip-retrieval layout, zero-padded names: float16, L2-normalised random 768-d vectors, and
metadata with URL, TEXT, WIDTH, HEIGHT, similarity). Then, side by side in one run, each contender runs as its own
process, exactly as a user starts it, and its CPU time (user + system, process start and imports included) comes
from ``os.wait4``:

- ``read``: ``python -c`` that ``np.load``s every part (a plain read into memory, nothing else);
- ``score``: ``laion-assets score DIR --out OUT`` (both active heads; checks, hashes, parquet output);
- ``score --threads 2 --workers 1`` and ``score --workers 1``: the thread settings compared;
- ``laion``: LAION's path, ``bench/laion_path.py`` (embedding-reader + a numpy head, as its
  ``examples/aesthetic_inference.py``); needs ``embedding_reader`` importable from ``--embedding-reader DIR``
  (e.g. ``pip install --target DIR --no-deps embedding-reader==1.8.1``), else it is left out.

The contenders alternate round by round after a warm-up read (page cache warm), so load on a shared machine falls
on all of them; the median CPU of each is reported with the load average before and after.

Then, in this one process (one BLAS/torch thread), the passes alone per part, alternated: ``np.load``; the fused
pass of ``aesthetic_scores`` and ``laion-assets score`` (checks + both heads, ``score_vectors``); the fused pass of
``clip_embeddings`` (checks + sha256, ``validate_embeddings``); and the validation it replaced (a second read: numpy
float16 -> float32 cast and ``np.linalg.norm`` per 65,536 rows, with sha256). ``--skip-processes`` runs only these.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

DIM = 768
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def build(folder: Path, parts: int, part_rows: int) -> list[Path]:
    """Write the parts (skipping those already there) and return their embeddings files."""
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    files = []
    for number in range(parts):
        rng = np.random.default_rng(number)
        path = folder / "img_emb" / f"img_emb_{number:04d}.npy"
        meta = folder / "metadata" / f"metadata_{number:04d}.parquet"
        files.append(path)
        if path.exists() and meta.exists() and np.load(path, mmap_mode="r").shape == (part_rows, DIM):
            continue
        tmp = path.with_name(path.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(part_rows, DIM))
        for i in range(0, part_rows, 65536):
            x = rng.standard_normal((min(65536, part_rows - i), DIM), dtype=np.float32)
            out[i : i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        tmp.rename(path)
        ids = np.arange(number * part_rows, (number + 1) * part_rows)
        pl.DataFrame(
            {
                "URL": [f"https://example.com/images/{i}.jpg" for i in ids],
                "TEXT": [f"a photo of thing number {i}" for i in ids],
                "WIDTH": rng.integers(64, 2048, part_rows).astype(np.int32),
                "HEIGHT": rng.integers(64, 2048, part_rows).astype(np.int32),
                "similarity": rng.random(part_rows),
            }
        ).write_parquet(meta)
    return files


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run one contender; returns (CPU seconds: user + system of the process and its children, wall, peak RSS GB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"{argv}: exit {proc.returncode}\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--part-rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/score4m")
    parser.add_argument("--embedding-reader", default="/tmp/er", help="folder holding the embedding_reader package")
    parser.add_argument("--skip-processes", action="store_true", help="only the in-process comparison of the passes")
    args = parser.parse_args()
    folder = Path(args.dir)
    files = build(folder, args.parts, args.part_rows)
    if not args.skip_processes:
        processes(args, folder, files)
    passes(folder, args.rounds)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def old_validation(path: Path) -> None:
    """clip_embeddings' validation before the fused pass: numpy's cast and norms per 65,536 rows, and sha256."""
    array = np.load(path, mmap_mode="r")
    digest = hashlib.sha256()
    for start in range(0, array.shape[0], 65536):
        raw = np.ascontiguousarray(array[start : start + 65536])
        digest.update(memoryview(raw).cast("B"))
        chunk = raw.astype(np.float32)
        assert np.isfinite(chunk).all()
        norms = np.linalg.norm(chunk, axis=1)
        assert (np.abs(norms - 1.0) <= 0.02).all()


def passes(folder: Path, rounds: int) -> None:
    """The passes alone, in this process, per part: median CPU seconds over the parts and rounds, alternated."""
    from laion_assets.core.threads import limit_threads
    from laion_assets.scoring.active import load_active
    from laion_assets.scoring.parts import score_vectors
    from laion_assets.sources.embeddings import validate_embeddings
    from laion_assets.sources.layout import discover_parts

    parts = discover_parts(folder)
    predictors = load_active(DIM, ["aesthetic", "AESTHETIC_SCORE"])  # the 2 heads measured so far (not punsafe)
    calls = {
        "np.load": lambda p: np.load(p.embeddings),
        "scores: checks + 2 heads (one pass)": lambda p: score_vectors(p, predictors, p_rows[p.number], "metadata"),
        "clip_embeddings: checks + sha256 (one pass)": lambda p: validate_embeddings(p.embeddings, DIM),
        "before: numpy cast + norms + sha256": lambda p: old_validation(p.embeddings),
    }
    p_rows = {p.number: np.load(p.embeddings, mmap_mode="r").shape[0] for p in parts}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    load_before = os.getloadavg()
    with limit_threads(1):
        for _ in range(max(rounds, 1)):
            for part in parts:
                for name, call in calls.items():
                    started = cpu_seconds()
                    call(part)
                    seconds[name].append(cpu_seconds() - started)
    rows = statistics.median(p_rows.values())
    print(
        f"in one process, one thread, per part of {rows:,.0f} rows (median of {len(seconds['np.load'])}); "
        f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}:"
    )
    read = statistics.median(seconds["np.load"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<44} CPU {median:5.2f} s   np.load/this {read / median:.2f}")


def processes(args: argparse.Namespace, folder: Path, files: list[Path]) -> None:
    """Each contender in its own process, alternated; CPU from wait4."""
    rows = args.parts * args.part_rows
    out = folder.parent / f"{folder.name}-out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAION_ASSETS_")}
    env["PYTHONPATH"] = str(REPO)
    # the aesthetic heads, as measured before the NSFW head existed (its cost: bench/nsfw.py)
    score = [str(BIN / "laion-assets"), "score", str(folder), "--out", str(out), "--heads", "aesthetic,AESTHETIC_SCORE"]
    contenders: dict[str, tuple[list[str], dict[str, str]]] = {
        "read (np.load)": (
            [sys.executable, "-c", "import sys, numpy as np\nfor p in sys.argv[1:]: np.load(p)", *map(str, files)],
            env,
        ),
        "laion-assets score": (score, env),
        "  --workers 1": ([*score, "--workers", "1"], env),
        "  --workers 1 --threads 2": ([*score, "--workers", "1", "--threads", "2"], env),
    }
    reader = Path(args.embedding_reader)
    if (reader / "embedding_reader").is_dir():
        laion_env = {**env, "PYTHONPATH": f"{reader}{os.pathsep}{REPO}"}
        contenders["LAION (embedding-reader)"] = (
            [sys.executable, str(REPO / "bench" / "laion_path.py"), str(folder), str(out)],
            laion_env,
        )
    else:
        print(f"embedding_reader not found under {reader}: LAION's path left out", file=sys.stderr)
    load_before = os.getloadavg()
    run(contenders["read (np.load)"][0], env)  # warm-up: the page cache holds the parts
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (argv, cenv) in contenders.items():
            shutil.rmtree(out, ignore_errors=True)  # every run starts as a user's first: no outputs yet
            results[name].append(run(argv, cenv))
    shutil.rmtree(out, ignore_errors=True)
    load_after = os.getloadavg()
    size = sum(f.stat().st_size for f in files) / 1e9
    print(f"{rows:,} rows in {args.parts} parts ({size:.2f} GB float16, {DIM}-d) under {folder}")
    print(f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"median of {args.rounds} rounds, each contender its own process (start and imports included):")
    cpu = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    read = cpu["read (np.load)"]
    for name, runs in results.items():
        wall = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        each = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(
            f"  {name:<27} CPU {cpu[name]:6.2f} s ({each}; {rows / cpu[name]:>9,.0f} rows/CPU-s)  wall {wall:6.2f} s"
            f"  peak RSS {rss:.2f} GB  read/this {read / cpu[name]:.2f}"
        )
    if "LAION (embedding-reader)" in cpu:
        print(
            f"LAION's path / laion-assets score, CPU: {cpu['LAION (embedding-reader)'] / cpu['laion-assets score']:.2f}"
        )


if __name__ == "__main__":
    main()
