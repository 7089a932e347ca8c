"""Scoring one validated part with the active predictors, and reading back which predictors made its scores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.core.identity import IDENTITY_KEY
from laion_assets.core.threads import limit_threads
from laion_assets.scoring.predictors import Predictor, PredictorIdentity
from laion_assets.scoring.stored import scan_and_score
from laion_assets.sources.indexing import VALIDATION_ID_KEY, check_source_unchanged, read_validation
from laion_assets.sources.layout import Part


@dataclass(frozen=True)
class ScoredPart:
    """Scores of one part and the predictors that made them."""

    key: str
    rows: int
    identities: dict[str, PredictorIdentity]
    summary: dict[str, dict[str, float]]


def score_part(part: Part, indexed_metadata: Path, predictors: Mapping[str, Predictor], out: Path) -> ScoredPart:
    """Score a part's embeddings with each predictor (column name -> predictor) and write them with its hashes.

    Only a part whose files are still the ones ``clip_embeddings`` validated is scored; the scores record that
    validation. The vectors are read once, checked and scored in the same pass (``laion-assets score`` runs the
    same code), with BLAS/torch threads limited as :func:`laion_assets.core.threads.limit_threads` says.
    """
    validation = read_validation(indexed_metadata)
    check_source_unchanged(part, validation)
    hashes = pl.read_parquet(indexed_metadata, columns=["hash"])["hash"]
    scores = score_vectors(part, predictors, hashes.len(), indexed_metadata)
    table = pl.DataFrame({"hash": hashes, **{k: pl.Series(k, v, dtype=pl.Float32) for k, v in scores.items()}})
    identities = {name: p.identity for name, p in predictors.items()}
    recorded = json.dumps({k: str(v) for k, v in identities.items()}, sort_keys=True)
    write_parquet(table.to_arrow(), out, {IDENTITY_KEY: recorded, VALIDATION_ID_KEY: validation.id})
    summary = {
        name: {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())} if v.size else {}
        for name, v in scores.items()
    }
    return ScoredPart(part.key, hashes.len(), identities, summary)


def score_vectors(
    part: Part, predictors: Mapping[str, Predictor], rows: int, rows_from: str | Path
) -> dict[str, np.ndarray]:
    """A part's float32 scores by column: its vectors checked and scored in one pass, every score finite.

    ``rows`` is the row count its metadata has (``rows_from`` names it in the error when the vectors differ).
    """
    dims = {p.dim for p in predictors.values()}
    dim = dims.pop() if len(dims) == 1 else None  # else scan_and_score names the head that does not fit
    with limit_threads():
        _, scores = scan_and_score(part.embeddings, predictors, dim, rows, rows_from)
    for name, column in scores.items():
        bad = ~np.isfinite(column)
        if bad.any():
            raise BadInputError(f"{part.embeddings}: row {int(np.argmax(bad))} scored non-finite by {name!r}")
    return scores


def read_identities(scores_path: Path) -> dict[str, PredictorIdentity]:
    """Return the predictor identity of every score column recorded in a scores file."""
    raw = (pq.read_schema(scores_path).metadata or {}).get(IDENTITY_KEY.encode())
    if raw is None:
        raise BadInputError(f"{scores_path}: no predictor identity recorded; re-materialize its scores")
    return {k: PredictorIdentity.parse(v) for k, v in json.loads(raw).items()}
