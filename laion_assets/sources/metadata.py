"""Reading a part's metadata into LAION's release columns, with the sample key added.

One declared mapping, :data:`COLUMN_SOURCES`, takes LAION's own columns as released (``URL``, ``TEXT``, …) or
clip-retrieval / img2dataset's lowercase ones (``url``, ``caption``, ``original_width``, …). For each LAION
column the first source column present wins, unless it is null on every row while a later one has values.
``hash`` is always recomputed from url + caption as LAION did.
"""

from __future__ import annotations

import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, location, parquet_columns, read_parquet
from laion_assets.sources.hashing import laion_hashes_of
from laion_assets.sources.schemas import METADATA_COLUMNS, OPTIONAL_METADATA_COLUMNS

# The V2 subsets were cut from laion2B-en: with a LANGUAGE column, only these rows count.
ENGLISH = "en"

# LAION column <- candidate source columns, in priority order. img2dataset's `width`/`height` are the sizes
# after its resize; LAION's WIDTH/HEIGHT are the original image's, hence `original_*` first.
COLUMN_SOURCES: dict[str, tuple[str, ...]] = {
    "URL": ("URL", "url"),
    "TEXT": ("TEXT", "caption", "text"),
    "WIDTH": ("WIDTH", "original_width", "width"),
    "HEIGHT": ("HEIGHT", "original_height", "height"),
    "similarity": ("similarity",),
    "punsafe": ("punsafe",),
    "pwatermark": ("pwatermark",),
    "LANGUAGE": ("LANGUAGE", "language"),
}
# Columns a part must provide; the safety columns may instead come from a separate safety table.
REQUIRED = ("URL", "TEXT", "WIDTH", "HEIGHT", "similarity")
SAFETY = ("punsafe", "pwatermark")


def column_mapping(columns: list[str], path: Location | str) -> dict[str, str]:
    """Map LAION columns to the source columns that provide them; raises naming the file when one is unmappable."""
    mapping = {}
    for target, candidates in COLUMN_SOURCES.items():
        found = next((c for c in candidates if c in columns), None)
        if found is not None:
            mapping[target] = found
    missing = [c for c in REQUIRED if c not in mapping]
    if missing:
        wanted = "; ".join(f"{c} <- one of {list(COLUMN_SOURCES[c])}" for c in missing)
        raise BadInputError(f"{path}: missing column(s) {missing}: cannot map {wanted} (columns present: {columns})")
    return mapping


def read_metadata(path: Location | str, swap_width_height: bool = False, language: str = ENGLISH) -> pl.DataFrame:
    """Read a metadata parquet into LAION's columns and types and add the int64 ``hash`` column.

    Absent safety columns become nulls. A part without a language column, or whose language column is null on
    every row, takes the source's declared ``language`` (laion2B-en carries none: its rows are English by
    source); with a real language column a null stays null ("unknown", never English). ``language=""`` declares
    nothing. ``swap_width_height`` undoes raw LAION-5B metadata's swapped WIDTH/HEIGHT (LAION swapped them back
    when joining). A null caption hashes as "" (as LAION did) and is kept.
    """
    path = location(path) if isinstance(path, str) else path
    try:
        frame = read_parquet(path)
    except Exception as exc:  # polars/pyarrow raise several types for unreadable files
        raise BadInputError(f"{path}: cannot read parquet: {exc}") from exc
    mapping = _filled_mapping(frame, column_mapping(frame.columns, path))
    types = {**METADATA_COLUMNS, **OPTIONAL_METADATA_COLUMNS}
    try:
        frame = frame.select(
            [
                pl.col(mapping[name]).cast(dtype).alias(name) if name in mapping else pl.lit(None, dtype).alias(name)
                for name, dtype in types.items()
            ]
        )
    except pl.exceptions.PolarsError as exc:
        raise BadInputError(f"{path}: a column has the wrong type: {exc}") from exc
    if language_declared(frame) and language:
        frame = frame.with_columns(pl.lit(language, pl.String).alias("LANGUAGE"))
    if swap_width_height:
        frame = frame.with_columns(pl.col("HEIGHT").alias("WIDTH"), pl.col("WIDTH").alias("HEIGHT"))
    hashes = laion_hashes_of(frame["URL"], frame["TEXT"])
    return frame.with_columns(pl.Series("hash", hashes, dtype=pl.Int64))


def _filled_mapping(frame: pl.DataFrame, mapping: dict[str, str]) -> dict[str, str]:
    """e.g. an all-null URL beside a filled url: take the filled one."""
    for target in [t for t in COLUMN_SOURCES if t in mapping]:
        present = [c for c in COLUMN_SOURCES[target] if c in frame.columns]
        if len(present) > 1 and frame[mapping[target]].null_count() == frame.height:
            mapping[target] = next((c for c in present if frame[c].null_count() < frame.height), mapping[target])
    return mapping


def read_hashes(path: Location | str) -> pl.Series:
    """The ``hash`` column :func:`read_metadata` computes (same mapping, same values), reading only the url and
    caption columns: what a part's scores need, for about a third of the cost on LAION's metadata."""
    path = location(path) if isinstance(path, str) else path
    try:
        columns = parquet_columns(path)
        mapping = column_mapping(columns, path)  # a part the asset would refuse is refused here too
        wanted = [c for target in ("URL", "TEXT") for c in COLUMN_SOURCES[target] if c in columns]
        frame = read_parquet(path, columns=wanted)
    except BadInputError:
        raise
    except Exception as exc:  # polars/pyarrow raise several types for unreadable files
        raise BadInputError(f"{path}: cannot read parquet: {exc}") from exc
    mapping = _filled_mapping(frame, {t: mapping[t] for t in ("URL", "TEXT")})
    try:
        urls, texts = (frame[mapping[t]].cast(METADATA_COLUMNS[t]) for t in ("URL", "TEXT"))
    except pl.exceptions.PolarsError as exc:
        raise BadInputError(f"{path}: a column has the wrong type: {exc}") from exc
    return pl.Series("hash", laion_hashes_of(urls, texts), dtype=pl.Int64)


def language_declared(frame: pl.DataFrame) -> bool:
    """True when a part's LANGUAGE carries nothing (absent or null on every row), so the source's language applies."""
    return frame.height == 0 or frame["LANGUAGE"].null_count() == frame.height


def missing_url(column: str = "URL") -> pl.Expr:
    """Rows whose URL is null or blank: img2dataset cannot fetch them, so no published subset carries them."""
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
