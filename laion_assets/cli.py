"""The ``laion-assets`` command: build the sample, register shards, run the demo, look up KV, verify and push."""

import argparse
import sys


def _sample(args: argparse.Namespace) -> None:
    from laion_assets.sample import main as sample_main

    sample_main([args.out, "--parts", str(args.parts), "--rows-per-part", str(args.rows_per_part)])


def _register(args: argparse.Namespace) -> None:
    import dagster as dg

    from laion_assets.defs.partitions import register_shards
    from laion_assets.locations import location

    new = register_shards(dg.DagsterInstance.get(), location(args.source))
    print(f"registered {len(new)} new shard(s): {', '.join(new) or '-'}")


def _demo(args: argparse.Namespace) -> None:
    from laion_assets.demo import main as demo_main

    demo_main(["--source", args.source, "--data-root", args.data_root])


def _kv_lookup(args: argparse.Namespace) -> None:
    import numpy as np

    from laion_assets.errors import BadInputError
    from laion_assets.kv import KV_FILES, MissingKeyError, OnDiskKV
    from laion_assets.paths import resolve

    path = resolve(args.kv or f"{args.data_root}/kv/{'safety.kv' if args.safety else 'aesthetic.kv'}")
    fmt, columns = KV_FILES.get(path.name, KV_FILES["safety.kv" if args.safety else "aesthetic.kv"])
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

    from laion_assets.verify import verify_release

    weights = dict(w.split("=", 1) for w in args.weights)
    report = verify_release(args.release_dir, args.source, {k: Path(v) for k, v in weights.items()}, safety=args.safety)
    print(report.text())
    if not report.ok:
        sys.exit(1)


def _push(args: argparse.Namespace) -> None:
    import os

    from laion_assets.publishing import push_release

    result = push_release(
        args.release_dir, args.repo_id, os.environ.get("HF_TOKEN"), args.endpoint, not args.public, args.dry_run
    )
    print(result.plan.text())
    if not result.dry_run:
        print(f"committed: {result.committed} ({result.commit_oid or '-'}); tagged: {result.tagged}")


def _activate(args: argparse.Namespace) -> None:
    from laion_assets.active import ACTIVE_FILE, activate
    from laion_assets.paths import resolve
    from laion_assets.predictors import inspect_weights, load_for_column

    # Refuse a file that is not a predictor, or (unless --force) one that does not fit the column.
    predictor = load_for_column(resolve(args.weights), args.column, force=args.force)
    problems = inspect_weights(resolve(args.weights), args.column).problems if args.force else ()
    config = resolve(args.config) if args.config else ACTIVE_FILE
    activate(args.column, args.weights, config, force=bool(problems))
    if problems:
        print(f"warning: {args.weights} is forced as {args.column}: {'; '.join(problems)}")
    print(f"{args.column} is now {predictor.identity} ({args.weights}) in {config}; run `laion-assets rescore`")


def _stale(args: argparse.Namespace) -> None:
    import dagster as dg

    from laion_assets.defs.resources import PredictorsResource, StorageResource
    from laion_assets.rescoring import shard_states

    storage = StorageResource(source=args.source, data_root=args.data_root)
    active = PredictorsResource().identities(storage.embedding_dim)
    keys = sorted(dg.DagsterInstance.get().get_dynamic_partitions("shards"))
    if not keys:
        print("no shards registered in this instance (`laion-assets register SOURCE` or `make demo` registers them)")
    for state in shard_states(keys, storage.layout, active):
        print(f"{state.key}  {state.status:<9}  {state.reason}")


def _rescore(args: argparse.Namespace) -> None:
    import dagster as dg

    from laion_assets.definitions import defs

    result = defs.resolve_job_def("rescore").execute_in_process(instance=dg.DagsterInstance.get())
    rescored = [
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("aesthetic_scores")
    ]
    print(f"rescore: re-scored {len(rescored)} shard(s): {', '.join(rescored) or 'nothing was stale'}")
    if not result.success:
        sys.exit("rescore failed; see the run's logs")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(prog="laion-assets", description="LAION-Aesthetics as a Dagster asset graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="build the deterministic demo sample (clip-retrieval layout)")
    p.add_argument("out", nargs="?", default="data/sample")
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--rows-per-part", type=int, default=2500)
    p.set_defaults(func=_sample)
    p = sub.add_parser("register", help="register a source folder's parts as shard partitions in $DAGSTER_HOME")
    p.add_argument("source", nargs="?", default="data/sample")
    p.set_defaults(func=_register)
    p = sub.add_parser("demo", help="materialize the whole graph (what `make demo` runs)")
    p.add_argument("--source", default="data/sample")
    p.add_argument("--data-root", default="data/out")
    p.set_defaults(func=_demo)
    p = sub.add_parser("kv", help="LAION's on-disk KV files")
    kv_sub = p.add_subparsers(dest="kv_command", required=True)
    p = kv_sub.add_parser("lookup", help="print the score(s) of each hash; exits non-zero naming missing hashes")
    p.add_argument("hashes", nargs="+", help="signed int64 LAION hashes")
    p.add_argument("--kv", help="KV file (default DATA_ROOT/kv/aesthetic.kv, or safety.kv with --safety)")
    p.add_argument("--safety", action="store_true", help="look up punsafe and pwatermark in safety.kv")
    p.add_argument("--data-root", default="data/out")
    p.set_defaults(func=_kv_lookup)
    p = sub.add_parser("verify", help="rebuild a release from its manifest's inputs and name every differing file")
    p.add_argument("release_dir")
    p.add_argument("--source", help="clip-retrieval folder (default: the one recorded in the manifest)")
    p.add_argument("--weights", action="append", default=[], metavar="COLUMN=PATH", help="weights of a score column")
    p.add_argument("--safety", help="safety-tags table (default: the one recorded in the manifest, if any)")
    p.set_defaults(func=_verify)
    p = sub.add_parser("push", help="push a release folder to a Hugging Face dataset repo (token from HF_TOKEN)")
    p.add_argument("release_dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be committed")
    p.set_defaults(func=_push)

    p = sub.add_parser("activate", help="make a weights file the active predictor of a score column")
    p.add_argument("column", choices=["aesthetic", "AESTHETIC_SCORE"])
    p.add_argument("weights")
    p.add_argument("--config", default="", help="predictors file (default: predictors.yaml in the project)")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate weights that do not fit the column (another kind of head, NaN/Inf values); releases made "
        "with them say they were forced",
    )
    p.set_defaults(func=_activate)
    p = sub.add_parser("stale", help="list each registered shard and whether the active predictors outdate it")
    p.add_argument("--source", default="data/sample")
    p.add_argument("--data-root", default="data/out")
    p.set_defaults(func=_stale)
    p = sub.add_parser("rescore", help="run the rescore job in $DAGSTER_HOME: re-score stale shards, rebuild release")
    p.set_defaults(func=_rescore)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except Exception as exc:  # our errors carry one clear sentence; show it without a traceback
        from laion_assets.errors import LaionAssetsError

        if isinstance(exc, LaionAssetsError):
            sys.exit(f"error: {exc}")
        raise


if __name__ == "__main__":
    main()
