"""Per-shard steps: validate and index a stored part, then score it with the active predictors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.atomic import write_parquet
from laion_assets.embeddings import EmbeddingStats, validate_embeddings
from laion_assets.errors import BadInputError
from laion_assets.layout import Part
from laion_assets.metadata import read_metadata
from laion_assets.predictors import Predictor, PredictorIdentity
from laion_assets.scoring import score_file

# Key under which a scores file records which predictor made each column.
IDENTITY_KEY = "laion_assets.predictors"
SOURCE_KEY = "laion_assets.source"


@dataclass(frozen=True)
class IndexedPart:
    """What indexing one part found."""

    key: str
    rows: int
    stats: EmbeddingStats
    duplicate_hashes: int
    languages: dict[str, int] = field(default_factory=dict)


def index_part(part: Part, out: Path, dim: int, swap_width_height: bool = False) -> IndexedPart:
    """Validate a part (width, dtype, rows, norms, finite values) and write its metadata with LAION hashes."""
    meta = read_metadata(part.metadata, swap_width_height=swap_width_height)
    stats = validate_embeddings(part.embeddings, dim, meta.height, rows_from=part.metadata)
    source = {"embeddings": str(part.embeddings), "metadata": str(part.metadata)}
    write_parquet(meta.to_arrow(), out, {SOURCE_KEY: json.dumps(source, sort_keys=True)})
    languages = meta["LANGUAGE"].fill_null("").value_counts(sort=True).head(10)
    return IndexedPart(
        key=part.key,
        rows=meta.height,
        stats=stats,
        duplicate_hashes=meta.height - meta["hash"].n_unique(),
        languages={str(k): int(v) for k, v in languages.iter_rows()},
    )


@dataclass(frozen=True)
class ScoredPart:
    """Scores of one part and the predictors that made them."""

    key: str
    rows: int
    identities: dict[str, PredictorIdentity]
    summary: dict[str, dict[str, float]]


def score_part(part: Part, indexed_metadata: Path, predictors: Mapping[str, Predictor], out: Path) -> ScoredPart:
    """Score a part's embeddings with each predictor (column name -> predictor) and write them with its hashes."""
    hashes = pl.read_parquet(indexed_metadata, columns=["hash"])["hash"]
    scores = score_file(part.embeddings, predictors)
    for name, column in scores.items():
        if column.shape[0] != hashes.len():
            raise BadInputError(
                f"{part.embeddings}: {column.shape[0]} rows but {indexed_metadata} has {hashes.len()}; "
                "re-materialize clip_embeddings for this shard"
            )
        bad = ~np.isfinite(column)
        if bad.any():
            raise BadInputError(f"{part.embeddings}: row {int(np.argmax(bad))} scored non-finite by {name!r}")
    table = pl.DataFrame({"hash": hashes, **{k: pl.Series(k, v, dtype=pl.Float32) for k, v in scores.items()}})
    identities = {name: p.identity for name, p in predictors.items()}
    recorded = json.dumps({k: str(v) for k, v in identities.items()}, sort_keys=True)
    write_parquet(table.to_arrow(), out, {IDENTITY_KEY: recorded})
    summary = {
        name: {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())} if v.size else {}
        for name, v in scores.items()
    }
    return ScoredPart(part.key, hashes.len(), identities, summary)


def read_identities(scores_path: Path) -> dict[str, PredictorIdentity]:
    """Return the predictor identity of every score column recorded in a scores file."""
    raw = (pq.read_schema(scores_path).metadata or {}).get(IDENTITY_KEY.encode())
    if raw is None:
        raise BadInputError(f"{scores_path}: no predictor identity recorded; re-materialize its scores")
    return {k: PredictorIdentity.parse(v) for k, v in json.loads(raw).items()}
