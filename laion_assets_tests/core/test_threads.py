"""Thread and worker settings for scoring: one BLAS/torch thread per worker by default, limits restored after."""

import threading

import pytest
import torch
from threadpoolctl import threadpool_info

from laion_assets.core.errors import BadInputError
from laion_assets.core.threads import THREADS_ENV, WORKERS_ENV, compute_threads, default_workers, limit_threads


def blas_threads() -> set[int]:
    # An OpenMP-threaded BLAS (faiss-cpu's OpenBLAS, loaded once a test imported faiss) keeps its limit per thread,
    # so another thread does not see it; scoring calls numpy's and torch's BLAS, never that one.
    return {
        lib["num_threads"]
        for lib in threadpool_info()
        if lib["user_api"] == "blas" and lib.get("threading_layer") != "openmp"
    }


def test_limits_hold_inside_and_are_restored_after_the_last_block():
    before_blas, before_torch = blas_threads(), torch.get_num_threads()
    inside = []

    def worker() -> None:  # a block in another thread (a worker scoring a part) shares the limits
        with limit_threads(1):
            inside.append(blas_threads())

    with limit_threads(1):
        assert blas_threads() == {1} and torch.get_num_threads() == 1
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert inside == [{1}] and blas_threads() == {1}  # the worker's block ending did not restore them early
    assert blas_threads() == before_blas and torch.get_num_threads() == before_torch


def test_settings_come_from_the_argument_else_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert compute_threads() == 1 and compute_threads(3) == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert compute_threads() == 2
    monkeypatch.setenv(WORKERS_ENV, "8")
    assert default_workers() == 8 and default_workers(jobs=3) == 3 and default_workers(2, jobs=5) == 2
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(BadInputError, match=f"{THREADS_ENV} must be a whole number >= 1, got 'zero'"):
        compute_threads()
    with pytest.raises(BadInputError, match="workers must be a whole number >= 1, got 0"):
        default_workers(0)
