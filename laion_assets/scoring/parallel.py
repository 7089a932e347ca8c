"""Scoring many parts at once: a pool of worker threads, each part scored by single-threaded BLAS/torch calls.

Threads, not processes: the pass spends its time in numpy, torch and file reads, which release the GIL, and a
process per worker would import torch again (about 1.5 CPU-s each). The thread limits are process-wide and set
once around the pool (:func:`laion_assets.core.threads.limit_threads`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from laion_assets.core.threads import default_workers, limit_threads
from laion_assets.scoring.parts import ScoredPart, score_part
from laion_assets.scoring.predictors import Predictor
from laion_assets.sources.layout import Part

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, threads: int | None = None
) -> Iterator[tuple[T, R | Exception]]:
    """Apply ``fn`` to every item on ``workers`` threads (default: the machine's cores), ``threads`` BLAS/torch
    threads each (default 1); yields ``(item, result or the exception it raised)`` as each finishes.

    One item's failure does not stop the others; at most ``workers`` items are in flight, so stopping the iteration
    early (or Ctrl-C) leaves no more than that many to finish.
    """
    items = list(items)
    if not items:
        return
    workers = default_workers(workers, len(items))
    with limit_threads(threads), ThreadPoolExecutor(workers, thread_name_prefix="laion-score") as pool:
        pending: dict[Future, T] = {}
        queue = iter(items)
        try:
            while True:
                while len(pending) < workers and (item := next(queue, _END)) is not _END:
                    pending[pool.submit(fn, item)] = item  # type: ignore[arg-type]
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (error if isinstance(error, Exception) else future.result())
        finally:
            for future in pending:
                future.cancel()


def score_parts(
    jobs: Sequence[tuple[Part, Path, Path]],
    predictors: Mapping[str, Predictor],
    workers: int | None = None,
    threads: int | None = None,
) -> Iterator[tuple[Part, ScoredPart | Exception]]:
    """:func:`score_part` on many ``(part, indexed_metadata, out)`` jobs in parallel; yields ``(part, ScoredPart or
    the error)`` as each finishes (one part's error stops no other)."""

    def work(job: tuple[Part, Path, Path]) -> ScoredPart:
        part, indexed, out = job
        return score_part(part, indexed, predictors, out)

    for (part, _, _), result in parallel_map(work, jobs, workers, threads):
        yield part, result
