"""How many cores scoring uses: parts in parallel, each scored by single-threaded BLAS/torch calls.

Measured on the 2-core development box (BENCHMARKS.md, "Scoring stored embeddings"): a part's pass is a
read, a float16 -> float32 copy and a few matrix-vector products per cache-sized chunk; splitting each of those
small calls over several BLAS/OpenMP threads costs more CPU than it saves (threads spin and fight for busy cores),
while scoring several parts at once, one thread each, keeps every core busy for the same CPU time.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from laion_assets.core.errors import BadInputError

THREADS_ENV = "LAION_ASSETS_THREADS"
WORKERS_ENV = "LAION_ASSETS_WORKERS"

_lock = threading.Lock()
_depth = 0
_restore: list = []


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _positive(name: str, value: str | int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise BadInputError(f"{name} must be a whole number >= 1, got {value!r}")
    return number


def compute_threads(threads: int | None = None) -> int:
    """BLAS/torch threads per worker: the argument, else $LAION_ASSETS_THREADS, else 1."""
    if threads is not None:
        return _positive("threads", threads)
    return _positive(THREADS_ENV, os.environ.get(THREADS_ENV) or 1)


def default_workers(workers: int | None = None, jobs: int | None = None) -> int:
    """Parts scored at once: the argument, else $LAION_ASSETS_WORKERS, else the machine's cores (never more than
    ``jobs``)."""
    chosen = _positive("workers", workers) if workers is not None else None
    if chosen is None:
        chosen = _positive(WORKERS_ENV, os.environ.get(WORKERS_ENV) or machine_cores())
    return max(1, min(chosen, jobs)) if jobs else chosen


@contextmanager
def limit_threads(threads: int | None = None) -> Iterator[int]:
    """Limit BLAS, OpenMP and torch's intra-op threads to ``threads`` (default :func:`compute_threads`) in a block.

    The limits are process-wide, so nested or concurrent blocks (worker threads each scoring a part) share the
    outermost block's limits, which are restored when the last block ends.
    """
    global _depth
    threads = compute_threads(threads)
    with _lock:
        if _depth == 0:
            import torch  # the float16 conversion and non-linear heads run in torch
            from threadpoolctl import threadpool_limits

            torch_threads = torch.get_num_threads()  # before the OpenMP limit, which torch would report
            limits = threadpool_limits(limits=threads)
            _restore[:] = [limits, torch_threads]
            torch.set_num_threads(threads)
        _depth += 1
    try:
        yield threads
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                limits, torch_threads = _restore
                limits.restore_original_limits()
                sys.modules["torch"].set_num_threads(torch_threads)
                _restore.clear()
