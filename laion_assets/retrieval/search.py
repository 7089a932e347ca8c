"""One kNN query, as clip-retrieval's back end answers it: aesthetic guidance, search, then the post-filters.

- Aesthetic guidance: ``q' = (q + w * rating[k]) / ||q + w * rating[k]||`` (``selection.buckets.aesthetic_query``).
- Safe mode drops every result whose ``punsafe`` is at least 0.5 or unknown (a row without a value is not shown
  as safe).
- Hiding near-duplicates drops a result whose embedding has an inner product of at least 0.94 with a better-ranked
  kept result, chained like clip-retrieval's connected components (0.94 is clip-retrieval's threshold); within each
  group the best-ranked result is kept.
- Hiding duplicate URLs keeps the best-ranked result per URL (clip-retrieval's front end does this in the page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from laion_assets.retrieval.catalog import Catalog
from laion_assets.selection.buckets import aesthetic_query
from laion_assets.selection.thresholds import PUNSAFE_MAX

NEAR_DUPLICATE = 0.94


@dataclass(frozen=True)
class SearchOptions:
    """What a query asks for besides its vector (clip-retrieval's request fields)."""

    num_images: int = 40
    num_result_ids: int = 40
    deduplicate: bool = False
    use_safety_model: bool = False
    deduplicate_urls: bool = False
    aesthetic_score: int | None = None
    aesthetic_weight: float | None = None


def guided_query(query: np.ndarray, ratings: np.ndarray | None, score: int | None, weight: float | None) -> np.ndarray:
    """The query with aesthetic guidance applied when a bucket is asked for (and ratings exist), else unchanged."""
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if ratings is None or score is None:
        return query
    return aesthetic_query(query, ratings[score], 0.5 if weight is None else weight)


def near_duplicates(embeddings: np.ndarray, threshold: float = NEAR_DUPLICATE) -> set[int]:
    """Positions (in rank order) to hide: each group of results linked by similarity >= ``threshold`` keeps its best."""
    n = len(embeddings)
    if n < 2:
        return set()
    e = np.asarray(embeddings, dtype=np.float32)
    linked = (e @ e.T) >= threshold
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, 1)), strict=True):
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)  # the smaller position (better rank) stays the group's root
    return {i for i in range(n) if root(i) != i}


def unsafe(punsafe: np.ndarray) -> np.ndarray:
    """Mask of results safe mode hides: ``punsafe >= 0.5`` or unknown."""
    p = np.asarray(punsafe, dtype=np.float64)
    return ~(p < PUNSAFE_MAX)


def run_query(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    catalog: Catalog,
    query: np.ndarray,
    options: SearchOptions,
) -> list[dict[str, object]]:
    """Search ``query`` (already guided), apply the filters, return clip-retrieval's result dicts, best first.

    ``search(q, k)`` returns (similarities, ids, embeddings) of the k nearest rows of a (1, d) query, best first.
    """
    sims, ids, vecs = search(query.reshape(1, -1).astype(np.float32), options.num_result_ids)
    sims, ids = np.asarray(sims).reshape(-1), np.asarray(ids).reshape(-1)
    vecs = np.asarray(vecs, dtype=np.float32).reshape(len(ids), -1)
    keep = ids >= 0
    sims, ids, vecs = sims[keep], ids[keep], vecs[keep]
    if options.use_safety_model and len(ids):
        safe = ~unsafe(catalog.column("punsafe", ids))
        sims, ids, vecs = sims[safe], ids[safe], vecs[safe]
    if options.deduplicate and len(ids) > 1:
        hidden = near_duplicates(vecs)
        kept = np.array([i not in hidden for i in range(len(ids))], dtype=bool)
        sims, ids = sims[kept], ids[kept]
    records = catalog.records(ids[: max(options.num_images, 0)] if not options.deduplicate_urls else ids)
    out: list[dict[str, object]] = []
    seen_urls: set[object] = set()
    for sim, i, record in zip(sims.tolist(), ids.tolist(), records, strict=False):
        if options.deduplicate_urls:
            if record.get("url") in seen_urls:
                continue
            seen_urls.add(record.get("url"))
        out.append({**record, "id": int(i), "similarity": float(sim)})
        if len(out) >= options.num_images:
            break
    return out


def metadata_of(catalog: Catalog, ids: Sequence[int]) -> list[dict[str, object]]:
    """clip-retrieval's ``/metadata`` answer: ``[{"id": i, "metadata": {...}}]`` in the order asked."""
    return [{"id": int(i), "metadata": record} for i, record in zip(ids, catalog.records(ids), strict=True)]
