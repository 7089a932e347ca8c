"""Scoring stored embeddings with several predictors in one pass over the file."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from laion_assets.embeddings import StreamedNpy, iter_chunks, open_embeddings
from laion_assets.errors import BadInputError
from laion_assets.locations import Location
from laion_assets.predictors import LinearPredictor, Predictor


def score_array(array: np.ndarray | StreamedNpy, predictors: Mapping[str, Predictor]) -> dict[str, np.ndarray]:
    """Score every row of a (n, d) array with each predictor; returns float32 columns by name.

    Linear heads (V1, and V2 which collapses to one affine map) share a single (d, k) matmul per chunk,
    so scoring both costs about one read of the embeddings.
    """
    n = array.shape[0]
    out = {name: np.empty(n, dtype=np.float32) for name in predictors}
    linear = {k: p for k, p in predictors.items() if isinstance(p, LinearPredictor)}
    other = {k: p for k, p in predictors.items() if not isinstance(p, LinearPredictor)}
    if linear:
        weights = np.stack([p.weight for p in linear.values()], axis=1).astype(np.float32)
        biases = np.array([p.bias for p in linear.values()], dtype=np.float32)
    for start, chunk in iter_chunks(array):
        stop = start + chunk.shape[0]
        if linear:
            scores = chunk @ weights + biases
            for j, name in enumerate(linear):
                out[name][start:stop] = scores[:, j]
        for name, predictor in other.items():
            out[name][start:stop] = predictor.score(chunk)
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
