"""Reading a part's metadata parquet into LAION's column types, with the sample key added."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from laion_assets.errors import BadInputError
from laion_assets.hashing import laion_hashes
from laion_assets.schemas import METADATA_COLUMNS, OPTIONAL_METADATA_COLUMNS


def read_metadata(path: str | Path) -> pl.DataFrame:
    """Read a metadata parquet, check and cast LAION's columns, and add the int64 ``hash`` column."""
    path = Path(path)
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for unreadable files
        raise BadInputError(f"{path}: cannot read parquet: {exc}") from exc
    missing = [c for c in METADATA_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; a metadata part needs {list(METADATA_COLUMNS)}")
    columns = dict(METADATA_COLUMNS)
    columns.update({c: t for c, t in OPTIONAL_METADATA_COLUMNS.items() if c in frame.columns})
    try:
        frame = frame.select([pl.col(c).cast(t) for c, t in columns.items()])
    except pl.exceptions.PolarsError as exc:
        raise BadInputError(f"{path}: a column has the wrong type: {exc}") from exc
    if "LANGUAGE" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("LANGUAGE"))
    hashes = laion_hashes(frame["URL"].to_list(), frame["TEXT"].to_list())
    return frame.with_columns(pl.Series("hash", hashes, dtype=pl.Int64))
