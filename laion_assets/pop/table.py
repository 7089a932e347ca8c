"""The released LAION-POP table: the selected rows that have an image and a caption, with the Hub's column names.

The ``laion/laion-pop`` card on the Hub is disabled; public loaders of that dataset read ``url``,
``llava_caption``, ``cogvlm_caption`` (added later, Dec 2023), ``width``, ``height`` and ``nsfw_prediction``, so
those names are kept. ``alt_text`` for the original caption is our best reading; ``aesthetic_score``,
``similarity``, ``hash``, ``pwatermark``, ``centroid``, ``centroid_similarity`` and ``key`` are ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.pop.selection import write_parts

SETTINGS_FILE = "settings.json"
FORMAT = 1
TABLE_COLUMNS: dict[str, pl.DataType] = {
    "url": pl.String(),
    "alt_text": pl.String(),
    "llava_caption": pl.String(),
    "width": pl.Int64(),
    "height": pl.Int64(),
    "nsfw_prediction": pl.Float32(),
    "aesthetic_score": pl.Float32(),
    "similarity": pl.Float64(),
    "hash": pl.Int64(),
    "pwatermark": pl.Float32(),
    "centroid": pl.Int32(),
    "centroid_similarity": pl.Float32(),
    "key": pl.String(),
}


def release_table(selection: pl.DataFrame, captions: pl.DataFrame, aesthetic_column: str) -> pl.DataFrame:
    """Join the selection with its captions (by hash): only captioned rows, in selection order, TABLE_COLUMNS."""
    if captions["hash"].n_unique() != captions.height:
        raise BadInputError("pop_captions: a hash has two captions (two images of one selected row)")
    joined = selection.join(captions.select("hash", "key", "llava_caption"), on="hash", how="inner",
                            maintain_order="left")  # fmt: skip
    return joined.select(
        pl.col("URL").alias("url"),
        pl.col("TEXT").alias("alt_text"),
        pl.col("llava_caption"),
        pl.col("WIDTH").round().cast(pl.Int64).alias("width"),
        pl.col("HEIGHT").round().cast(pl.Int64).alias("height"),
        pl.col("punsafe").alias("nsfw_prediction"),
        pl.col(aesthetic_column).alias("aesthetic_score"),
        pl.col("similarity"),
        pl.col("hash"),
        pl.col("pwatermark"),
        pl.col("centroid"),
        pl.col("centroid_similarity"),
        pl.col("key"),
    ).select([pl.col(c).cast(t) for c, t in TABLE_COLUMNS.items()])


def write_table(table: pl.DataFrame, folder: Path, settings: Mapping[str, object], part_rows: int) -> list[Path]:
    """Write ``part-NNNNN.parquet`` files and ``settings.json`` (with ``rows``), replacing ``folder`` as a whole."""
    return write_parts(table, folder, SETTINGS_FILE, {"format": FORMAT, **settings, "rows": table.height}, part_rows)


def table_problems(
    table: pl.DataFrame, selection_hashes: Sequence[int], trim_prefix: str, limit: int = 20
) -> list[str]:
    """What is wrong with a released table: rows not in the selection, empty captions, an untrimmed prefix."""
    problems = []
    known = set(selection_hashes)
    stray = [h for h in table["hash"].to_list() if h not in known]
    if stray:
        problems.append(f"{len(stray)} row(s) are not in laion_pop, e.g. hash {stray[0]}")
    empty = table.filter(pl.col("llava_caption").is_null() | (pl.col("llava_caption").str.strip_chars() == ""))
    if empty.height:
        problems.append(f"{empty.height} row(s) have no caption, e.g. hash {empty['hash'][0]}")
    if trim_prefix:
        untrimmed = table.filter(pl.col("llava_caption").str.to_lowercase().str.starts_with(trim_prefix.lower()))
        if untrimmed.height:
            problems.append(f"{untrimmed.height} caption(s) still start with {trim_prefix!r}")
    if table["hash"].n_unique() != table.height:
        problems.append("a hash appears twice")
    return problems[:limit]
