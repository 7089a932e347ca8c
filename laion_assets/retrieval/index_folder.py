"""One kNN index folder from the shards' embeddings and tags: the faiss files, the catalog, ``index.json``.

The folder is written to a temporary sibling and renamed into place whole, so a query never sees half an index.
Each shard's tags part is row-aligned with its embeddings (``aesthetic_tags`` checks it), so the catalog part of a
shard is its tags rows in order and id ``first_id + row`` names the same row in both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from laion_assets.core.atomic import atomic_dir
from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location
from laion_assets.retrieval.catalog import CATALOG_COLUMNS, catalog_frame, write_part
from laion_assets.retrieval.index_build import IndexInfo, IndexParams, ShardVectors, build_index
from laion_assets.retrieval.served import INDEX_JSON
from laion_assets.sources.embeddings import open_embeddings

# 2: the record names the embedding files (the service re-ranks on them); an index of another format is rebuilt.
FORMAT = 2


@dataclass(frozen=True)
class IndexedShard:
    """One shard to index: its embeddings file and its (row-aligned) tags part."""

    key: str
    embeddings: Location
    tags: Path


def build_index_folder(
    target: Path,
    shards: Sequence[IndexedShard],
    params: IndexParams,
    name: str,
    built_from: Mapping[str, object],
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Build the index over ``shards`` (in order) into ``target``; returns the record written as ``index.json``."""
    if not shards:
        raise BadInputError("knn_index: no shard to index (register and materialize shards first)")
    with atomic_dir(target) as tmp:
        vectors = []
        for shard in shards:
            embeddings = open_embeddings(shard.embeddings)
            columns = [c for c in pl.read_parquet_schema(shard.tags) if c in CATALOG_COLUMNS]
            frame = catalog_frame(pl.read_parquet(shard.tags, columns=columns), shard.key)
            if frame.height != embeddings.shape[0]:
                raise BadInputError(
                    f"shard {shard.key}: {shard.embeddings} has {embeddings.shape[0]} rows but its tags part "
                    f"{shard.tags} has {frame.height}; re-materialize aesthetic_tags"
                )
            write_part(tmp, shard.key, frame)
            vectors.append(ShardVectors(shard.key, embeddings))
        info = build_index(vectors, tmp, params, progress)
        record = {
            "format": FORMAT,
            "name": name,
            "info": info.to_dict(),
            "built_from": dict(built_from),
            # read back by the service: IVF-PQ re-ranks candidates on these exact vectors
            "embeddings": {shard.key: str(shard.embeddings) for shard in shards},
        }
        (tmp / INDEX_JSON).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def read_info(record: Mapping) -> IndexInfo:
    """The build's :class:`IndexInfo` from an ``index.json`` record."""
    return IndexInfo.from_dict(record["info"])
