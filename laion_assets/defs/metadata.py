"""What the assets show in the UI: owners and tags, column schemas and table previews, rounded floats.

Every asset carries :data:`OWNERS` and :func:`asset_tags` (its stage package and the kind of data it holds). An
asset that writes a table publishes ``dagster/column_schema`` and a small ``preview`` (:func:`table_metadata`),
read from the written file's footer and first rows only. Every metadata dict goes through :func:`rounded` before it
reaches Dagster, so the UI shows ``0.3`` and ``6.5321``, never ``0.30000000000000004``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from laion_assets.selection.thresholds import V1_SUBSETS

# One owner for every asset (Dagster takes "team:<name>" or an e-mail address); README "Asset metadata" says so.
OWNERS = ["team:laion-assets"]
# The stage packages of laion_assets/defs/, in the order of LAION's chain; an asset's `stage` tag is one of them.
STAGES = ("sources", "images", "scoring", "selection", "release", "retrieval", "pop")

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80  # URLs and captions are cut here (with "…"), so a preview stays one line per row
DIGITS = 4
JS_SAFE_INT = 2**53 - 1

_laion_aesthetic, _laion_art = (rule.threshold for rule in V1_SUBSETS)
V1_RANGE = (
    "V1 (`aesthetic`, LAION's sa_0_4_vit_l_14_linear) is an unbounded linear head on the CLIP embedding: scores "
    "below 0 and above 10 are normal, not errors. LAION cut laion-aesthetic at V1 > "
    f"{_laion_aesthetic:g} and laion-art at V1 > {_laion_art:g}."
)

# What each of LAION's columns holds, shown beside its type in the column schema.
COLUMN_DESCRIPTIONS = {
    "URL": "image URL",
    "TEXT": "caption (alt text)",
    "WIDTH": "original image width in pixels",
    "HEIGHT": "original image height in pixels",
    "similarity": "cosine similarity of the CLIP image and caption embeddings",
    "punsafe": "probability the image is unsafe (LAION's NSFW detector)",
    "pwatermark": "probability the image carries a watermark (LAION's watermark detector)",
    "LANGUAGE": "caption language",
    "hash": "LAION's hash: mmh3.hash64(URL + TEXT)[0], signed int64",
    "aesthetic": "V1 score (linear head; unbounded, below 0 and above 10 are normal)",
    "AESTHETIC_SCORE": "V2 score (LAION's MLP, sac+logos+ava1-l14-linearMSE)",
    "key": "row number of the shard, zero-padded (img2dataset's key)",
    "caption": "caption as img2dataset read it",
}


def asset_tags(stage: str, data: str, **extra: str) -> dict[str, str]:
    """The tags of an asset: the stage package that wires it and the kind of data it holds."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    return {"stage": stage, "data": data, **extra}


def round_float(value: float, digits: int = DIGITS) -> float:
    """``value`` rounded for display: ``digits`` decimals, or ``digits`` significant digits when |value| < 1."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    magnitude = math.floor(math.log10(abs(value)))
    # Small values (an MSE of 0.000123456) keep their significant digits instead of rounding to 0.
    return round(value, digits if magnitude >= 0 else digits - 1 - magnitude)


def _round_json(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, float | np.floating):
        return round_float(value)
    if isinstance(value, Mapping):
        return {k: _round_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_json(v) for v in value]
    return value


def rounded(metadata: Mapping[str, object]) -> dict[str, object]:
    """``metadata`` with every float (plain, ``MetadataValue.float`` or inside ``MetadataValue.json``) rounded."""
    out: dict[str, object] = {}
    for key, value in metadata.items():
        if isinstance(value, dg.FloatMetadataValue) and value.value is not None:
            value = dg.MetadataValue.float(round_float(value.value))
        elif isinstance(value, dg.JsonMetadataValue):
            value = dg.MetadataValue.json(_round_json(value.data))
        elif not isinstance(value, bool) and isinstance(value, float | np.floating):
            value = round_float(value)
        out[key] = value
    return out


def column_schema(schema: Mapping[str, pl.DataType]) -> dg.TableSchema:
    """A Dagster table schema from a polars schema: each column's name, polars type and what it holds."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
            for name, dtype in schema.items()
        ]
    )


def _cell(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # The UI is JavaScript: an int64 hash past 2**53 would show as a nearby wrong number, so it shows as text.
        return value if abs(value) <= JS_SAFE_INT else str(value)
    if isinstance(value, float):
        return round_float(value)
    text = str(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def preview_table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """The rows of a (small) frame as a Dagster table: floats rounded, long strings cut."""
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in frame.iter_rows(named=True)]
    return dg.MetadataValue.table(records, column_schema(frame.schema))


def frame_metadata(frame: pl.DataFrame, schema: Mapping[str, pl.DataType] | None = None) -> dict[str, object]:
    """``dagster/column_schema`` (``schema``, else the frame's) and a ``preview`` of the frame's first rows."""
    return {
        "dagster/column_schema": column_schema(frame.schema if schema is None else schema),
        "preview": preview_table(frame.head(PREVIEW_ROWS)),
    }


def table_metadata(path: Path) -> dict[str, object]:
    """``dagster/column_schema`` from a written parquet file's footer and a ``preview`` of its first rows."""
    # Only the footer and the first row group(s) are read: a subset of a billion rows previews as fast as the sample.
    schema = pl.read_parquet_schema(path)
    return frame_metadata(pl.scan_parquet(path).head(PREVIEW_ROWS).collect(), schema)
