"""The kNN index (first version: exact inner-product search only; IVF-PQ and the recall measurement follow)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

INDEX_FILE = "image.index"


@dataclass(frozen=True)
class IndexParams:
    """How to build the index."""

    kind: str = "auto"
    exact_max_rows: int = 200_000
    nlist: int = 0
    pq_m: int = 0
    nbits: int = 8
    nprobe: int = 0
    train_rows: int = 0
    seed: int = 0
    recall_queries: int = 200


@dataclass(frozen=True)
class ShardVectors:
    """One shard's embeddings (row-sliceable, 2-D)."""

    key: str
    embeddings: object


@dataclass(frozen=True)
class IndexInfo:
    """What was built."""

    kind: str
    rows: int
    dim: int
    params: dict
    recall_at_10: float
    recall_queries: int
    build_cpu_seconds: float
    build_wall_seconds: float
    shards: list[dict]
    files: list[str]

    def to_dict(self) -> dict:
        """As JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexInfo:
        """From :meth:`to_dict`'s output."""
        return cls(**data)


def build_index(
    shards: Sequence[ShardVectors],
    folder: Path,
    params: IndexParams = IndexParams(),
    progress: Callable[[str], None] | None = None,
) -> IndexInfo:
    """Build an exact index over ``shards`` into ``folder``."""
    dim = int(shards[0].embeddings.shape[1])
    index = faiss.IndexFlatIP(dim)
    spans, n = [], 0
    for shard in shards:
        rows = int(shard.embeddings.shape[0])
        index.add(np.asarray(shard.embeddings[0:rows], dtype=np.float32))
        spans.append({"key": shard.key, "first_id": n, "rows": rows})
        n += rows
    faiss.write_index(index, str(Path(folder) / INDEX_FILE))
    return IndexInfo("flat", n, dim, {}, 1.0, 0, 0.0, 0.0, spans, [INDEX_FILE])


def load_index(folder: Path, info: IndexInfo) -> faiss.Index:
    """Read the index written by :func:`build_index`."""
    return faiss.read_index(str(Path(folder) / INDEX_FILE))
