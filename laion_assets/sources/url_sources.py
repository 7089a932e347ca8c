"""URL sources: numbered parquet/CSV shards of LAION metadata (``URL, TEXT`` and optional LAION columns).

A folder of URL shards maps to shard partitions by the number at the end of each file name
(``part-00003.parquet``, ``3.csv``), the same keys (``layout.part_key``) that stored embeddings use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.locations import Location, is_local, location, open_binary
from laion_assets.sources.layout import part_key
from laion_assets.sources.schemas import METADATA_COLUMNS, OPTIONAL_METADATA_COLUMNS

_URL_SHARD = re.compile(r"^(?!\.)(?:.*?)(\d+)\.(parquet|csv)$")
REQUIRED_COLUMNS = ("URL", "TEXT")
# img2dataset keeps these names for its own per-sample fields; a source column with one of them would be lost.
RESERVED_COLUMNS = frozenset(
    {"key", "caption", "url", "width", "height", "original_width", "original_height", "status", "error_message"}
    | {"exif", "md5", "sha256", "sha512"}
)
ROW_COLUMN = "laion_row"


@dataclass(frozen=True)
class UrlShard:
    """One URL shard file and its number."""

    number: int
    path: Location

    @property
    def key(self) -> str:
        """The partition key of this shard."""
        return part_key(self.number)


def is_url_folder(folder: str | Location) -> bool:
    """True when ``folder`` (a local path or fsspec URL) holds numbered URL shards rather than clip-retrieval parts."""
    folder = location(folder) if isinstance(folder, str) else folder
    if not folder.is_dir() or (folder / "img_emb").is_dir():
        return False
    return any(_URL_SHARD.match(p.name) for p in folder.iterdir() if p.is_file())


def discover_url_shards(folder: str | Location) -> list[UrlShard]:
    """List the numbered parquet/CSV URL shards of ``folder`` (a local path or fsspec URL) in numeric order."""
    folder = location(folder) if isinstance(folder, str) else folder
    if not folder.is_dir():
        raise MissingUpstreamError(f"{folder}: URL source folder not found; point `storage.urls` at a folder of shards")
    found: dict[int, Location] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        match = _URL_SHARD.match(path.name)
        if match is None or not path.is_file():
            continue
        number = int(match.group(1))
        if number in found:
            raise BadInputError(f"{path}: URL shard {number} also stored as {found[number].name}")
        found[number] = path
    if not found:
        raise BadInputError(f"{folder}: no numbered URL shards (e.g. part-00000.parquet or 00000.csv) found")
    return [UrlShard(n, found[n]) for n in sorted(found)]


def find_url_shard(folder: str | Location, key: str) -> UrlShard:
    """Return the URL shard whose partition key is ``key``; the error names the folder when it is absent."""
    for shard in discover_url_shards(folder):
        if shard.key == key:
            return shard
    raise MissingUpstreamError(f"{folder}: no URL shard with key {key!r} (is the shard still registered?)")


def read_url_shard(path: str | Location, swap_width_height: bool = False) -> pl.DataFrame:
    """Read a URL shard, cast LAION's columns, optionally swap WIDTH/HEIGHT, and number its rows (``laion_row``).

    Raw LAION-5B metadata has WIDTH and HEIGHT swapped; ``swap_width_height=True`` swaps them back, as LAION
    did when joining.
    """
    path = location(path) if isinstance(path, str) else path
    try:
        if is_local(path):
            source = path
        else:
            with open_binary(path) as f:
                source = f.read()
        frame = pl.read_csv(source, infer_schema_length=10000) if path.suffix == ".csv" else pl.read_parquet(source)
    except Exception as exc:  # polars raises several types for unreadable files
        raise BadInputError(f"{path}: cannot read URL shard: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; a URL shard needs {list(REQUIRED_COLUMNS)}")
    clash = sorted(RESERVED_COLUMNS.intersection(frame.columns) | ({ROW_COLUMN} & set(frame.columns)))
    if clash:
        raise BadInputError(f"{path}: column(s) {clash} clash with img2dataset's own fields; rename them")
    known = {**METADATA_COLUMNS, **OPTIONAL_METADATA_COLUMNS}
    try:
        frame = frame.with_columns([pl.col(c).cast(t) for c, t in known.items() if c in frame.columns])
    except pl.exceptions.PolarsError as exc:
        raise BadInputError(f"{path}: a LAION column has the wrong type: {exc}") from exc
    if swap_width_height:
        if "WIDTH" not in frame.columns or "HEIGHT" not in frame.columns:
            raise BadInputError(f"{path}: swap_width_height is set but WIDTH and HEIGHT are not both present")
        frame = frame.with_columns(pl.col("HEIGHT").alias("WIDTH"), pl.col("WIDTH").alias("HEIGHT"))
    bad = frame["URL"].is_null() | (frame["URL"].str.strip_chars() == "")
    if bad.any():
        raise BadInputError(f"{path}: row {int(bad.arg_true()[0])} has an empty URL")
    return frame.with_row_index(ROW_COLUMN).with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
