"""What a kNN id stands for: (shard, row) -> hash -> the row's metadata and scores, memory-mapped.

An index folder holds one Arrow IPC file per shard (``metadata/part-<key>.arrow``, uncompressed, so it is
memory-mapped and a lookup reads only the rows asked for, like clip-retrieval's arrow metadata provider). Its rows
are row-aligned with the shard's embeddings, so id ``first_id + row`` is row ``row`` of the shard's file. Column
names follow clip-retrieval's defaults (lowercase ``url`` and ``caption``), so its front end shows them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError
from laion_assets.retrieval.index_build import IndexInfo

METADATA_DIR = "metadata"
# tags column -> catalog column: clip-retrieval's lowercase names for url/caption/size, LAION's for the scores.
CATALOG_COLUMNS: dict[str, str] = {
    "URL": "url",
    "TEXT": "caption",
    "WIDTH": "width",
    "HEIGHT": "height",
    "hash": "hash",
    "similarity": "clip_similarity",  # LAION's caption-image similarity; "similarity" is the query's in responses
    "aesthetic": "aesthetic",
    "AESTHETIC_SCORE": "AESTHETIC_SCORE",
    "punsafe": "punsafe",
    "pwatermark": "pwatermark",
}


def part_name(key: str) -> str:
    """File name of one shard's catalog part inside the index folder."""
    return f"{METADATA_DIR}/part-{key}.arrow"


def catalog_frame(tags: pl.DataFrame, key: str) -> pl.DataFrame:
    """The catalog columns of one shard's tags rows (row order kept); errors name the shard and missing columns."""
    missing = [c for c in ("URL", "TEXT", "hash") if c not in tags.columns]
    if missing:
        raise BadInputError(f"shard {key}: tags lack column(s) {missing} needed by the kNN catalog")
    present = {src: dst for src, dst in CATALOG_COLUMNS.items() if src in tags.columns}
    return tags.select([pl.col(src).alias(dst) for src, dst in present.items()])


def write_part(folder: Path, key: str, frame: pl.DataFrame) -> Path:
    """Write one shard's catalog part below ``folder`` (temp file + rename)."""
    path = folder / part_name(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame.to_arrow()
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing score reads as null
    return value


class Catalog:
    """The metadata of every indexed row, looked up by id (``IndexInfo.locate``: an id outside the index is a
    BadInputError naming it); parts are memory-mapped, read only where asked."""

    def __init__(self, folder: Path, info: IndexInfo) -> None:
        self.folder = folder
        self.info = info
        self._tables: dict[str, pa.Table] = {}
        for shard in info.shards:
            key, rows = str(shard["key"]), int(shard["rows"])
            path = folder / part_name(key)
            if not path.is_file():
                raise BadInputError(f"{path}: the catalog part of shard {key} is missing (rebuild knn_index)")
            table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            if table.num_rows != rows:
                raise BadInputError(f"{path}: {table.num_rows} rows, but the index holds {rows} for the shard")
            self._tables[key] = table
        self.columns: list[str] = next(iter(self._tables.values())).column_names if self._tables else []

    @property
    def rows(self) -> int:
        """How many ids the catalog covers."""
        return self.info.rows

    def records(self, ids: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None) -> list[dict[str, object]]:
        """One dict per id with the catalog columns (all, or ``columns``), in the order of ``ids``."""
        wanted = list(columns) if columns is not None else self.columns
        out = []
        for key, row in self.info.locate(np.asarray(ids, dtype=np.int64)):
            table = self._tables[key]
            names = [c for c in wanted if c in table.column_names]
            record = table.select(names).slice(row, 1).to_pylist()[0]
            out.append({k: _json_value(v) for k, v in record.items()})
        return out

    def column(self, name: str, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """One numeric column's values for ``ids`` as float64 (NaN where null or absent)."""
        values = [r.get(name) for r in self.records(ids, [name])]
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    def frame(self, ids: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pl.DataFrame:
        """The catalog ``columns`` of many ``ids`` at once (one take per shard), in the order of ``ids``, plus ``id``.

        A column a shard's part lacks (e.g. ``pwatermark`` in a release without it) comes back null.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        located = self.info.locate(ids)
        keys = np.array([k for k, _ in located], dtype=object)
        rows = np.array([r for _, r in located], dtype=np.int64)
        pieces = []
        for key in dict.fromkeys(keys.tolist()):
            mine = np.flatnonzero(keys == key)
            table = self._tables[key]
            taken = pl.from_arrow(table.select([c for c in columns if c in table.column_names]).take(rows[mine]))
            assert isinstance(taken, pl.DataFrame)
            absent = [pl.lit(None).alias(c) for c in columns if c not in taken.columns]
            pieces.append(taken.with_columns(absent).select(columns).with_columns(pl.Series("id", ids[mine])))
        if not pieces:
            return pl.DataFrame({"id": pl.Series([], dtype=pl.Int64)})
        order = pl.DataFrame({"id": ids, "_order": np.arange(len(ids))})
        joined = pl.concat(pieces, how="diagonal_relaxed").unique("id", keep="first")
        return order.join(joined, on="id", how="left").sort("_order").drop("_order")
