"""The ``laion-assets`` command: build the sample, register shards, run the demo."""

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
