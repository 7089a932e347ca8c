"""Column contract of the metadata LAION released beside each embedding part."""

from __future__ import annotations

import polars as pl

# Metadata columns a stored part must carry (beside its embeddings), with the types LAION released them in.
METADATA_COLUMNS: dict[str, pl.DataType] = {
    "URL": pl.String(),
    "TEXT": pl.String(),
    "WIDTH": pl.Float64(),
    "HEIGHT": pl.Float64(),
    "similarity": pl.Float64(),
    "punsafe": pl.Float32(),
    "pwatermark": pl.Float32(),
}
# LANGUAGE is optional: laion2B-en has none; laion2B-multi and laion1B-nolang carry it.
OPTIONAL_METADATA_COLUMNS: dict[str, pl.DataType] = {"LANGUAGE": pl.String()}
