"""The spine without Dagster: source parts -> shards -> tags -> subsets, histogram, buckets, KV files.

The assets call the same functions one step at a time; ``verify`` calls :func:`rebuild` to remake a release's
inputs from scratch in a temporary data root.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.atomic import atomic_dir
from laion_assets.buckets import BucketAccumulator, accumulate_part, save_buckets
from laion_assets.embeddings import open_embeddings
from laion_assets.errors import BadInputError
from laion_assets.histogram import histogram_document, write_histogram
from laion_assets.kv import KV_FILES, KVSummary, parquet_batches, write_kv
from laion_assets.layout import Part, discover_parts
from laion_assets.locations import Location
from laion_assets.outputs import OutputLayout, require
from laion_assets.predictors import CLIP_L14_DIM, load_for_column
from laion_assets.safety import SafetyIndex, build_safety_index
from laion_assets.shards import index_part, score_part
from laion_assets.subsets import write_rule
from laion_assets.tags import build_tags, scan_tags, tag_files
from laion_assets.thresholds import V1_SUBSETS, V2_SUBSETS

V1_COLUMN = "aesthetic"
V2_COLUMN = "AESTHETIC_SCORE"
SCORE_COLUMNS = (V1_COLUMN, V2_COLUMN)


def build_shards(
    parts: Sequence[Part],
    layout: OutputLayout,
    predictor_files: Mapping[str, Path],
    dim: int,
    swap_width_height: bool = False,
    forced: Collection[str] = (),
) -> None:
    """Index and score every part (what ``clip_embeddings`` and ``aesthetic_scores`` do per partition).

    Each column's weights must fit it (``load_for_column``) unless the column is in ``forced``.
    """
    predictors = {
        column: load_for_column(path, column, dim, force=column in forced) for column, path in predictor_files.items()
    }
    for part in parts:
        index_part(part, layout.shard_metadata(part.key), dim, swap_width_height)
        score_part(part, layout.shard_metadata(part.key), predictors, layout.shard_scores(part.key))


def build_subsets(layout: OutputLayout) -> dict[str, Path]:
    """Write every V2 and V1 subset from the tags table."""
    files = tag_files(layout)
    return {
        rule.asset_name: write_rule(files, rule, layout.subset_dir(rule.asset_name)) for rule in V2_SUBSETS + V1_SUBSETS
    }


def build_histogram(layout: OutputLayout) -> Path:
    """Write ``stats/score_histogram.json`` from the tags table."""
    return write_histogram(histogram_document(scan_tags(layout), SCORE_COLUMNS), layout.histogram_path)


def build_buckets(parts: Sequence[Part], layout: OutputLayout, dim: int) -> np.ndarray:
    """Write ``buckets/rating{k}.npy`` from the V1 scores in the tags and the stored embeddings; returns counts."""
    acc = BucketAccumulator(dim)
    for part in parts:
        tags_part = require(layout.tags_part(part.key), f"aesthetic_tags for shard {part.key}")
        scores = pl.read_parquet(tags_part, columns=[V1_COLUMN])[V1_COLUMN].to_numpy()
        embeddings = open_embeddings(part.embeddings)
        if embeddings.shape[0] != scores.shape[0]:
            raise BadInputError(f"{part.embeddings}: {embeddings.shape[0]} rows but {tags_part} has {scores.shape[0]}")
        accumulate_part(acc, embeddings, scores)
    with atomic_dir(layout.buckets_dir) as tmp:
        save_buckets(acc.vectors(), tmp)
    return acc.counts


def build_kvs(layout: OutputLayout) -> dict[str, KVSummary]:
    """Write LAION's KV files (``aesthetic.kv`` ``<qe``, ``safety.kv`` ``<qee``) from the tags table, in shard order."""
    folder = require(layout.tags_dir, "aesthetic_tags")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise BadInputError(f"{folder}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    layout.kv_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: write_kv(parquet_batches(files, columns), layout.kv_dir / name, fmt)
        for name, (fmt, columns) in KV_FILES.items()
    }


def rebuild(
    source: Location,
    data_root: Path,
    predictor_files: Mapping[str, Path],
    dim: int = CLIP_L14_DIM,
    safety: Location | None = None,
    swap_width_height: bool = False,
    forced: Collection[str] = (),
) -> OutputLayout:
    """Run the whole spine from a clip-retrieval folder (and optional safety table) into ``data_root``."""
    layout = OutputLayout(Path(data_root))
    parts = discover_parts(source)
    build_shards(parts, layout, predictor_files, dim, swap_width_height, forced)
    index = None
    if safety is not None:
        build_safety_index(safety, layout.safety_dir)
        index = SafetyIndex.open(layout.safety_dir)
    build_tags([p.key for p in parts], layout, index)
    build_subsets(layout)
    build_histogram(layout)
    build_buckets(parts, layout, dim)
    build_kvs(layout)
    return layout
