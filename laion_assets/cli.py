"""The ``laion-assets`` command: build the sample, register shards, run the demo, look up KV, verify and push.

Every subcommand finds the source, the data root, the safety table and the Dagster instance the same way: the
flag, else the environment variable, else the project's default (``laion_assets/core/settings.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from laion_assets.core.settings import (
    DAGSTER_HOME,
    DATA_ROOT,
    PRECEDENCE,
    SAFETY,
    SOURCE,
    Setting,
    Spec,
    add_flags,
    resolve_setting,
)

if TYPE_CHECKING:
    import dagster as dg


def _source_argument(args: argparse.Namespace) -> Setting:
    """The source from the positional folder or ``--source`` (they are one flag), else the environment/default."""
    if args.folder and args.source and args.folder != args.source:
        sys.exit(f"error: two sources given ({args.folder} and --source {args.source}); give one")
    return resolve_setting(SOURCE, args.folder or args.source)


def _instance(args: argparse.Namespace) -> tuple[Setting, dg.DagsterInstance]:
    """The resolved instance setting and the Dagster instance it names (exported as DAGSTER_HOME for children)."""
    from laion_assets.core.settings import use_instance

    setting = resolve_setting(DAGSTER_HOME, args.dagster_home)
    use_instance(setting)  # refuses a folder that does not exist before the slow import below
    import dagster as dg

    return setting, dg.DagsterInstance.get()


def _sample(args: argparse.Namespace) -> None:
    from laion_assets.core.settings import new_sample_folder

    out = _source_argument(args)
    folder = new_sample_folder(out)
    from laion_assets.demos.sample import SampleSpec, write_sample

    spec = SampleSpec(parts=args.parts, rows_per_part=args.rows_per_part, seed=args.seed)
    write_sample(folder, spec)
    print(f"wrote {spec.parts} parts x {spec.rows_per_part} rows to {out.describe()}")


def _register(args: argparse.Namespace) -> None:
    from laion_assets.definitions import register_shards

    source = _source_argument(args)
    home, instance = _instance(args)
    new = register_shards(instance, source.location)
    print(
        f"registered {len(new)} new shard(s) of {source.describe()} in instance {home.describe()}: "
        f"{', '.join(new) or '-'}"
    )


def _demo(args: argparse.Namespace) -> None:
    from laion_assets.demos.local import run_demo

    run_demo(
        resolve_setting(SOURCE, args.source),
        resolve_setting(DATA_ROOT, args.data_root),
        resolve_setting(SAFETY, args.safety),
        resolve_setting(DAGSTER_HOME, args.dagster_home),
    )


def _kv_lookup(args: argparse.Namespace) -> None:
    import numpy as np

    from laion_assets.core.errors import BadInputError
    from laion_assets.core.locations import is_local
    from laion_assets.core.paths import resolve
    from laion_assets.release.kv import KV_FILES, MissingKeyError, OnDiskKV

    kv_file = "safety.kv" if args.safety else "aesthetic.kv"
    root = resolve_setting(DATA_ROOT, args.data_root)
    if not args.kv and not is_local(root.location):
        raise BadInputError(f"the data root {root.describe()} is remote; pass --kv with a local copy of {kv_file}")
    path = resolve(args.kv) if args.kv else root.location / "kv" / kv_file
    if not args.kv and not path.is_file():
        from laion_assets.core.hints import missing_kv_hint

        raise BadInputError(
            f"{path}: KV file not found under the data root {root.describe()}; if your outputs are elsewhere, "
            f"{root.how_to_change()}. {missing_kv_hint(kv_file, resolve_setting(SOURCE).value, root.value)}"
        )
    fmt, columns = KV_FILES.get(path.name, KV_FILES[kv_file])
    try:
        keys = np.array([int(h) for h in args.hashes], dtype=np.int64)
    except (ValueError, OverflowError) as exc:
        raise BadInputError(f"not a signed int64 hash: {exc}") from exc
    kv = OnDiskKV(path, fmt, columns)
    pos = kv.positions(keys)
    for key, p in zip(keys, pos, strict=True):
        if p >= 0:
            values = kv.get_many([key])[0]
            print("\t".join([str(int(key)), *(f"{float(v):g}" for v in values)]))
    missing = [str(int(k)) for k, p in zip(keys, pos, strict=True) if p < 0]
    if missing:
        raise MissingKeyError(f"{path}: hash(es) not found: {', '.join(missing)}")


def _verify(args: argparse.Namespace) -> None:
    from pathlib import Path

    from laion_assets.release.manifest import load_manifest
    from laion_assets.release.verify import verify_release

    # The manifest names the exact inputs, so it beats the environment; a flag still beats both. The environment
    # only fills in what the manifest could not record (a folder outside the project).
    inputs = load_manifest(Path(args.release_dir))["inputs"]
    source = args.source or (None if inputs.get("source") else os.environ.get(SOURCE.env) or None)
    safety = args.safety
    if not safety and inputs.get("safety") is not None and not inputs["safety"].get("source"):
        safety = os.environ.get(SAFETY.env) or None
    weights = dict(w.split("=", 1) for w in args.weights)
    report = verify_release(args.release_dir, source, {k: Path(v) for k, v in weights.items()}, safety=safety)
    print(report.text())
    if not report.ok:
        sys.exit(1)


def _push(args: argparse.Namespace) -> None:
    import os

    from laion_assets.release.publishing import clean_token, push_release

    token = clean_token(os.environ.get("HF_TOKEN"), "HF_TOKEN")
    result = push_release(args.release_dir, args.repo_id, token, args.endpoint, not args.public, args.dry_run)
    print(result.plan.text())
    if not result.dry_run:
        print(f"committed: {result.committed} ({result.commit_oid or '-'}); tagged: {result.tagged}")


def _activate(args: argparse.Namespace) -> None:
    from laion_assets.core.paths import resolve
    from laion_assets.scoring.active import ACTIVE_FILE, activate, weights_entry
    from laion_assets.scoring.predictors import inspect_weights, load_for_column

    weights, entry = weights_entry(args.weights)
    # Refuse a file that is not a predictor, or (unless --force) one that does not fit the column.
    predictor = load_for_column(weights, args.column, args.dim, force=args.force)
    problems = inspect_weights(weights, args.column).problems if args.force else ()
    config = resolve(args.config) if args.config else ACTIVE_FILE
    activate(args.column, entry, config, force=bool(problems))
    if problems:
        print(f"warning: {weights} is forced as {args.column}: {'; '.join(problems)}")
    print(f"{args.column} is now {predictor.identity} ({entry}) in {config}; run `laion-assets rescore`")


def _registered_shards(args: argparse.Namespace, root: Setting) -> tuple[Setting, list[str]]:
    """The instance and its registered shards; exits naming both settings when none of them has outputs here.

    A command pointed at the wrong data root or instance would otherwise report nothing to do and exit 0.
    """
    from laion_assets.core.outputs import OutputLayout

    home, instance = _instance(args)
    keys = sorted(instance.get_dynamic_partitions("shards"))
    if not keys:
        sys.exit(
            f"error: no shards are registered in the Dagster instance {home.describe()}: "
            f"{home.how_to_change()} to the instance they were registered in, or register them with "
            "`laion-assets register SOURCE`"
        )
    remote = OutputLayout(root.location)  # the data root itself, not a local working copy of a remote one
    if not any(remote.shard_dir(key).is_dir() for key in keys):
        sys.exit(
            f"error: none of the {len(keys)} shard(s) registered in instance {home.describe()} has outputs under "
            f"the data root {root.describe()}: {root.how_to_change()} to the data root they were built in"
        )
    return home, keys


def _stale(args: argparse.Namespace) -> None:
    root = resolve_setting(DATA_ROOT, args.data_root)
    home, keys = _registered_shards(args, root)
    from laion_assets.definitions import PredictorsResource, StorageResource, WatermarkResource
    from laion_assets.scoring.rescoring import shard_states

    storage = StorageResource(data_root=root.value)
    storage.pull(*(p for key in keys for p in (storage.layout.shard_metadata(key), storage.layout.shard_scores(key))))
    active = PredictorsResource().identities(storage.embedding_dim)
    print(f"shards of instance {home.describe()} in data root {root.describe()}:")
    for state in shard_states(keys, storage.layout, active):
        print(f"{state.key}  {state.status:<9}  {state.reason}")
    watermark = WatermarkResource()  # weights from $LAION_ASSETS_WATERMARK, as the rescore job reads them
    identity = watermark.identity()
    if identity is not None:
        print(f"pwatermark against the watermark head {identity} ({watermark.weights_value}):")
        for mark in watermark.states(storage, keys):
            print(f"{mark.key}  {mark.status:<12}  {mark.reason}")


def _rescore(args: argparse.Namespace) -> None:
    import dagster as dg

    settings = {
        "source": resolve_setting(SOURCE, args.source),
        "data_root": resolve_setting(DATA_ROOT, args.data_root),
        "safety": resolve_setting(SAFETY, args.safety),
    }
    home, _ = _registered_shards(args, settings["data_root"])
    from laion_assets.definitions import defs  # slow (dagster, the graph): only once the settings are right

    # Given as run config (absolute paths), so the run records where it read and wrote.
    config = {k: str(s.location) if s.value else "" for k, s in settings.items()}
    print(
        f"rescore in instance {home.describe()}: "
        + ", ".join(f"{s.spec.name} {s.describe()}" for s in settings.values())
    )
    result = defs.resolve_job_def("rescore").execute_in_process(
        run_config={"resources": {"storage": {"config": config}}}, instance=dg.DagsterInstance.get()
    )
    rescored = [
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("aesthetic_scores")
    ]
    print(f"rescore: re-scored {len(rescored)} shard(s): {', '.join(rescored) or 'nothing was stale'}")
    if not result.success:
        sys.exit("rescore failed; see the run's logs")


def _score(args: argparse.Namespace) -> None:
    import time

    from laion_assets.core.locations import location
    from laion_assets.core.paths import resolve
    from laion_assets.core.threads import compute_threads, default_workers
    from laion_assets.scoring.active import ACTIVE_FILE, load_active
    from laion_assets.scoring.folder import score_folder, select_parts
    from laion_assets.sources.layout import discover_parts

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    source = location(args.source)
    parts = discover_parts(source)
    if args.parts:
        parts = select_parts(parts, args.parts)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()] if args.heads else None
    predictors = load_active(args.dim, heads, resolve(args.config) if args.config else ACTIVE_FILE)
    out_dir = resolve(args.out)
    workers, threads = default_workers(args.workers, len(parts)), compute_threads(args.threads)
    say(
        f"score: {len(parts)} part(s) of {source} -> {out_dir}, heads {', '.join(predictors)}; "
        f"{workers} worker(s) x {threads} thread(s)"
    )
    started, done, rows, failed = time.perf_counter(), 0, 0, []
    for part, result in score_folder(parts, predictors, out_dir, workers, threads, args.force):
        done += 1
        prefix = f"[{done}/{len(parts)}] part {part.number}"
        if isinstance(result, Exception):
            failed.append(part)
            say(f"{prefix}: FAILED: {result}")
        elif result.status == "skipped":
            say(f"{prefix}: {result.out.name} already scored from the same inputs and heads; skipped")
        else:
            rows += result.rows
            rate = result.rows / result.seconds if result.seconds else 0.0
            say(f"{prefix}: {result.rows:,} rows in {result.seconds:.2f} s ({rate:,.0f} rows/s) -> {result.out.name}")
    wall = time.perf_counter() - started
    say(f"score: {len(parts) - len(failed)} of {len(parts)} part(s) done, {rows:,} rows scored in {wall:.1f} s")
    if failed:
        sys.exit(
            f"error: {len(failed)} part(s) failed and have no scores file: {', '.join(str(p.number) for p in failed)} "
            "(see above); fix them and run again: parts already scored are skipped"
        )


def _serve(args: argparse.Namespace) -> None:
    from pathlib import Path

    from laion_assets.core.errors import BadInputError
    from laion_assets.core.locations import is_local
    from laion_assets.core.paths import resolve
    from laion_assets.images.clip_model import ClipSpec
    from laion_assets.retrieval.queries import ClipEncoder
    from laion_assets.retrieval.served import open_index
    from laion_assets.retrieval.service import ServiceState, serve

    root = resolve_setting(DATA_ROOT, args.data_root)
    if not args.index and not is_local(root.location):
        raise BadInputError(f"the data root {root.describe()} is remote; pass --index with a local copy of its knn/")
    folder = resolve(args.index) if args.index else Path(root.location) / "knn"
    ratings = [resolve(args.buckets)] if args.buckets else []
    if not args.index:
        if args.release:
            ratings.append(Path(root.location) / "releases" / args.release / "buckets")
        ratings.append(Path(root.location) / "buckets")
    served = open_index(folder, args.name or None, ratings)
    encoder = None
    if args.clip_model.lower() != "none":
        encoder = ClipEncoder(ClipSpec(args.clip_model, args.clip_pretrained, args.device))
    galleries = None if args.index else Path(root.location) / "viz"
    state = ServiceState({served.name: served}, encoder, galleries if galleries and galleries.is_dir() else None)
    guidance = f"bucket embeddings from {served.ratings_from}" if served.ratings is not None else "no bucket embeddings"
    print(
        f"serving index {served.name!r} ({served.catalog.rows} rows, {served.dim}-d, {folder}); {guidance}; "
        f"text/image queries: {'CLIP ' + args.clip_model + ' (loaded on first use)' if encoder else 'off'}",
        flush=True,
    )
    print(f"search page: http://{args.host}:{args.port}/", flush=True)
    serve(state, args.host, args.port)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(
        prog="laion-assets", description=f"LAION-Aesthetics as a Dagster asset graph. {PRECEDENCE}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, *specs: Spec) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {PRECEDENCE}")
        add_flags(p, *specs)
        return p

    p = command(
        "sample", "build the deterministic demo sample (clip-retrieval layout) in a new or empty folder", SOURCE
    )
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="where to write it: the same as --source")
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--rows-per-part", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_sample)
    p = command("register", "register a source folder's parts as shard partitions", SOURCE, DAGSTER_HOME)
    p.add_argument("folder", nargs="?", metavar="SOURCE", help="the same as --source")
    p.set_defaults(func=_register)
    p = command("demo", "materialize the whole graph (what `make demo` runs)", SOURCE, DATA_ROOT, SAFETY, DAGSTER_HOME)
    p.set_defaults(func=_demo)
    p = sub.add_parser("kv", help="LAION's on-disk KV files")
    kv_sub = p.add_subparsers(dest="kv_command", required=True)
    summary = "print the score(s) of each hash; exits non-zero naming missing hashes"
    p = kv_sub.add_parser("lookup", help=summary, description=f"{summary[0].upper()}{summary[1:]}. {PRECEDENCE}")
    add_flags(p, DATA_ROOT)
    p.add_argument("hashes", nargs="+", help="signed int64 LAION hashes")
    p.add_argument("--kv", help="KV file (default DATA_ROOT/kv/aesthetic.kv, or safety.kv with --safety)")
    p.add_argument("--safety", action="store_true", help="look up punsafe and pwatermark in safety.kv")
    p.set_defaults(func=_kv_lookup)
    p = sub.add_parser(
        "verify",
        help="rebuild a release from its manifest's inputs and name every differing file",
        description="Rebuild a release from its manifest's inputs and name every differing file. The source and "
        "the safety table come from the flag, else the folder the manifest records (inside the project, or a URL), "
        "else $LAION_ASSETS_SOURCE / $LAION_ASSETS_SAFETY; every file is checked against the recorded sha256.",
    )
    p.add_argument("release_dir")
    p.add_argument("--source", help="clip-retrieval folder (default: the manifest's, else $LAION_ASSETS_SOURCE)")
    p.add_argument("--weights", action="append", default=[], metavar="COLUMN=PATH", help="weights of a score column")
    p.add_argument("--safety", help="safety-tags table (default: the manifest's, else $LAION_ASSETS_SAFETY)")
    p.set_defaults(func=_verify)
    p = sub.add_parser(
        "push",
        help="push a release folder to a Hugging Face dataset repo (token: HF_TOKEN, surrounding whitespace stripped)",
    )
    p.add_argument("release_dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be committed")
    p.set_defaults(func=_push)

    p = sub.add_parser("activate", help="make a weights file the active predictor of a score column")
    p.add_argument("column", choices=["aesthetic", "AESTHETIC_SCORE", "punsafe"])
    p.add_argument(
        "weights",
        help="weights file; a relative path is taken from the current directory when it names a file there, else "
        "from the project folder (recorded project-relative when inside the project, else absolute)",
    )
    p.add_argument("--config", default="", help="predictors file (default: predictors.yaml in the project)")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate weights that do not fit the column (another kind of head, NaN/Inf values); releases made "
        "with them say they were forced",
    )
    p.add_argument(
        "--dim",
        type=int,
        default=768,
        help="embedding width the head must take (default 768, ViT-L/14; 512 for the ViT-B/32 NSFW head)",
    )
    p.set_defaults(func=_activate)
    p = command(
        "stale",
        "list each registered shard and whether the active predictors (and the watermark head named by "
        "$LAION_ASSETS_WATERMARK, if any) outdate it",
        DATA_ROOT,
        DAGSTER_HOME,
    )
    p.set_defaults(func=_stale)
    p = command(
        "rescore",
        "run the rescore job: re-score the stale shards, then rebuild the tags and everything after them",
        SOURCE,
        DATA_ROOT,
        SAFETY,
        DAGSTER_HOME,
    )
    p.set_defaults(func=_rescore)
    p = sub.add_parser(
        "score",
        help="score a clip-retrieval folder with the active predictors, without Dagster: DIR/scores_N.parquet per part",
        description="Score every part of a clip-retrieval folder (local path or fsspec URL) with the active "
        "predictors, without Dagster: DIR/scores_N.parquet per part (N as in img_emb_N.npy), row-aligned, with LAION's "
        "int64 hash and one float32 column per head. Each part's vectors are read once: checked as clip_embeddings "
        "checks them and scored in the same pass; the scores equal the aesthetic_scores asset's bit for bit. Parts "
        "already scored from the same files and heads are skipped (--force scores them again). A bad part is "
        "reported naming its file and row, writes nothing, and the others go on; the exit status is then 1.",
    )
    p.add_argument(
        "source", metavar="SRC", help="clip-retrieval folder: img_emb/img_emb_N.npy + metadata/metadata_N.parquet"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where scores_N.parquet go (created if missing)")
    p.add_argument(
        "--heads",
        default="",
        help="comma-separated score columns of the predictors file to compute: aesthetic (V1), AESTHETIC_SCORE "
        "(V2), punsafe (LAION's CLIP-based NSFW detector), e.g. --heads punsafe (default: every column the file "
        "maps); a head is named by its column",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parts scored at once (default: $LAION_ASSETS_WORKERS, else the cores)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS/torch threads per worker (default: $LAION_ASSETS_THREADS, else 1)",
    )
    p.add_argument("--parts", default="", help="only these part numbers, e.g. 0,3,7-9 (default: every part)")
    p.add_argument("--force", action="store_true", help="score parts again even if their scores are up to date")
    p.add_argument("--config", default="", help="predictors file (default: predictors.yaml in the project)")
    p.add_argument("--dim", type=int, default=768, help="embedding width the heads take (default 768, ViT-L/14)")
    p.set_defaults(func=_score)
    p = command(
        "serve",
        "answer clip-retrieval's back-end API (POST /knn-service, GET /indices-list, POST /metadata) over the "
        "knn_index, with a search page at / and the galleries at /galleries/",
        DATA_ROOT,
    )
    p.add_argument("--index", default="", help="index folder (default DATA_ROOT/knn, built by knn_index)")
    p.add_argument("--name", default="", help="the index's name in /indices-list (default: the one it was built with)")
    p.add_argument("--release", default="", help="take the aesthetic bucket embeddings of this release version")
    p.add_argument(
        "--buckets",
        default="",
        help="folder with rating0..9.npy for aesthetic guidance (default: the release's, else DATA_ROOT/buckets, "
        "else LAION's shipped ViT-L/14 ones)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=1234)
    p.add_argument(
        "--clip-model",
        default="ViT-L-14",
        help="open_clip model (or model-config .json) for text and image queries; 'none' serves embedding queries only",
    )
    p.add_argument("--clip-pretrained", default="openai", help="its weights: a pretrained tag or a local file")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except Exception as exc:  # our errors carry one clear sentence; show it without a traceback
        from laion_assets.core.errors import LaionAssetsError

        if isinstance(exc, LaionAssetsError):
            sys.exit(f"error: {exc}")
        raise


if __name__ == "__main__":
    main()
