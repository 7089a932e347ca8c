"""LAION-POP's selection: each centroid's nearest neighbours in the kNN index, filtered, de-duplicated by hash.

LAION's recipe (blog post "LAION POP", Nov 2023): the centroids' CLIP vectors queried LAION-5B through the
clip-retrieval search page "focusing on those with aesthetic values of at least 0.5 and a minimum resolution of 768
pixels on the shortest side"; images suspected of watermarks were removed; NSFW values were kept as a column.

What "aesthetic values of at least 0.5" meant is not written down. On LAION's 0-10 predictor scales almost every
image scores above 0.5, so as a threshold it removes next to nothing. The search page LAION points to (clip-retrieval's
front end) has an "aesthetic weight" whose default is 0.5, used with an "aesthetic score" (the bucket embedding
``rating{k}`` added to the query). So the 0.5 most likely was that weight. Our defaults do both readings: the
query is guided (rating 9, weight 0.5: ``ClipClient``'s defaults too) and rows must have V2 score >= 0.5, which
keeps the literal reading without changing the outcome on real data. Both are config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_dir, write_parquet
from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.retrieval.search import guided_query
from laion_assets.retrieval.served import ServedIndex
from laion_assets.selection.thresholds import PWATERMARK_MAX
from laion_assets.sources.schemas import METADATA_COLUMNS

AESTHETIC_COLUMNS = ("AESTHETIC_SCORE", "aesthetic")  # V2 (LAION's improved predictor), V1 (linear)
CATALOG_COLUMNS = ["url", "caption", "width", "height", "hash", "clip_similarity", "aesthetic", "AESTHETIC_SCORE",
                   "punsafe", "pwatermark"]  # fmt: skip
# The laion_pop table: LAION-5B's column names (as our other subsets), then where each row came from.
POP_COLUMNS: dict[str, pl.DataType] = {
    **METADATA_COLUMNS,
    "aesthetic": pl.Float32(),
    "AESTHETIC_SCORE": pl.Float32(),
    "hash": pl.Int64(),
    "centroid": pl.Int32(),
    "centroid_similarity": pl.Float32(),
    "rank": pl.Int32(),
}


@dataclass(frozen=True)
class PopParams:
    """The selection rule: neighbours per centroid, the filters, and the query's aesthetic guidance."""

    neighbours: int = 100
    aesthetic_column: str = "AESTHETIC_SCORE"
    min_aesthetic: float = 0.5
    min_side: int = 768
    max_pwatermark: float = PWATERMARK_MAX
    guidance_score: int | None = 9
    guidance_weight: float = 0.5

    def validate(self) -> None:
        """Raise BadInputError naming the first bad setting."""
        if self.neighbours < 1:
            raise BadInputError(f"laion_pop: neighbours must be at least 1, got {self.neighbours}")
        if self.aesthetic_column not in AESTHETIC_COLUMNS:
            raise BadInputError(
                f"laion_pop: aesthetic_column {self.aesthetic_column!r} is not one of {AESTHETIC_COLUMNS} "
                "(AESTHETIC_SCORE: LAION's V2 predictor; aesthetic: V1)"
            )
        if self.guidance_score is not None and not 0 <= self.guidance_score <= 9:
            raise BadInputError(f"laion_pop: guidance_score must be 0..9 or null, got {self.guidance_score}")
        for name in ("min_aesthetic", "max_pwatermark", "guidance_weight"):
            if not math.isfinite(getattr(self, name)):
                raise BadInputError(f"laion_pop: {name} must be a finite number")
        if self.min_side < 0:
            raise BadInputError(f"laion_pop: min_side must be >= 0, got {self.min_side}")

    def to_dict(self) -> dict[str, object]:
        """The rule as recorded in metadata, the table's settings and the card."""
        return asdict(self)


def filter_columns(params: PopParams) -> tuple[str, ...]:
    """The catalog columns the rule filters on (a null value fails its filter)."""
    return (params.aesthetic_column, "WIDTH", "HEIGHT", "pwatermark", "URL")


def meets(row: Mapping[str, object], params: PopParams) -> list[str]:
    """The filters one laion_pop row fails (empty when it meets them all); written apart from :func:`select`.

    Row-by-row on purpose: the checks recount with this, not with the vectorised query that selected the rows.
    """
    failed = []
    score = row.get(params.aesthetic_column)
    if score is None or not score >= params.min_aesthetic:  # type: ignore[operator]
        failed.append(f"{params.aesthetic_column} {score} < {params.min_aesthetic}")
    width, height = row.get("WIDTH"), row.get("HEIGHT")
    if width is None or height is None or not min(width, height) >= params.min_side:  # type: ignore[type-var]
        failed.append(f"shortest side of {width}x{height} < {params.min_side}")
    mark = row.get("pwatermark")
    if mark is None or not mark < params.max_pwatermark:  # type: ignore[operator]
        failed.append(f"pwatermark {mark} not < {params.max_pwatermark}")
    url = row.get("URL")
    if not isinstance(url, str) or not url.strip():
        failed.append("no URL")
    return failed


def queries(index: ServedIndex, centroids: np.ndarray, params: PopParams) -> np.ndarray:
    """The query of each centroid: guided towards ``rating{guidance_score}`` (when set), unit length."""
    if params.guidance_score is not None and index.ratings is None:
        raise BadInputError(
            "laion_pop: aesthetic guidance asks for bucket embeddings, but none were found for the index "
            "(materialize bucket_embeddings, or set guidance_score to null)"
        )
    return np.stack([guided_query(c, index.ratings, params.guidance_score, params.guidance_weight) for c in centroids])


def candidates(
    index: ServedIndex, centroids: np.ndarray, params: PopParams, batch: int = 256
) -> Iterator[pl.DataFrame]:
    """Per batch of centroids: every (centroid, neighbour) pair with the neighbour's rank, id and exact similarity
    to the (unguided) centroid."""
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != index.dim:
        raise BadInputError(f"laion_pop: centroids are {centroids.shape}, the kNN index is {index.dim}-d")
    q = queries(index, centroids, params)
    k = min(params.neighbours, index.catalog.rows)
    for start in range(0, len(centroids), batch):
        _, ids, vectors = index.search(q[start : start + batch], k)
        exact = np.einsum("nkd,nd->nk", vectors, centroids[start : start + batch])
        n = len(ids)
        yield pl.DataFrame(
            {
                "centroid": np.repeat(np.arange(start, start + n, dtype=np.int32), k),
                "rank": np.tile(np.arange(k, dtype=np.int32), n),
                "id": ids.reshape(-1).astype(np.int64),
                "centroid_similarity": exact.reshape(-1).astype(np.float32),
            }
        ).filter(pl.col("id") >= 0)


def with_catalog(pairs: pl.DataFrame, index: ServedIndex) -> pl.DataFrame:
    """The pairs with their rows' metadata and scores (LAION-5B column names)."""
    unique = pairs["id"].unique().sort().to_numpy()
    meta = index.catalog.frame(unique, CATALOG_COLUMNS).rename(
        {"url": "URL", "caption": "TEXT", "width": "WIDTH", "height": "HEIGHT", "clip_similarity": "similarity"}
    )
    return pairs.join(meta, on="id", how="left")


def filter_steps(params: PopParams) -> list[tuple[str, pl.Expr]]:
    """The filters in order, each named by what the funnel counts it dropping."""
    return [
        ("dropped_by_aesthetic", pl.col(params.aesthetic_column) >= params.min_aesthetic),
        ("dropped_by_size", pl.min_horizontal(pl.col("WIDTH"), pl.col("HEIGHT")) >= params.min_side),
        ("dropped_by_watermark", pl.col("pwatermark") < params.max_pwatermark),
        ("dropped_without_url", pl.col("URL").is_not_null() & (pl.col("URL").str.strip_chars() != "")),
    ]


def filtered(rows: pl.DataFrame, params: PopParams, counts: dict[str, int] | None = None) -> pl.DataFrame:
    """Rows meeting every filter (a null value fails its filter: it cannot be shown to pass); ``counts`` adds up
    what each filter dropped."""
    for name, rule in filter_steps(params):
        before = rows.height
        rows = rows.filter(rule.fill_null(False))
        if counts is not None:
            counts[name] = counts.get(name, 0) + before - rows.height
    return rows


def nearest_per_hash(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per hash: the pair whose centroid is nearest (highest similarity; ties to the lower centroid)."""
    return (
        rows.sort(["hash", "centroid_similarity", "centroid", "id"], descending=[False, True, False, False])
        .unique("hash", keep="first", maintain_order=True)
        .sort(["centroid", "rank"])
    )


def select_counted(index: ServedIndex, centroids: np.ndarray, params: PopParams) -> tuple[pl.DataFrame, dict[str, int]]:
    """The laion_pop rows (see :func:`select`) and the funnel (see :func:`funnel`), from one pass of queries."""
    params.validate()
    kept = []
    counts = {"pairs": 0, **{name: 0 for name, _ in filter_steps(params)}}
    seen = {column: 0 for column in filter_columns(params)}
    for pairs in candidates(index, centroids, params):
        rows = with_catalog(pairs, index)
        counts["pairs"] += rows.height
        for column in seen:
            seen[column] += rows.height - rows[column].null_count()
        kept.append(filtered(rows, params, counts))
    empty = [column for column, n in seen.items() if n == 0]
    if counts["pairs"] and empty:
        # A filter on a column the index never filled drops every row: an empty LAION-POP that looks like a result.
        raise BadInputError(
            f"laion_pop: {', '.join(empty)} is null for all {counts['pairs']} neighbours found, so no row can pass "
            "its filter: the tags lack it (pwatermark: configure the watermark head or LAION's safety table; sizes: "
            "the source's WIDTH/HEIGHT; scores: aesthetic_scores), or pick another aesthetic_column"
        )
    rows = pl.concat(kept, how="diagonal_relaxed") if kept else pl.DataFrame()
    if rows.is_empty():
        return pl.DataFrame(schema=POP_COLUMNS), counts
    return nearest_per_hash(rows).select([pl.col(c).cast(t) for c, t in POP_COLUMNS.items()]), counts


def select(index: ServedIndex, centroids: np.ndarray, params: PopParams) -> pl.DataFrame:
    """The laion_pop rows: each centroid's neighbours, filtered, one per hash (nearest centroid), POP_COLUMNS."""
    return select_counted(index, centroids, params)[0]


def funnel(index: ServedIndex, centroids: np.ndarray, params: PopParams) -> dict[str, int]:
    """How many (centroid, neighbour) pairs there were and how many each filter dropped, in order."""
    return select_counted(index, centroids, params)[1]


def soundness_problems(rows: pl.DataFrame, params: PopParams, k: int, limit: int = 20) -> list[str]:
    """Rows that break the rule (a filter, a repeated hash, a centroid outside 0..k-1), named by hash."""
    problems = []
    for row in rows.iter_rows(named=True):
        failed = meets(row, params)
        if failed:
            problems.append(f"hash {row['hash']} (centroid {row['centroid']}): {'; '.join(failed)}")
        if not 0 <= row["centroid"] < k:
            problems.append(f"hash {row['hash']}: centroid {row['centroid']} outside 0..{k - 1}")
        if len(problems) >= limit:
            break
    repeated = rows.group_by("hash").len().filter(pl.col("len") > 1)
    problems += [f"hash {h} appears {n} times" for h, n in repeated.head(limit).iter_rows()]
    return problems


def completeness_problems(
    index: ServedIndex, centroids: np.ndarray, rows: pl.DataFrame, params: PopParams, sample: np.ndarray
) -> list[str]:
    """For the ``sample`` centroids, recount: every neighbour meeting the filters is in ``rows``, under this
    centroid or one at least as near; named by centroid and hash."""
    by_hash = {h: (c, s) for h, c, s in rows.select("hash", "centroid", "centroid_similarity").iter_rows()}
    problems = []
    q = queries(index, centroids[sample], params)
    k = min(params.neighbours, index.catalog.rows)
    _, ids, vectors = index.search(q, k)
    for i, centroid in enumerate(sample):
        records = index.catalog.records(ids[i][ids[i] >= 0], CATALOG_COLUMNS)
        exact = vectors[i][ids[i] >= 0] @ centroids[centroid]
        for record, similarity in zip(records, exact, strict=True):
            row = {"URL": record.get("url"), "WIDTH": record.get("width"), "HEIGHT": record.get("height"),
                   "pwatermark": record.get("pwatermark"), **{c: record.get(c) for c in AESTHETIC_COLUMNS}}  # fmt: skip
            if meets(row, params):
                continue
            found = by_hash.get(record["hash"])
            if found is None:
                problems.append(f"centroid {centroid}: hash {record['hash']} meets every filter but is missing")
            elif found[0] != centroid and found[1] < similarity - 1e-5:
                problems.append(
                    f"centroid {centroid}: hash {record['hash']} is kept under centroid {found[0]} "
                    f"(similarity {found[1]:.4f}), farther than this one ({similarity:.4f})"
                )
    return problems


PART_ROWS = 10_000  # rows per laion_pop part: one img2dataset shard of pop_images each (its default tar size)
SELECTION_FILE = "selection.json"


def part_files(folder: Path) -> list[Path]:
    """The laion_pop parts of ``folder`` in order; none is an error naming the folder."""
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise MissingUpstreamError(f"{folder}: no laion_pop parts: materialize laion_pop first")
    return files


def write_parts(
    rows: pl.DataFrame, folder: Path, record_name: str, record: Mapping[str, object], part_rows: int
) -> list[Path]:
    """Write ``rows`` as ``part-NNNNN.parquet`` files of ``part_rows`` rows and ``record`` as ``record_name`` (JSON),
    replacing ``folder`` as a whole (no rows still make one empty part, so the schema is there)."""
    if part_rows < 1:
        raise BadInputError(f"laion_pop: part_rows must be at least 1, got {part_rows}")
    with atomic_dir(folder) as tmp:
        for number, start in enumerate(range(0, max(rows.height, 1), part_rows)):
            write_parquet(rows.slice(start, part_rows).to_arrow(), tmp / f"part-{number:05d}.parquet")
        (tmp / record_name).write_text(json.dumps(dict(record), indent=2, sort_keys=True) + "\n")
    return part_files(folder)


def write_selection(
    rows: pl.DataFrame, folder: Path, record: Mapping[str, object], part_rows: int = PART_ROWS
) -> list[Path]:
    """Write the selection's parts and ``selection.json`` (:func:`write_parts`)."""
    return write_parts(rows, folder, SELECTION_FILE, record, part_rows)


def read_selection_record(folder: Path) -> dict:
    """``selection.json`` of a laion_pop folder (the rule and inputs it was selected with)."""
    path = folder / SELECTION_FILE
    if not path.is_file():
        raise MissingUpstreamError(f"{path} is missing: materialize laion_pop first")
    return json.loads(path.read_text())
