"""Where ``punsafe`` and ``pwatermark`` come from: LAION's provided values, our computed heads, or either.

*Provided* means LAION's own values: the separate safety table when one is configured (joined on hash), else the
metadata's own columns. *Computed* means our heads: ``punsafe`` from the NSFW head in the shard's scores file,
``pwatermark`` from the watermark head in the shard's ``watermark.parquet``. ``provided_else_computed`` (the default)
takes LAION's value where it has one and ours where it does not, so a source LAION tagged keeps LAION's values and
rows LAION never tagged (URLs of one's own) still get tags. Each tags row records where each value came from
(``punsafe_source`` / ``pwatermark_source``: ``provided``, ``computed`` or null when neither has a value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from laion_assets.core.errors import BadInputError

PROVIDED = "provided"
COMPUTED = "computed"
PROVIDED_ELSE_COMPUTED = "provided_else_computed"
SOURCES = (PROVIDED, COMPUTED, PROVIDED_ELSE_COMPUTED)
SAFETY_COLUMNS = ("punsafe", "pwatermark")
DEFAULT_SOURCE = PROVIDED_ELSE_COMPUTED


def source_column(column: str) -> str:
    """The tags column that records where ``column``'s value came from."""
    return f"{column}_source"


@dataclass(frozen=True)
class SafetySources:
    """The configured source of each safety column."""

    punsafe: str = DEFAULT_SOURCE
    pwatermark: str = DEFAULT_SOURCE

    def __post_init__(self) -> None:
        for column, chosen in self.as_dict().items():
            if chosen not in SOURCES:
                raise BadInputError(f"{column} source {chosen!r} is not one of {list(SOURCES)}")

    def as_dict(self) -> dict[str, str]:
        """``{column: source}`` in column order."""
        return {"punsafe": self.punsafe, "pwatermark": self.pwatermark}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, str] | None) -> SafetySources:
        """Read what :meth:`as_dict` wrote (defaults for what is absent: tables built before sources were chosen)."""
        return cls(**{c: str(v) for c, v in (mapping or {}).items() if c in SAFETY_COLUMNS})


def choose(column: str, provided: pl.Series, computed: pl.Series | None, source: str) -> tuple[pl.Series, pl.Series]:
    """The values of a safety column and where each came from (``provided``, ``computed`` or null).

    ``provided`` holds LAION's values (null where LAION has none), ``computed`` our head's (None when no head
    scored the shard). Values are float32; a NaN counts as no value.
    """
    rows = provided.len()
    given = provided.cast(pl.Float32).fill_nan(None)
    ours = (
        computed.cast(pl.Float32).fill_nan(None)
        if computed is not None
        else pl.Series(column, [None] * rows, dtype=pl.Float32)
    )
    if ours.len() != rows:
        raise ValueError(f"{column}: {ours.len()} computed values for {rows} rows")
    frame = pl.DataFrame({"p": given, "c": ours})
    if source == PROVIDED:
        value, origin = pl.col("p"), pl.when(pl.col("p").is_not_null()).then(pl.lit(PROVIDED))
    elif source == COMPUTED:
        value, origin = pl.col("c"), pl.when(pl.col("c").is_not_null()).then(pl.lit(COMPUTED))
    elif source == PROVIDED_ELSE_COMPUTED:
        value = pl.coalesce(pl.col("p"), pl.col("c"))
        origin = (
            pl.when(pl.col("p").is_not_null())
            .then(pl.lit(PROVIDED))
            .when(pl.col("c").is_not_null())
            .then(pl.lit(COMPUTED))
        )
    else:
        raise BadInputError(f"{column} source {source!r} is not one of {list(SOURCES)}")
    origin = origin.otherwise(pl.lit(None, dtype=pl.String)).alias(source_column(column))
    out = frame.select(value.alias(column), origin)
    return out[column], out[source_column(column)]


def origin_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Rows per origin of each safety column in a tags frame: ``{"punsafe/provided": n, "punsafe/computed": m, …}``."""
    counts: dict[str, int] = {}
    for column in SAFETY_COLUMNS:
        origins = frame[source_column(column)]
        for origin in (PROVIDED, COMPUTED):
            counts[f"{column}/{origin}"] = int((origins == origin).sum())
    return counts
