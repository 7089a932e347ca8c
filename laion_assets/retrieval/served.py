"""An index folder opened for queries: the faiss index, its catalog and the bucket embeddings for guidance.

``<data_root>/knn/`` holds ``index.json`` (what was built, from what, how well), the faiss files and the catalog
parts. The aesthetic bucket embeddings come from the release asked for, else the data root's ``buckets/``, else
LAION's shipped ViT-L/14 ones (``data/reference/vit_l_14_embeddings``) when the width is 768.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.locations import location
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.retrieval.catalog import Catalog
from laion_assets.retrieval.index_build import IndexInfo, ShardVectors, load_index, read_rows, search_with_vectors
from laion_assets.selection.buckets import N_BUCKETS
from laion_assets.sources.embeddings import open_embeddings

INDEX_JSON = "index.json"
LAION_RATINGS = PROJECT_DIR / "data" / "reference" / "vit_l_14_embeddings"


def read_index_json(folder: Path) -> dict:
    """The index folder's record; a missing or unreadable one is an error naming the folder."""
    path = folder / INDEX_JSON
    if not path.is_file():
        raise MissingUpstreamError(
            f"{folder} holds no kNN index ({INDEX_JSON} is missing): materialize knn_index first "
            "(`dagster asset materialize --select knn_index`)"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: unreadable index record: {exc}") from exc


def load_ratings(folder: Path, dim: int) -> np.ndarray | None:
    """``rating0..9.npy`` of ``folder`` as a (10, d) float32 array, or None when the folder lacks them."""
    paths = [folder / f"rating{k}.npy" for k in range(N_BUCKETS)]
    if not all(p.is_file() for p in paths):
        return None
    ratings = np.concatenate([np.load(p).reshape(1, -1).astype(np.float32) for p in paths])
    if ratings.shape[1] != dim:
        raise BadInputError(f"{folder}: bucket embeddings are {ratings.shape[1]}-d, the index is {dim}-d")
    return ratings


def find_ratings(candidates: list[Path], dim: int) -> tuple[np.ndarray | None, str]:
    """The first folder of ``candidates`` (then LAION's shipped ones) with all ten buckets, and where it was."""
    for folder in [*candidates, LAION_RATINGS]:
        if folder == LAION_RATINGS and dim != 768:
            continue
        ratings = load_ratings(folder, dim)
        if ratings is not None:
            return ratings, str(folder)
    return None, ""


@dataclass
class ServedIndex:
    """One queryable index: ``search`` answers (similarities, ids, embeddings) best first.

    ``shards`` are the embedding files the index was built from (memory-mapped): an IVF-PQ index re-ranks its
    candidates by their exact inner product read from them, and near-duplicates are judged on exact vectors.
    """

    name: str
    index: object  # a faiss.Index
    info: IndexInfo
    shards: list[ShardVectors]
    catalog: Catalog
    ratings: np.ndarray | None = None
    ratings_from: str = ""
    record: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """The embeddings' width."""
        return self.info.dim

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k nearest rows of each (n, d) query with their exact embeddings."""
        k = max(1, min(int(k), self.catalog.rows))
        return search_with_vectors(self.index, self.info, self.shards, np.asarray(queries, dtype=np.float32), k)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The exact float32 embeddings of ``ids`` (any order), read from the shards' files."""
        wanted, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
        return read_rows(self.shards, self.info.shards, wanted)[inverse]


def open_shards(record: dict, info: IndexInfo) -> list[ShardVectors]:
    """The embedding files the index records (``embeddings``), opened; a missing or changed one is an error."""
    files = record.get("embeddings") or {}
    shards = []
    for span in info.shards:
        key = span["key"]
        if key not in files:
            raise BadInputError(f"the index record names no embeddings file for shard {key}: rebuild knn_index")
        try:
            embeddings = open_embeddings(location(files[key]))
        except (OSError, BadInputError) as exc:
            raise MissingUpstreamError(
                f"shard {key}: the index was built from {files[key]}, which cannot be opened ({exc}); the service "
                "reads the embeddings for exact re-ranking: restore the file or rebuild knn_index"
            ) from exc
        if tuple(embeddings.shape) != (span["rows"], info.dim):
            raise BadInputError(
                f"shard {key}: {files[key]} is {tuple(embeddings.shape)}, the index holds "
                f"({span['rows']}, {info.dim}): rebuild knn_index"
            )
        shards.append(ShardVectors(key, embeddings))
    return shards


def open_index(folder: Path, name: str | None = None, ratings_dirs: list[Path] | None = None) -> ServedIndex:
    """Open the index built into ``folder`` (faiss files memory-mapped where on disk) for queries."""
    record = read_index_json(folder)
    info = IndexInfo.from_dict(record["info"])
    index = load_index(folder, info)
    catalog = Catalog(folder, info)
    ratings, ratings_from = find_ratings(ratings_dirs or [], info.dim)
    shards = open_shards(record, info)
    return ServedIndex(name or str(record.get("name", folder.name)), index, info, shards, catalog, ratings,
                       ratings_from, record)  # fmt: skip
