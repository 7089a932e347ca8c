"""Scoring stored embeddings with several predictors in the same single pass that validates them.

The pass itself (read, float16 -> float32, checks, sha256) is :func:`laion_assets.sources.embeddings.scan_embeddings`;
the heads are its sinks, so scoring a part costs one read of its vectors, and ``clip_embeddings``'s validation,
``aesthetic_scores`` and ``laion-assets score`` run the very same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location
from laion_assets.scoring.predictors import LinearPredictor, Predictor
from laion_assets.sources.embeddings import (
    SCAN_CHUNK_ROWS,
    EmbeddingStats,
    StreamedNpy,
    float32_converter,
    scan_embeddings,
)

# Kept for callers that chunk an in-memory array themselves: the same chunking as the fused pass.
SCORE_CHUNK_ROWS = SCAN_CHUNK_ROWS


def float32_chunks(array: np.ndarray | StreamedNpy, rows: int = SCORE_CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, float32 chunk)``; each chunk lives in one reused buffer, valid until the next is yielded.

    float16 -> float32 is exact, so converting with torch's vectorised kernel gives the very values numpy's
    (much slower) cast gives.
    """
    n, d = array.shape
    convert = float32_converter(min(rows, max(n, 1)), d, np.dtype(array.dtype))
    for start in range(0, n, rows):
        yield start, convert(np.asarray(array[start : start + rows]))


class HeadScores:
    """A sink of the fused pass: scores each float32 chunk with every head into preallocated float32 columns.

    Linear heads (V1, and V2 which collapses to one affine map) are one float32 matrix-vector product each on
    the chunk while it is in cache, the same ``x @ w + b`` as ``LinearPredictor.score`` (equal up to BLAS summation
    order, an ulp or two); other heads run their own ``score`` on the chunk.
    """

    def __init__(self, predictors: Mapping[str, Predictor], rows: int) -> None:
        self.predictors = dict(predictors)
        self.out = {name: np.empty(rows, dtype=np.float32) for name in predictors}
        self.weights = {
            k: np.ascontiguousarray(p.weight, dtype=np.float32)
            for k, p in predictors.items()
            if isinstance(p, LinearPredictor)
        }
        self.other = {k: p for k, p in predictors.items() if not isinstance(p, LinearPredictor)}

    def __call__(self, start: int, chunk: np.ndarray) -> None:
        """Score one chunk into rows ``start:start+len(chunk)`` of every column."""
        stop = start + chunk.shape[0]
        for name, weight in self.weights.items():
            np.dot(chunk, weight, out=self.out[name][start:stop])
        for name, predictor in self.other.items():
            self.out[name][start:stop] = predictor.score(chunk)

    def result(self) -> dict[str, np.ndarray]:
        """The finished columns (biases added once, in float32, after the products)."""
        for name in self.weights:
            self.out[name] += np.float32(self.predictors[name].bias)  # type: ignore[union-attr]
        return self.out


def score_array(array: np.ndarray | StreamedNpy, predictors: Mapping[str, Predictor]) -> dict[str, np.ndarray]:
    """Score every row of a (n, d) array with each predictor; returns float32 columns by name."""
    heads = HeadScores(predictors, array.shape[0])
    for start, chunk in float32_chunks(array):
        heads(start, chunk)
    return heads.result()


def check_widths(path: str | Location, dim: int, predictors: Mapping[str, Predictor]) -> None:
    """Raise naming the file and the predictor when a predictor does not take ``dim``-wide embeddings."""
    for name, predictor in predictors.items():
        if dim != predictor.dim:
            raise BadInputError(
                f"{path}: embedding width {dim} does not fit predictor {name!r} "
                f"({predictor.identity}), which expects {predictor.dim}"
            )


def scan_and_score(
    path: str | Location,
    predictors: Mapping[str, Predictor],
    expected_dim: int | None = None,
    expected_rows: int | None = None,
    rows_from: str | Location = "its metadata",
    validate: bool = True,
    sha256: bool = False,
) -> tuple[EmbeddingStats, dict[str, np.ndarray]]:
    """Validate and score an embeddings file in one pass; returns its stats and a float32 column per predictor.

    Errors name the file (and the row): a width or row count that does not fit, a non-finite or non-unit row
    (with ``validate``), a predictor that does not take the file's width.
    """
    holder: list[HeadScores] = []

    def heads_for(rows: int, dim: int) -> HeadScores:
        check_widths(path, dim, predictors)
        holder.append(HeadScores(predictors, rows))
        return holder[0]

    stats = scan_embeddings(
        path, expected_dim, expected_rows, rows_from, make_sink=heads_for, validate=validate, sha256=sha256
    )
    return stats, holder[0].result()


def score_file(path: str | Location, predictors: Mapping[str, Predictor]) -> dict[str, np.ndarray]:
    """Score a stored embeddings .npy file; the error names the file on a width mismatch."""
    return scan_and_score(path, predictors, validate=False)[1]
