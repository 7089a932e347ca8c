"""laion2B-en's shape with small parts: registration, a one-run backfill, the release fan-in; CPU, wall, peak RSS.

Usage: PYTHONPATH=. python bench/shards.py [--parts 2300] [--rows 200] [--dir /tmp/laion_assets_bench/shards]
       [--workers 2] [--release]

Builds a clip-retrieval source of ``--parts`` parts x ``--rows`` rows (random unit float16 768-d vectors, LAION's
metadata columns) once, then runs, each as its own command (a child process, measured with ``os.wait4``: user+sys
CPU of the command and everything it waited for, and its peak RSS; wall time is noise on a shared box):

1. ``laion-assets register`` (the parts become shard partitions);
2. ``dagster asset materialize --select clip_embeddings,aesthetic_scores --partition-range 00000...LAST``: one run;
3. the same command again (resume: every shard is up to date, nothing is read again);
4. the same command for one partition in a fresh instance and data root (the fixed cost of a run);
5. the fan-in: ``dagster asset materialize --select aesthetic_tags,bucket_embeddings,score_histogram`` (the gate,
   the tags table, the buckets that read every part again, the histogram); with ``--release``, the whole
   ``release_job`` instead.

The shard work itself (``index_part`` + ``score_part`` of every part, what the two steps do per shard) is then
measured in this process on the same files, so that orchestration per partition = (CPU of the run - CPU of the
fixed one-partition run - CPU of the shard work) / (partitions - 1).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import save_npy, write_parquet
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import PROJECT_DIR, V1_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.parts import score_part
from laion_assets.scoring.predictors import load_predictor
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import discover_parts

BIN = Path(sys.executable).parent


def build_source(folder: Path, parts: int, rows: int) -> None:
    """``parts`` parts of ``rows`` rows in clip-retrieval's layout (skipped when already there)."""
    if (folder / "metadata" / f"metadata_{parts - 1:04d}.parquet").exists():
        return
    rng = np.random.default_rng(0)
    for p in range(parts):
        vectors = rng.standard_normal((rows, 768)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        save_npy(vectors.astype(np.float16), folder / "img_emb" / f"img_emb_{p:04d}.npy")
        ids = pl.Series(np.arange(p * rows, (p + 1) * rows)).cast(pl.String)
        meta = pl.DataFrame({
            "URL": "https://images.example-cdn.com/photos/" + ids + ".jpg",
            "TEXT": "A photo of item number " + ids + " on a wooden table",
            "WIDTH": rng.choice([256.0, 512.0, 1024.0], rows),
            "HEIGHT": rng.choice([256.0, 512.0, 768.0], rows),
            "similarity": rng.uniform(0.28, 0.45, rows),
            "punsafe": rng.beta(0.6, 12, rows).astype(np.float32),
            "pwatermark": rng.beta(1.2, 6, rows).astype(np.float32),
        })  # fmt: skip
        write_parquet(meta.to_arrow(), folder / "metadata" / f"metadata_{p:04d}.parquet")


@dataclass
class Measured:
    """One command: wall seconds, user+sys CPU seconds (with its children), peak RSS in MB."""

    wall: float
    cpu: float
    rss_mb: float


def run(args: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run one command to completion; its CPU and peak RSS from ``os.wait4`` (children it waited for included)."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}); see {log}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def environment(source: Path, data_root: Path, home: Path, workers: int) -> dict[str, str]:
    """An activated shell's environment for this checkout, with the source, data root and instance given."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LAION_ASSETS_"))}
    env.update(
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        PYTHONPATH=str(PROJECT_DIR),
        DAGSTER_HOME=str(home),
        DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME="laion_assets.definitions",
        DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME="laion_assets.definitions",
        LAION_ASSETS_SOURCE=str(source),
        LAION_ASSETS_DATA_ROOT=str(data_root),
        LAION_ASSETS_WORKERS=str(workers),
        HF_HUB_OFFLINE="1",
    )
    return env


def shard_work(source: Path, scratch: Path) -> float:
    """CPU seconds of this process for index_part + score_part of every part (what the two steps do per shard)."""
    layout = OutputLayout(scratch)
    predictors = {"aesthetic": load_predictor(V1_WEIGHTS), "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS)}
    parts = discover_parts(source)
    start = time.process_time()
    for part in parts:
        index_part(part, layout.shard_metadata(part.key), 768)
        score_part(part, layout.shard_metadata(part.key), predictors, layout.shard_scores(part.key))
    return time.process_time() - start


def main() -> None:
    """Build the source, run the phases, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=2300)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/laion_assets_bench/shards"))
    parser.add_argument("--release", action="store_true", help="run the whole release_job as the fan-in")
    args = parser.parse_args()
    source = args.dir / f"source-{args.parts}x{args.rows}"
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs", flush=True)
    build_source(source, args.parts, args.rows)
    for stale in ("out", "home", "out-1", "home-1", "scratch", "logs"):
        shutil.rmtree(args.dir / stale, ignore_errors=True)
    logs = args.dir / "logs"
    logs.mkdir()
    env = environment(source, args.dir / "out", args.dir / "home", args.workers)
    last = f"{args.parts - 1:05d}"
    materialize = [str(BIN / "dagster"), "asset", "materialize", "--select", "clip_embeddings,aesthetic_scores"]
    phases: dict[str, Measured] = {}
    phases["register"] = run([str(BIN / "laion-assets"), "register"], env, logs / "register.log")
    print(f"register: {phases['register']}", flush=True)
    phases["backfill"] = run([*materialize, "--partition-range", f"00000...{last}"], env, logs / "backfill.log")
    print(f"backfill: {phases['backfill']}", flush=True)
    phases["resume"] = run([*materialize, "--partition-range", f"00000...{last}"], env, logs / "resume.log")
    print(f"resume (all up to date): {phases['resume']}", flush=True)
    one = environment(source, args.dir / "out-1", args.dir / "home-1", args.workers)
    run([str(BIN / "laion-assets"), "register"], one, logs / "register-1.log")
    phases["one partition"] = run([*materialize, "--partition", "00000"], one, logs / "one.log")
    print(f"one partition: {phases['one partition']}", flush=True)
    if args.release:
        fan_in = [str(BIN / "dagster"), "job", "execute", "-j", "release_job"]
    else:
        fan_in = [str(BIN / "dagster"), "asset", "materialize", "--select",
                  "aesthetic_tags,bucket_embeddings,score_histogram"]  # fmt: skip
    phases["fan-in"] = run(fan_in, env, logs / "fan-in.log")
    print(f"fan-in: {phases['fan-in']}", flush=True)
    work = shard_work(source, args.dir / "scratch")
    one_work = work / args.parts
    orchestration = phases["backfill"].cpu - work
    marginal = (orchestration - (phases["one partition"].cpu - one_work)) / (args.parts - 1)
    print(f"load average at end: {os.getloadavg()}", flush=True)
    print()
    print(f"{args.parts} parts x {args.rows} rows, workers {args.workers}")
    print("| phase | wall s | CPU s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, m in phases.items():
        print(f"| {name} | {m.wall:.1f} | {m.cpu:.1f} | {m.rss_mb:.0f} |")
    print(f"| shard work in process (index_part + score_part, {args.parts} parts) | | {work:.1f} | |")
    print()
    print(
        f"orchestration CPU of the backfill run: {orchestration:.1f} s = {orchestration / args.parts:.4f} s/partition"
    )
    print(f"marginal (minus a one-partition run's fixed cost): {marginal:.4f} CPU-s/partition")
    print(f"resume: {phases['resume'].cpu / args.parts:.4f} CPU-s/partition (nothing redone)")
    print(f"this process (the shard work): peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    shutil.rmtree(args.dir / "scratch", ignore_errors=True)


if __name__ == "__main__":
    main()
