"""Incremental ``aesthetic_tags``: CPU time of a full build against rebuilds where one shard, or none, changed.

Usage: python bench/tags.py [--parts 40] [--rows 50000] [--dir /tmp/laion_assets_bench/tags]
Writes ``shards/<key>/{metadata,scores}.parquet`` for every part once (LAION's metadata columns, realistic
URL/caption lengths, both score columns with a predictor identity), then runs ``build_tags`` in a child process per
scenario, all in this one run, and reports each child's CPU seconds (user + system, from ``os.wait4``; process start
and imports included, so the first line gives that floor), wall time, parts rewritten and kept:

- ``full``: no previous table (as every rebuild was before parts were carried over);
- ``unchanged``: nothing changed since (every part is carried over; the inputs are not hashed again);
- ``one shard``: one shard's scores were rewritten with other values (one part is written);
- ``touched``: every input file was written again with the same bytes (all are hashed again, all kept).

CPU time, not wall time, is the figure to compare on a shared machine; the load average is printed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import write_parquet
from laion_assets.core.outputs import OutputLayout
from laion_assets.scoring.parts import IDENTITY_KEY
from laion_assets.selection.schemas import SCORE_COLUMNS
from laion_assets.sources.indexing import VALIDATION_ID_KEY, Validation
from laion_assets.sources.schemas import METADATA_COLUMNS

META_COLUMNS = {**METADATA_COLUMNS, "hash": pl.Int64(), "LANGUAGE": pl.String()}  # as clip_embeddings writes them
IDENTITIES = {"aesthetic": "linear@sha256:" + "1" * 64, "AESTHETIC_SCORE": "mlp@sha256:" + "2" * 64}


def validation(key: str, rows: int) -> Validation:
    """A validation as ``clip_embeddings`` records it (the sha256s name the synthetic part)."""
    return Validation(key, {"sha256": f"emb-{key}"}, {"sha256": f"meta-{key}"}, rows, "en", False)


def write_scores(layout: OutputLayout, key: str, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hashes = pl.read_parquet(layout.shard_metadata(key), columns=["hash"])["hash"]
    scores = pl.DataFrame({"hash": hashes, "aesthetic": rng.normal(5.2, 2.0, rows),
                           "AESTHETIC_SCORE": rng.normal(5.0, 1.0, rows)})  # fmt: skip
    scores = scores.select([pl.col(c).cast(t) for c, t in SCORE_COLUMNS.items()])
    recorded = {IDENTITY_KEY: json.dumps(IDENTITIES, sort_keys=True), VALIDATION_ID_KEY: validation(key, rows).id}
    write_parquet(scores.to_arrow(), layout.shard_scores(key), recorded)


def write_inputs(layout: OutputLayout, parts: int, rows: int) -> list[str]:
    keys = [f"{p:05d}" for p in range(parts)]
    for p, key in enumerate(keys):
        if layout.shard_scores(key).exists():
            continue
        rng = np.random.default_rng(p)
        ids = pl.Series(np.arange(p * rows, (p + 1) * rows)).cast(pl.String)
        meta = pl.DataFrame({
            "URL": "https://images.example-cdn.com/photos/2021/" + ids + "/large_" + ids + ".jpg",
            "TEXT": "A photo of item number " + ids + " on a wooden table, high resolution stock image",
            "WIDTH": rng.choice([256.0, 512.0, 640.0, 1024.0], rows),
            "HEIGHT": rng.choice([256.0, 512.0, 480.0, 768.0], rows),
            "similarity": rng.uniform(0.28, 0.45, rows),
            "punsafe": rng.beta(0.6, 12, rows),
            "pwatermark": rng.beta(1.2, 6, rows),
            "hash": (np.arange(p * rows, (p + 1) * rows) * 2654435761) % (2**62) - 2**61,
            "LANGUAGE": "en",
        }).select([pl.col(c).cast(t) for c, t in META_COLUMNS.items()])  # fmt: skip
        write_parquet(meta.to_arrow(), layout.shard_metadata(key))
        write_scores(layout, key, rows, seed=p)
    return keys


def work(root: Path, parts: int, rows: int) -> None:
    from laion_assets.selection.tags import build_tags

    layout = OutputLayout(root)
    summary = build_tags({f"{p:05d}": validation(f"{p:05d}", rows) for p in range(parts)}, layout)
    print(f"{len(summary.rewritten)} {len(summary.kept)}")


def child(root: Path, parts: int, rows: int, *extra: str) -> tuple[float, float, str]:
    """Run in a child process; return its CPU seconds (user + system), wall seconds and output."""
    start = time.perf_counter()
    args = [sys.executable, __file__, "--dir", str(root), "--parts", str(parts), "--rows", str(rows), *extra]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{extra} failed")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=40)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dir", default="/tmp/laion_assets_bench/tags")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)  # inside a timed child
    parser.add_argument("--noop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.dir)
    if args.noop:
        from laion_assets.selection import tags  # noqa: F401  (the imports a build pays for)

        return
    if args.work:
        work(root, args.parts, args.rows)
        return
    layout = OutputLayout(root)
    keys = write_inputs(layout, args.parts, args.rows)
    size = sum(layout.shard_metadata(k).stat().st_size + layout.shard_scores(k).stat().st_size for k in keys) / 1e9
    print(f"{args.parts} shards x {args.rows:,} rows ({size:.2f} GB of metadata + scores parquet) under {root}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = []
    cpu, wall, _ = child(root, args.parts, args.rows, "--noop")
    results.append(("process start + imports", cpu, wall, "-"))
    for name in ("full", "unchanged", "one shard", "touched"):
        if name == "full":
            for leftover in (layout.tags_dir / "_table.json", layout.tags_dir.with_name(".tags-inputs.json")):
                leftover.unlink(missing_ok=True)
        elif name == "one shard":
            write_scores(layout, keys[len(keys) // 2], args.rows, seed=10_000)
        elif name == "touched":
            for key in keys:
                for path in (layout.shard_metadata(key), layout.shard_scores(key)):
                    data = path.read_bytes()
                    path.unlink()
                    path.write_bytes(data)
        cpu, wall, out = child(root, args.parts, args.rows, "--work")
        rewritten, kept = out.split()
        results.append((name, cpu, wall, f"{rewritten} rewritten, {kept} kept"))
    floor = results[0][1]
    print(f"{'scenario':<26} {'CPU s':>7} {'- start':>8} {'wall s':>7}  parts")
    for name, cpu, wall, parts in results:
        print(f"{name:<26} {cpu:7.2f} {cpu - floor:8.2f} {wall:7.2f}  {parts}")
    full = results[1][1] - floor
    for name, cpu, _, _ in results[2:]:
        print(f"{name}: {(cpu - floor) / full:.3f} of a full build's CPU (process start and imports left out)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
