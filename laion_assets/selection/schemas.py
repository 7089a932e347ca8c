"""Column contracts of LAION's derived tables: aesthetic tags, the V2 subsets and laion-art."""

from __future__ import annotations

import polars as pl

from laion_assets.sources.schemas import METADATA_COLUMNS

SCORE_COLUMNS: dict[str, pl.DataType] = {
    "hash": pl.Int64(),
    "aesthetic": pl.Float32(),  # V1 (sa_0_4_vit_l_14_linear)
    "AESTHETIC_SCORE": pl.Float32(),  # V2 (sac+logos+ava1-l14-linearMSE)
}

# LAION's aesthetic-tags table: metadata joined with the hash and both scores, row-aligned per shard, then where each
# row's punsafe and pwatermark came from ("provided" by LAION, "computed" by our heads, or null: see safety_columns).
TAGS_COLUMNS: dict[str, pl.DataType] = {
    **METADATA_COLUMNS,
    "LANGUAGE": pl.String(),
    **SCORE_COLUMNS,
    "punsafe_source": pl.String(),
    "pwatermark_source": pl.String(),
}

# improved_aesthetics_{t}plus as released on the Hub (V2 predictor).
V2_SUBSET_COLUMNS: dict[str, pl.DataType] = {
    **METADATA_COLUMNS,  # URL, TEXT, WIDTH, HEIGHT, similarity, punsafe, pwatermark: the release's own order
    "AESTHETIC_SCORE": pl.Float32(),
    "hash": pl.Int64(),
}

# laion-art (and laion-aesthetic, V1 predictor), in LAION's column order.
V1_SUBSET_COLUMNS: dict[str, pl.DataType] = {
    "URL": pl.String(),
    "TEXT": pl.String(),
    "WIDTH": pl.Float64(),
    "HEIGHT": pl.Float64(),
    "similarity": pl.Float64(),
    "LANGUAGE": pl.String(),
    "hash": pl.Int64(),
    "pwatermark": pl.Float32(),
    "punsafe": pl.Float32(),
    "aesthetic": pl.Float32(),
}


def schema_mismatches(actual: pl.Schema | dict, expected: dict[str, pl.DataType]) -> list[str]:
    """List how ``actual`` differs from ``expected`` (names, order and types); empty when equal."""
    actual = dict(actual)
    problems = []
    if list(actual) != list(expected):
        problems.append(f"columns {list(actual)} != expected {list(expected)}")
    for name, dtype in expected.items():
        if name in actual and actual[name] != dtype:
            problems.append(f"column {name!r} is {actual[name]}, expected {dtype}")
    return problems
