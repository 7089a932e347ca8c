"""The spine without Dagster: source parts -> shards -> tags -> subsets, histogram, buckets, KV files.

The assets call the same functions one step at a time; ``verify`` calls :func:`rebuild` to remake a release's
inputs from scratch in a temporary data root.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_dir
from laion_assets.core.errors import BadInputError, SourceChangedError
from laion_assets.core.locations import Location
from laion_assets.core.outputs import OutputLayout
from laion_assets.release.kv import KV_FILES, KVSummary, parquet_batches, write_kv
from laion_assets.scoring.parts import score_part
from laion_assets.scoring.predictors import CLIP_L14_DIM, load_for_column
from laion_assets.selection.buckets import BucketAccumulator, accumulate_part, save_buckets
from laion_assets.selection.gating import tags_validations
from laion_assets.selection.histogram import histogram_document, write_histogram
from laion_assets.selection.safety_columns import SafetySources
from laion_assets.selection.subsets import SUBSET_PART_ROWS, write_rule
from laion_assets.selection.tags import (
    BUILT_FROM,
    build_tags,
    built_from_path,
    recorded_ids,
    scan_tags,
    tag_files,
    write_built_from,
)
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.embeddings import open_embeddings
from laion_assets.sources.indexing import Validation, check_source_unchanged, index_part
from laion_assets.sources.layout import Part, discover_parts
from laion_assets.sources.metadata import ENGLISH
from laion_assets.sources.safety import NO_SAFETY_ID, SafetyIndex, build_safety_index, check_safety_current

V1_COLUMN = "aesthetic"
V2_COLUMN = "AESTHETIC_SCORE"
SCORE_COLUMNS = (V1_COLUMN, V2_COLUMN)


def build_shards(
    parts: Sequence[Part],
    layout: OutputLayout,
    predictor_files: Mapping[str, Path],
    dim: int,
    swap_width_height: bool = False,
    language: str = ENGLISH,
    forced: Collection[str] = (),
) -> dict[str, Validation]:
    """Index and score every part (what ``clip_embeddings`` and ``aesthetic_scores`` do per partition).

    Each column's weights must fit it (``load_for_column``) unless the column is in ``forced``. Returns each part's
    validation by shard key, what ``build_tags`` takes.
    """
    predictors = {
        column: load_for_column(path, column, dim, force=column in forced) for column, path in predictor_files.items()
    }
    validations = {}
    for part in parts:
        indexed = index_part(part, layout.shard_metadata(part.key), dim, swap_width_height, language)
        score_part(part, layout.shard_metadata(part.key), predictors, layout.shard_scores(part.key))
        validations[part.key] = indexed.validation
    return validations


def build_subsets(layout: OutputLayout, part_rows: int | Mapping[str, int] = SUBSET_PART_ROWS) -> dict[str, list[Path]]:
    """Write every V2 and V1 subset from the tags table, in parquet parts of ``part_rows`` rows (per subset name)."""
    files = tag_files(layout)
    return {
        rule.asset_name: write_rule(
            files,
            rule,
            layout.subset_dir(rule.asset_name),
            part_rows if isinstance(part_rows, int) else part_rows.get(rule.asset_name, SUBSET_PART_ROWS),
        )
        for rule in V2_SUBSETS + V1_SUBSETS
    }


def build_histogram(layout: OutputLayout) -> Path:
    """Write ``stats/score_histogram.json`` from the tags table, and which table it counted."""
    tags_id = recorded_ids(tag_files(layout))
    path = write_histogram(histogram_document(scan_tags(layout), SCORE_COLUMNS), layout.histogram_path)
    write_built_from(built_from_path(path), tags_id)  # after the file: a crash in between leaves an old record
    return path


def build_buckets(
    layout: OutputLayout, parts: Mapping[str, Part], dim: int, validations: Mapping[str, Validation] | None = None
) -> np.ndarray:
    """Write ``buckets/rating{k}.npy`` from the tags' V1 scores and the validated embeddings; returns counts.

    Each part must still be the file ``clip_embeddings`` validated for the tags (``validations``, by default read
    back through the tags), so a part replaced since (e.g. one later refused for NaN values) stops the step before
    anything is written.
    """
    acc = BucketAccumulator(dim)
    validations = validations if validations is not None else tags_validations(layout)
    if not validations:
        raise BadInputError(f"{layout.tags_dir}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    for key, validation in sorted(validations.items()):
        part = parts.get(key)
        if part is None:
            raise SourceChangedError(f"shard {key}: its part is no longer in the source; re-materialize aesthetic_tags")
        check_source_unchanged(part, validation)
        scores = pl.read_parquet(layout.tags_part(key), columns=[V1_COLUMN])[V1_COLUMN].to_numpy()
        embeddings = open_embeddings(part.embeddings)
        if embeddings.shape[0] != scores.shape[0]:
            raise BadInputError(
                f"{part.embeddings}: {embeddings.shape[0]} rows but {layout.tags_part(key)} has {scores.shape[0]}"
            )
        accumulate_part(acc, embeddings, scores)
    with atomic_dir(layout.buckets_dir) as tmp:
        save_buckets(acc.vectors(), tmp)
        write_built_from(tmp / BUILT_FROM, recorded_ids(tag_files(layout)))
    return acc.counts


def build_kvs(layout: OutputLayout) -> dict[str, KVSummary]:
    """Write LAION's KV files (``aesthetic.kv`` ``<qe``, ``safety.kv`` ``<qee``) from the tags table, in shard order."""
    files = tag_files(layout)
    tags_id = recorded_ids(files)
    layout.kv_dir.mkdir(parents=True, exist_ok=True)
    record = built_from_path(layout.kv_dir)
    record.unlink(missing_ok=True)  # while the files are being rewritten they describe no table
    written = {
        name: write_kv(parquet_batches(files, columns), layout.kv_dir / name, fmt)
        for name, (fmt, columns) in KV_FILES.items()
    }
    write_built_from(record, tags_id)
    return written


def rebuild(
    source: Location,
    data_root: Path,
    predictor_files: Mapping[str, Path],
    dim: int = CLIP_L14_DIM,
    safety: Location | None = None,
    swap_width_height: bool = False,
    language: str = ENGLISH,
    exclude: Sequence[str] = (),
    forced: Collection[str] = (),
    part_rows: int | Mapping[str, int] = SUBSET_PART_ROWS,
    sources: SafetySources | None = None,
    watermark_files: Mapping[str, Path] | None = None,
) -> OutputLayout:
    """Run the whole spine from a clip-retrieval folder (and optional safety table) into ``data_root``.

    Parts whose keys are in ``exclude`` are left out, as ``release_config.exclude_shards`` leaves them out;
    ``part_rows`` is the subsets' part size (one for all, or per subset name); ``sources`` where punsafe and
    pwatermark come from; ``watermark_files`` each shard's ``watermark.parquet`` when pwatermark was computed from
    images (a rebuild from embeddings cannot score them: it takes the values the watermark head wrote).
    """
    layout = OutputLayout(Path(data_root))
    parts = [p for p in discover_parts(source) if p.key not in set(exclude)]
    validations = build_shards(parts, layout, predictor_files, dim, swap_width_height, language, forced)
    for key, path in (watermark_files or {}).items():
        shutil.copy2(path, layout.shard_watermark(key))
    index, safety_id = None, NO_SAFETY_ID
    if safety is not None:
        build_safety_index(safety, layout.safety_dir)
        index = SafetyIndex.open(layout.safety_dir)
        safety_id = check_safety_current(safety, layout.safety_dir)
    build_tags(validations, layout, index, safety_id, sources=sources)
    build_subsets(layout, part_rows)
    build_histogram(layout)
    build_buckets(layout, {p.key: p for p in parts}, dim, validations)
    build_kvs(layout)
    return layout
