"""A tiny code location for the PostgreSQL instance test: per-shard runs whose `embedded` step holds the `gpu` pool.

Each run's first step (`prepared`, no pool) waits at a file barrier until every run of the test has reached it, so
all runs are in flight at once and their `embedded` steps become ready together: only the pool keeps them apart.
Both steps record their start and end (wall clock) in their materialization's metadata, stored on the instance.
"""

import time
from pathlib import Path

import dagster as dg

SHARDS = dg.StaticPartitionsDefinition(["00000", "00001", "00002", "00003"])
GPU_SECONDS = 0.5  # how long an `embedded` step holds its gpu slot


class BarrierConfig(dg.Config):
    """Where the runs meet, and how many must arrive before any goes on."""

    barrier_dir: str
    parties: int = 4
    timeout_s: float = 60.0


@dg.asset(partitions_def=SHARDS)
def prepared(context: dg.AssetExecutionContext, config: BarrierConfig) -> dg.MaterializeResult:
    """Marks this shard's arrival and waits until every run of the test has arrived."""
    start = time.time()
    barrier = Path(config.barrier_dir)
    (barrier / context.partition_key).touch()
    while len(list(barrier.iterdir())) < config.parties:
        if time.time() - start > config.timeout_s:
            raise RuntimeError(f"barrier {barrier}: only {len(list(barrier.iterdir()))} of {config.parties} runs came")
        time.sleep(0.05)
    return dg.MaterializeResult(metadata={"start": start, "end": time.time()})


@dg.asset(partitions_def=SHARDS, deps=[prepared], pool="gpu")
def embedded() -> dg.MaterializeResult:
    """Holds a `gpu` slot for GPU_SECONDS, like an embedding step holds the GPU."""
    start = time.time()
    time.sleep(GPU_SECONDS)
    return dg.MaterializeResult(metadata={"start": start, "end": time.time()})


# One process per run (not one per step): the pool is claimed by the run worker either way.
shard_job = dg.define_asset_job("shard_job", selection=[prepared, embedded], executor_def=dg.in_process_executor)
defs = dg.Definitions(assets=[prepared, embedded], jobs=[shard_job])
