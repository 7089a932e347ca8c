"""Many shard partitions in one run: a per-shard asset processes ``context.partition_keys``, a few shards at a time.

A backfill of the per-shard assets is one run by default (``BackfillPolicy.single_run()``, see
``partitions.SHARD_BACKFILL_POLICY``): the step gets every partition key of the range, lists the source once, loads
its models once and works on ``storage.shard_workers`` shards at a time in threads (numpy, polars, pyarrow, torch
and hashlib release the GIL while they work). Every partition still gets its own materialization, with its own
metadata (``context.add_asset_metadata(..., partition_key=…)``). A shard that fails does not cost the others: the
finished ones are recorded as materializations of their partitions, then the step fails naming each failed shard
and its error. Dagster calls ``context`` only from the step's own thread; the worker threads only compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from laion_assets.core.errors import LaionAssetsError
from laion_assets.defs.errors import as_failure
from laion_assets.scoring.parallel import parallel_map

# dagster's own tag names for a materialization's data version (what `MaterializeResult(data_version=…)` writes).
DATA_VERSION_TAG = "dagster/data_version"
DATA_VERSION_IS_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
# How many progress lines a run over many shards logs (each is an event in the run's log).
PROGRESS_LINES = 20


@dataclass(frozen=True)
class ShardDone:
    """One shard's outcome: its materialization's metadata, a log line, and (for scores) its data version."""

    metadata: Mapping[str, object]
    message: str
    data_version: str | None = None
    skipped: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    """One line for a failed shard, as ``as_failure`` words our errors and the operating system's."""
    if isinstance(exc, OSError) and not isinstance(exc, LaionAssetsError):
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc) else ""
        return f"{exc}{where}"
    if isinstance(exc, LaionAssetsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def process_shards(
    context: dg.AssetExecutionContext,
    step: str,
    keys: Sequence[str],
    work: Callable[[str], ShardDone],
    workers: int,
) -> dict[str, ShardDone]:
    """Run ``work(key)`` for every key, ``workers`` at a time; returns the outcomes in key order.

    One key runs as before (its error is the step's error). With several, a failure of some shards records the
    finished ones as materializations of their partitions, then raises one ``dg.Failure`` naming each failed shard.
    """
    if len(keys) == 1:
        (key,) = keys
        with as_failure(f"{step} (shard {key})"):
            done = work(key)
        context.log.info(done.message)
        return {key: done}
    start, finished, failed = time.perf_counter(), {}, {}
    every = max(1, len(keys) // PROGRESS_LINES)
    skipped = 0
    workers = max(1, min(workers, len(keys)))
    context.log.info(f"{step}: {len(keys)} shards in this run, {workers} at a time")

    def record(key: str, outcome: ShardDone | BaseException) -> None:
        nonlocal skipped
        if isinstance(outcome, BaseException):
            failed[key] = outcome
            context.log.error(f"{step}: shard {key} failed: {_describe(outcome)}")
        else:
            finished[key] = outcome
            skipped += outcome.skipped
        count = len(finished) + len(failed)
        if count % every == 0 or count == len(keys):
            context.log.info(
                f"{step}: {count}/{len(keys)} shards done ({skipped} already up to date, {len(failed)} failed) "
                f"in {time.perf_counter() - start:.1f} s"
            )

    if workers == 1:  # also the CLIP step, whose torch threads must not be limited as the pool limits them
        for key in keys:
            try:
                record(key, work(key))
            except Exception as exc:  # noqa: BLE001 - one shard's error must not lose the others' work
                record(key, exc)
    else:  # the pool `laion-assets score` uses: one BLAS/torch thread per worker
        for key, outcome in parallel_map(work, keys, workers):
            record(key, outcome)
    ordered = {key: finished[key] for key in keys if key in finished}
    if failed:
        _record_finished(context, ordered)
        listed = "; ".join(f"{key}: {_describe(failed[key])}" for key in sorted(failed))
        raise dg.Failure(
            description=f"{step}: {len(failed)} of {len(keys)} shard(s) failed ({', '.join(sorted(failed))}). "
            f"{listed}. The {len(ordered)} other shard(s) are written and recorded; materialize the same range "
            "again to redo only the shards not yet done",
            allow_retries=False,
        ) from failed[min(failed)]
    return ordered


def _version_tags(version: str | None) -> dict[str, str]:
    return {DATA_VERSION_TAG: version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"} if version else {}


def _record_finished(context: dg.AssetExecutionContext, done: Mapping[str, ShardDone]) -> None:
    """Record each finished shard of a failing step as a materialization of its partition."""
    for key, outcome in done.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=key,
                metadata=dict(outcome.metadata),
                tags=_version_tags(outcome.data_version),
            )
        )


def add_partition_metadata(context: dg.AssetExecutionContext, metadata: Mapping[str, Mapping[str, object]]) -> None:
    """``context.add_asset_metadata(metadata[key], partition_key=key)`` for every partition of the run, at once.

    Dagster 1.13's ``add_asset_metadata`` checks each key against the run's range by loading every dynamic partition
    from the instance, so N calls cost O(N x partitions): 11 ms a call at 300 shards, growing with the registry.
    The keys here are the run's own (``context.partition_keys``), so the check is skipped by recording them in the
    step's metadata accumulator, which is what that method does after its check; should the private attributes
    move in another Dagster version, the public method is used.
    """
    try:
        from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

        step = context.op_execution_context._step_execution_context  # noqa: SLF001
        merged = dict(step._metadata_accumulator.per_output_metadata)  # noqa: SLF001
    except (ImportError, AttributeError):
        for key, values in metadata.items():
            context.add_asset_metadata(dict(values), partition_key=key)
        return
    for key, values in metadata.items():
        handle = AssetMetadataHandle(asset_key=context.asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **values}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)  # noqa: SLF001


def shards_result(
    context: dg.AssetExecutionContext,
    done: Mapping[str, ShardDone],
    check_results: Sequence[dg.AssetCheckResult] = (),
) -> dg.MaterializeResult:
    """The step's result: one partition's metadata as before, or each partition's through ``add_asset_metadata``.

    The data version (the predictors, for scores) is the run's: every shard of one run is made with the same ones.
    """
    versions = {outcome.data_version for outcome in done.values()}
    version = dg.DataVersion(next(iter(versions))) if len(versions) == 1 and None not in versions else None
    if len(done) == 1:
        (outcome,) = done.values()
        return dg.MaterializeResult(metadata=dict(outcome.metadata), data_version=version, check_results=check_results)
    per_partition = {}
    for key, outcome in done.items():
        metadata = dict(outcome.metadata)
        if version is None and outcome.data_version is not None:
            metadata["data_version"] = outcome.data_version
        per_partition[key] = metadata
    add_partition_metadata(context, per_partition)
    skipped = sum(outcome.skipped for outcome in done.values())
    return dg.MaterializeResult(
        metadata={"shards_in_run": len(done), "shards_up_to_date_in_run": skipped},
        data_version=version,
        check_results=check_results,
    )
