"""Shard partitions: one dynamic partition per stored part (about 1M rows, clip-retrieval's part size)."""

import warnings

import dagster as dg

from laion_assets.core.locations import Location
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.url_sources import discover_url_shards, is_url_folder

shards = dg.DynamicPartitionsDefinition(name="shards")

SHARDS_PER_RUN_ENV = "LAION_ASSETS_SHARDS_PER_RUN"


def shard_backfill_policy(shards_per_run: str = "") -> dg.BackfillPolicy:
    """Single-run (the default, ``""`` or ``0``): a backfill of any number of shards is one run; ``N``: N per run."""
    text = shards_per_run.strip()
    try:
        per_run = int(text) if text else 0
    except ValueError:
        raise ValueError(f"${SHARDS_PER_RUN_ENV}={shards_per_run!r}: expected a number of shards per run") from None
    if per_run < 0:
        raise ValueError(f"${SHARDS_PER_RUN_ENV}={shards_per_run!r}: expected 0 (one run) or a positive number")
    return dg.BackfillPolicy.multi_run(per_run) if per_run else dg.BackfillPolicy.single_run()


# Read when the code location loads (a backfill policy is part of the asset definitions, not run config), like the
# rescore schedule's cron. Single-run lets `dagster asset materialize --partition-range A...B` run a range at all.
SHARD_BACKFILL_POLICY = shard_backfill_policy(dg.EnvVar(SHARDS_PER_RUN_ENV).get_value("") or "")
# Dagster 1.13 marks the `backfill_policy` parameter as beta; it is what makes a backfill one run. Not repeated on
# every `dagster` command that loads the code location.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning)


def source_keys(source: str | Location) -> list[str]:
    """Partition keys of a source folder: its URL shards, or its stored clip-retrieval parts."""
    if is_url_folder(source):
        return [shard.key for shard in discover_url_shards(source)]
    return [part.key for part in discover_parts(source)]


def new_shard_keys(instance: dg.DagsterInstance, source: str | Location) -> list[str]:
    """Partition keys of the source's parts that the instance has not registered yet."""
    known = set(instance.get_dynamic_partitions(shards.name))
    return [key for key in source_keys(source) if key not in known]


def register_shards(instance: dg.DagsterInstance, source: str | Location) -> list[str]:
    """Register every part of ``source`` as a shard partition; returns the keys that were new."""
    new = new_shard_keys(instance, source)
    if new:
        instance.add_dynamic_partitions(shards.name, new)
    return new
