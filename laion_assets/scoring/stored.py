"""Scoring stored embeddings with several predictors in one pass over the file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location
from laion_assets.scoring.predictors import LinearPredictor, Predictor
from laion_assets.sources.embeddings import StreamedNpy, open_embeddings

# Rows converted per step: the float32 chunk (24 MiB at 768-d) stays in the CPU's last-level cache between the
# conversion and the products, and one buffer is reused, so no memory is page-faulted in per chunk.
SCORE_CHUNK_ROWS = 8192


def float32_chunks(array: np.ndarray | StreamedNpy, rows: int = SCORE_CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, float32 chunk)``; each chunk lives in one reused buffer, valid until the next is yielded.

    float16 -> float32 is exact, so converting with torch's vectorised kernel gives the very values numpy's
    (much slower) cast gives.
    """
    n, d = array.shape
    if array.dtype == np.float32:
        for start in range(0, n, rows):
            yield start, np.asarray(array[start : start + rows])
        return
    import torch  # here, not at the top: loading the definitions must not pay for torch

    buffer = np.empty((min(rows, max(n, 1)), d), dtype=np.float32)
    target = torch.from_numpy(buffer)
    for start in range(0, n, rows):
        chunk = np.asarray(array[start : start + rows])
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            source = torch.from_numpy(chunk)
        target[: len(chunk)].copy_(source)
        yield start, buffer[: len(chunk)]


def score_array(array: np.ndarray | StreamedNpy, predictors: Mapping[str, Predictor]) -> dict[str, np.ndarray]:
    """Score every row of a (n, d) array with each predictor; returns float32 columns by name.

    Linear heads (V1, and V2 which collapses to one affine map) are one float32 matrix-vector product each on
    the converted chunk, the same ``x @ w + b`` as ``LinearPredictor.score`` (equal up to BLAS summation order,
    an ulp or two), so scoring both costs about one read of the embeddings.
    """
    n = array.shape[0]
    out = {name: np.empty(n, dtype=np.float32) for name in predictors}
    linear = {k: p for k, p in predictors.items() if isinstance(p, LinearPredictor)}
    other = {k: p for k, p in predictors.items() if not isinstance(p, LinearPredictor)}
    weights = {k: np.ascontiguousarray(p.weight, dtype=np.float32) for k, p in linear.items()}
    for start, chunk in float32_chunks(array):
        stop = start + chunk.shape[0]
        for name, weight in weights.items():
            np.dot(chunk, weight, out=out[name][start:stop])
        for name, predictor in other.items():
            out[name][start:stop] = predictor.score(chunk)
    for name, predictor in linear.items():
        out[name] += np.float32(predictor.bias)
    return out


def score_file(path: str | Location, predictors: Mapping[str, Predictor]) -> dict[str, np.ndarray]:
    """Score a stored embeddings .npy file; the error names the file on a width mismatch."""
    array = open_embeddings(path)
    for name, predictor in predictors.items():
        if array.shape[1] != predictor.dim:
            raise BadInputError(
                f"{path}: embedding width {array.shape[1]} does not fit predictor {name!r} "
                f"({predictor.identity}), which expects {predictor.dim}"
            )
    return score_array(array, predictors)
