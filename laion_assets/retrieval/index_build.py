"""The kNN index over image embeddings: exact (flat) for small sets, IVF-PQ with on-disk inverted lists for large ones.

Vectors are L2-normalised CLIP embeddings (stored float16, read in float32 chunks), compared by inner product. A
vector's id is its shard's ``first_id`` plus its row, shards numbered in the order given, so an id maps back to
(shard, row) and from there to the shard's hash and metadata.

- ``flat``: ``IndexFlatIP``, filled shard by shard in chunks; exact, memory ``rows * dim * 4`` bytes.
- ``ivf_pq``: ``IVF{nlist},PQ{pq_m}x{nbits}`` trained on a seeded sample drawn from every shard; each shard's vectors go
  into an empty copy of the trained index that is written to a temporary file; the shard files are then merged into
  ``image.index`` + ``image.ivfdata`` (on-disk inverted lists, memory-mapped when loaded). Memory while building: the
  training sample, the trained index and one shard's codes.

PQ codes alone rank poorly among close neighbours: on generated clustered sets at d=768, ``PQ64`` codes gave
recall@10 0.45 (300k rows, ``bench/knn_index.py``) and even ``PQ192`` (192 bytes a vector) 0.79 (50k rows). So
:func:`search` re-ranks: it takes ``rerank_factor * k`` candidates from the codes and orders them by their exact inner
product, read from the shards' own embeddings (``rerank_factor=20``: recall@10 0.995 with ``PQ64``). The codes cost
``pq_m`` bytes per vector on disk; the exact vectors are the embeddings the caller keeps anyway. Use :func:`search`,
not ``index.search``, for ivf_pq results at the recall recorded in IndexInfo.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from laion_assets.core.errors import BadInputError
from laion_assets.core.threads import compute_threads

INDEX_FILE = "image.index"
IVFDATA_FILE = "image.ivfdata"
KINDS = ("auto", "flat", "ivf_pq")
METRIC = "inner_product"
# Rows per float32 chunk read from a shard: 16384 x 768 x 4 B = 48 MiB, whatever the shard's size.
CHUNK_ROWS = 16384
# k-means wants ~39 training points per centroid (faiss warns below that); PQ has 2**nbits centroids per sub-quantizer.
POINTS_PER_CENTROID = 39
# autofaiss' guide reports a 5.5B-vector index with 131072 lists (README, "kNN index: sizes and scaling"); more lists
# would need more than 5M training rows (39 each), 15.7 GB as float32 at d=768.
MAX_NLIST = 131_072
MAX_TRAIN_ROWS = POINTS_PER_CENTROID * MAX_NLIST
# Above this many lists, a flat coarse quantizer (every vector compared with every centroid when added) costs more
# than the PQ encoding itself; an HNSW graph over the centroids finds the nearest list in ~log(nlist) steps.
HNSW_QUANTIZER_ABOVE = 16_384
QUANTIZERS = ("auto", "flat", "hnsw")


@dataclass(frozen=True)
class IndexParams:
    """How to build the index; every 0 means "chosen from the data", and the chosen values land in IndexInfo.params.

    - ``kind``: ``auto`` (flat when rows <= ``exact_max_rows``, else ivf_pq), ``flat`` or ``ivf_pq``.
    - ``nlist``: 0 = the power of two nearest ``4 * sqrt(rows)`` (faiss' guideline is 4..16 sqrt(rows)), at most
      131072 and at most ``rows // 39`` so every centroid gets 39 training points.
    - ``quantizer``: how a vector finds its lists: ``flat`` (exact, compares with every centroid), ``hnsw`` (an HNSW32
      graph over the centroids, as in autofaiss' billion-scale indices), ``auto`` = hnsw when nlist > 16384.
    - ``pq_m``: 0 = the largest divisor of ``dim`` not above ``dim / 8``, capped at 64 (d=768 -> 64 bytes per vector,
      12 dimensions per sub-quantizer; d=64 -> 8).
    - ``nprobe``: 0 = ``clamp(nlist // 16, 16, 256)``, at most nlist (lists scanned per query). On the clustered
      300k x 768 benchmark set recall@10 was the same from nprobe 64 to 512 (of 2048 lists): the re-rank, not
      nprobe, was the limit; nlist // 16 keeps a 2x margin.
    - ``train_rows``: 0 = ``max(39 * nlist, 64 * 2**nbits)``, at most the row count; drawn without replacement,
      seeded, from the ids of all shards (it is held in memory as float32: 39 * nlist * dim * 4 bytes).
    - ``rerank_factor``: :func:`search` re-ranks ``rerank_factor * k`` PQ candidates exactly (ivf_pq only). 20:
      recall@10 0.995 on the 300k x 768 set, against 0.957 with 10 and 0.454 for the codes alone.
    - ``recall_queries``: rows sampled (seeded) from the data as queries for recall@10.
    - ``threads``: faiss' OpenMP threads while building; 0 = ``$LAION_ASSETS_THREADS``, else 1.
    """

    kind: str = "auto"
    exact_max_rows: int = 200_000
    nlist: int = 0
    pq_m: int = 0
    nbits: int = 8
    nprobe: int = 0
    train_rows: int = 0
    seed: int = 0
    recall_queries: int = 200
    rerank_factor: int = 20
    quantizer: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class ShardVectors:
    """One shard's embeddings: its key and a 2-D, row-sliceable array (np.memmap of a .npy, or np.ndarray)."""

    key: str
    embeddings: object


@dataclass(frozen=True)
class IndexInfo:
    """What was built: kind, size, every resolved parameter, measured recall@10, build time, id ranges, files."""

    kind: str
    rows: int
    dim: int
    params: dict
    recall_at_10: float
    recall_queries: int
    build_cpu_seconds: float
    build_wall_seconds: float
    shards: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexInfo:
        """The IndexInfo a :meth:`to_dict` dict describes."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def locate(self, ids: np.ndarray) -> list[tuple[str, int]]:
        """(shard key, row) of each id; BadInputError for an id outside 0..rows-1 (faiss pads with -1)."""
        firsts = np.array([s["first_id"] for s in self.shards], dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        outside = (ids < 0) | (ids >= self.rows)
        if outside.any():
            raise BadInputError(f"id {int(ids[outside][0])} is not in this index (ids 0..{self.rows - 1})")
        where = np.searchsorted(firsts, ids, side="right") - 1
        return [(self.shards[w]["key"], int(i - firsts[w])) for w, i in zip(where, ids, strict=True)]


def _faiss():
    import faiss  # imported late: only the retrieval steps pay for loading it

    return faiss


@contextmanager
def faiss_threads(threads: int = 0) -> Iterator[int]:
    """faiss' OpenMP threads for a block (0 = ``$LAION_ASSETS_THREADS``, else 1), restored afterwards."""
    faiss = _faiss()
    chosen = compute_threads(threads or None)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(chosen)
    try:
        yield chosen
    finally:
        faiss.omp_set_num_threads(before)


def _checked_shards(shards: Sequence[ShardVectors]) -> tuple[int, list[dict]]:
    """The common dimension and each shard's id range; BadInputError naming the shard on a bad shape."""
    if len(shards) == 0:
        raise BadInputError("no shards to index: the input is empty")
    dim = None
    ranges, first = [], 0
    for shard in shards:
        shape = getattr(shard.embeddings, "shape", None)
        if shape is None or len(shape) != 2:
            raise BadInputError(f"shard {shard.key}: embeddings must be 2-D (rows, dim), got shape {shape}")
        if dim is None:
            dim = int(shape[1])
        elif int(shape[1]) != dim:
            raise BadInputError(
                f"shard {shard.key}: embeddings have dimension {shape[1]}, the shards before it {dim} "
                f"(first: shard {shards[0].key})"
            )
        ranges.append({"key": shard.key, "first_id": first, "rows": int(shape[0])})
        first += int(shape[0])
    if first == 0:
        raise BadInputError(f"no rows to index: all {len(shards)} shards are empty")
    if dim == 0:
        raise BadInputError(f"shard {shards[0].key}: embeddings have dimension 0")
    return dim, ranges


def _finite(key: str, start: int, chunk: np.ndarray) -> np.ndarray:
    """The chunk, or BadInputError naming the shard and first row with a NaN or infinity."""
    good = np.isfinite(chunk).all(axis=1)
    if not good.all():
        row = start + int(np.argmin(good))
        raise BadInputError(f"shard {key}: row {row} has a NaN or infinite value; the index needs finite vectors")
    return chunk


def _chunks(shard: ShardVectors) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 chunk) over a shard, checked finite; never more than CHUNK_ROWS rows in memory."""
    rows = shard.embeddings.shape[0]
    for start in range(0, rows, CHUNK_ROWS):
        chunk = np.ascontiguousarray(shard.embeddings[start : start + CHUNK_ROWS], dtype=np.float32)
        yield start, _finite(shard.key, start, chunk)


def read_rows(shards: Sequence[ShardVectors], ranges: list[dict], ids: np.ndarray) -> np.ndarray:
    """The float32 vectors of sorted global ``ids``, read shard by shard, a chunk of ids at a time."""
    dim = shards[0].embeddings.shape[1]
    out = np.empty((len(ids), dim), dtype=np.float32)
    firsts = np.array([r["first_id"] for r in ranges], dtype=np.int64)
    where = np.searchsorted(firsts, ids, side="right") - 1
    for s in np.unique(where):
        positions = np.flatnonzero(where == s)
        local = ids[positions] - firsts[s]
        for start in range(0, len(positions), CHUNK_ROWS):
            part = positions[start : start + CHUNK_ROWS]
            rows = local[start : start + CHUNK_ROWS]
            # np.memmap fancy indexing reads just these rows; a sorted order keeps the reads sequential.
            chunk = np.asarray(shards[s].embeddings[rows], dtype=np.float32)
            bad = ~np.isfinite(chunk).all(axis=1)
            if bad.any():
                row = int(rows[int(np.argmax(bad))])
                raise BadInputError(
                    f"shard {ranges[s]['key']}: row {row} has a NaN or infinite value; the index needs finite vectors"
                )
            out[part] = chunk
    return out


def _top(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best (score desc, then id asc) of candidate ``scores``/``ids``; -1 ids sort last."""
    scores = np.where(ids < 0, -np.inf, scores)
    if scores.shape[1] > k:  # narrow to the k best first: a full sort of every chunk's scores would dominate
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(ids, keep, axis=1)
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise BadInputError(f"queries must be (n, {dim}) vectors, got shape {np.shape(queries)}")
    if not np.isfinite(q).all():
        raise BadInputError(f"query {int(np.argmin(np.isfinite(q).all(axis=1)))} has a NaN or infinite value")
    return np.ascontiguousarray(q)


def exact_topk(shards: Sequence[ShardVectors], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k over all shards, streamed chunk by chunk (float32), ids as build_index
    numbers them.

    Returns (scores, ids), each (n_queries, k), best first, ties broken by the smaller id; -1 ids pad when there are
    fewer than k rows.
    """
    dim, ranges = _checked_shards(shards)
    q = _queries(queries, dim)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for shard, r in zip(shards, ranges, strict=True):
        for start, chunk in _chunks(shard):
            scores = q @ chunk.T
            ids = np.broadcast_to(np.arange(len(chunk), dtype=np.int64) + r["first_id"] + start, scores.shape)
            best_s, best_i = _top(np.hstack([best_s, scores]), np.hstack([best_i, ids]), k)
    return best_s, best_i


def _power_of_two(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def resolve_params(params: IndexParams, rows: int, dim: int) -> dict:
    """Every parameter of the index ``params`` asks for on ``rows`` x ``dim`` vectors; BadInputError if impossible."""
    if params.kind not in KINDS:
        raise BadInputError(f"unknown index kind {params.kind!r}: use one of {', '.join(KINDS)}")
    kind = params.kind
    if kind == "auto":
        kind = "flat" if rows <= params.exact_max_rows else "ivf_pq"
    resolved = {"kind": kind, "metric": METRIC, "seed": params.seed, "faiss_version": _faiss().__version__}
    if kind == "flat":
        return {**resolved, "index_factory": "Flat"}
    if not 1 <= params.nbits <= 16:
        raise BadInputError(f"nbits must be 1..16, got {params.nbits}")
    codebook = 2**params.nbits
    least = POINTS_PER_CENTROID * codebook
    if rows < least:
        raise BadInputError(
            f"an ivf_pq index needs at least {least} rows ({POINTS_PER_CENTROID} per PQ centroid, {codebook} "
            f"centroids at nbits={params.nbits}); this set has {rows}: use kind='flat' (exact), which 'auto' "
            f"picks up to exact_max_rows={params.exact_max_rows}"
        )
    most_lists = rows // POINTS_PER_CENTROID
    nlist = params.nlist or min(_power_of_two(4 * math.sqrt(rows)), 1 << int(math.log2(most_lists)), MAX_NLIST)
    if nlist > most_lists:
        raise BadInputError(
            f"nlist={nlist} needs at least {POINTS_PER_CENTROID * nlist} rows to train "
            f"({POINTS_PER_CENTROID} per list); this set has {rows}: use nlist <= {most_lists} or 0 (chosen)"
        )
    if params.pq_m:
        pq_m = params.pq_m
        if dim % pq_m:
            raise BadInputError(f"pq_m={pq_m} must divide the dimension {dim}")
    else:
        pq_m = max(m for m in range(1, min(64, max(1, dim // 8)) + 1) if dim % m == 0)
    nprobe = min(nlist, params.nprobe or min(256, max(16, nlist // 16)))
    wanted = params.train_rows or min(MAX_TRAIN_ROWS, max(POINTS_PER_CENTROID * nlist, 64 * codebook))
    train_rows = min(rows, wanted)
    if train_rows < max(nlist, least):
        raise BadInputError(f"train_rows={train_rows} is too few: at least {max(nlist, least)} for this index")
    if params.rerank_factor < 1:
        raise BadInputError(f"rerank_factor must be >= 1, got {params.rerank_factor}")
    if params.quantizer not in QUANTIZERS:
        raise BadInputError(f"unknown quantizer {params.quantizer!r}: use one of {', '.join(QUANTIZERS)}")
    quantizer = params.quantizer
    if quantizer == "auto":
        quantizer = "hnsw" if nlist > HNSW_QUANTIZER_ABOVE else "flat"
    coarse = f"IVF{nlist}_HNSW32" if quantizer == "hnsw" else f"IVF{nlist}"
    return {
        **resolved,
        "nlist": nlist,
        "pq_m": pq_m,
        "nbits": params.nbits,
        "nprobe": nprobe,
        "train_rows": train_rows,
        "rerank_factor": params.rerank_factor,
        "quantizer": quantizer,
        "index_factory": f"{coarse},PQ{pq_m}x{params.nbits}",
    }


def _sample_ids(total: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct global ids out of ``total``, seeded, sorted (so reads go forward through each shard)."""
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False)).astype(np.int64)


def search(
    index, info: IndexInfo, shards: Sequence[ShardVectors], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of ``queries``: flat searches exactly; ivf_pq takes ``rerank_factor * k`` candidates from
    its codes and orders them by their exact inner product, read from ``shards`` (those the index was built from)."""
    q = _queries(queries, info.dim)
    if info.kind == "flat":
        scores, ids = index.search(q, k)
        return _top(scores, ids, k)
    _, candidates = index.search(q, max(k, k * int(info.params["rerank_factor"])))
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    wanted = np.unique(candidates[candidates >= 0])
    vectors = read_rows(shards, info.shards, wanted)
    for j in range(len(q)):
        found = candidates[j] >= 0
        scores[j, found] = vectors[np.searchsorted(wanted, candidates[j, found])] @ q[j]
    return _top(scores, candidates, k)


def search_with_vectors(
    index, info: IndexInfo, shards: Sequence[ShardVectors], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`search`, plus each result's exact float32 embedding read from ``shards`` ((n, k, dim); zeros where
    the id is -1), e.g. to hide near-duplicates."""
    scores, ids = search(index, info, shards, queries, k)
    vectors = np.zeros((*ids.shape, info.dim), dtype=np.float32)
    found = ids >= 0
    wanted, inverse = np.unique(ids[found], return_inverse=True)
    vectors[found] = read_rows(shards, info.shards, wanted)[inverse]
    return scores, ids, vectors


# Two float32 inner products of the same pair of unit vectors, computed by different routines (BLAS, numpy, faiss'
# kernels), differ by far less than this; genuinely different neighbours almost never come this close.
TIE_TOLERANCE = 1e-5


def recall_at_k(
    shards: Sequence[ShardVectors], info: IndexInfo, queries: np.ndarray, found: np.ndarray, k: int
) -> float:
    """Mean over queries of |found ∩ exact top-k| / k, where a found id whose exact score ties the exact k-th score
    (within TIE_TOLERANCE) also counts: LAION has many duplicate embeddings, and which of several equal rows fills
    the last places is arbitrary, so plain set overlap would fault even an exact index."""
    q = _queries(queries, info.dim)
    exact_scores, exact_ids = exact_topk(shards, q, k)
    found = np.asarray(found, dtype=np.int64)[:, :k]
    wanted = np.unique(found[found >= 0])
    vectors = read_rows(shards, info.shards, wanted)
    hits = []
    for j in range(len(q)):
        ids = np.unique(found[j][found[j] >= 0])
        scores = vectors[np.searchsorted(wanted, ids)] @ q[j]
        kth = exact_scores[j, k - 1]
        good = np.isin(ids, exact_ids[j]) | (scores >= kth - TIE_TOLERANCE)
        hits.append(min(k, int(good.sum())) / k)
    return float(np.mean(hits))


def _recall(index, info: IndexInfo, shards: Sequence[ShardVectors], params: IndexParams) -> tuple[float, float, int]:
    """(recall@10 of :func:`search`, recall@10 of the index's own ranking, queries) on rows sampled from the data."""
    count = min(params.recall_queries, info.rows)
    if count < 1:
        return 1.0, 1.0, 0
    queries = read_rows(shards, info.shards, _sample_ids(info.rows, count, params.seed + 1))
    k = min(10, info.rows)
    _, found = search(index, info, shards, queries, k)
    recall = recall_at_k(shards, info, queries, found, k)
    if info.kind == "flat":  # search() is the index's own ranking
        return recall, recall, count
    return recall, recall_at_k(shards, info, queries, index.search(queries, k)[1], k), count


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def build_index(
    shards: Sequence[ShardVectors],
    folder: Path,
    params: IndexParams = IndexParams(),
    progress: Callable[[str], None] | None = None,
) -> IndexInfo:
    """Build the index into ``folder`` (an empty folder the caller later renames into place): ``image.index``, plus
    ``image.ivfdata`` for ivf_pq (on-disk inverted lists), built shard by shard so memory stays bounded."""
    cpu0, wall0 = _cpu(), time.perf_counter()
    say = progress or (lambda line: None)
    dim, ranges = _checked_shards(shards)
    rows = sum(r["rows"] for r in ranges)
    resolved = resolve_params(params, rows, dim)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The caller may have written its own files (the catalog) into the folder; only ours must not be there yet.
    ours = [p.name for p in folder.iterdir() if p.name in (INDEX_FILE, IVFDATA_FILE) or p.name.endswith(".index.tmp")]
    if ours:
        raise BadInputError(f"{folder}: already holds {', '.join(sorted(ours))}; build into a fresh folder")
    faiss = _faiss()
    with faiss_threads(params.threads) as threads:
        resolved["threads"] = threads
        if resolved["kind"] == "flat":
            files = _build_flat(faiss, shards, ranges, dim, folder, say)
        else:
            files = _build_ivf_pq(faiss, shards, ranges, dim, folder, resolved, say)
        info = IndexInfo(resolved["kind"], rows, dim, resolved, 0.0, 0, 0.0, 0.0, ranges, files)
        index = load_index(folder, info)
        recall, raw, queries = _recall(index, info, shards, params)
        del index
    resolved["recall_at_10_codes_only"] = raw
    say(f"recall@10 {recall:.3f} on {queries} sampled rows")
    return IndexInfo(
        kind=resolved["kind"],
        rows=rows,
        dim=dim,
        params=resolved,
        recall_at_10=recall,
        recall_queries=queries,
        build_cpu_seconds=round(_cpu() - cpu0, 3),
        build_wall_seconds=round(time.perf_counter() - wall0, 3),
        shards=ranges,
        files=files,
    )


def _build_flat(faiss, shards, ranges, dim: int, folder: Path, say) -> list[str]:
    """An exact IndexFlatIP; rows are added in id order, so faiss' sequential ids are the global ids."""
    index = faiss.IndexFlatIP(dim)
    for shard, r in zip(shards, ranges, strict=True):
        for _, chunk in _chunks(shard):
            index.add(chunk)
        say(f"shard {shard.key}: {r['rows']} rows added")
    faiss.write_index(index, str(folder / INDEX_FILE))
    return [INDEX_FILE]


def _build_ivf_pq(faiss, shards, ranges, dim: int, folder: Path, p: dict, say) -> list[str]:
    """Train on a sample from all shards, fill one empty copy per shard, merge the copies' lists on disk."""
    total = sum(r["rows"] for r in ranges)
    sample = read_rows(shards, ranges, _sample_ids(total, p["train_rows"], p["seed"]))
    trained = faiss.index_factory(dim, p["index_factory"], faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(trained))
    # Polysemous training only serves Hamming-distance filtering we never use, and costs ~50x the PQ training itself.
    ivf.do_polysemous_training = False
    ivf.cp.seed = p["seed"]
    ivf.pq.cp.seed = p["seed"]
    trained.train(sample)
    del sample
    say(f"trained on {p['train_rows']} rows ({p['index_factory']})")
    parts: list[Path] = []
    try:
        for shard, r in zip(shards, ranges, strict=True):
            part = faiss.clone_index(trained)
            for start, chunk in _chunks(shard):
                ids = np.arange(start, start + len(chunk), dtype=np.int64) + r["first_id"]
                part.add_with_ids(chunk, ids)
            path = folder / f"shard-{len(parts):06d}.index.tmp"
            faiss.write_index(part, str(path))
            parts.append(path)
            del part
            say(f"shard {shard.key}: {r['rows']} rows added")
        _merge_on_disk(faiss, trained, parts, folder)
    finally:
        for path in parts:
            path.unlink(missing_ok=True)
    say(f"merged {len(parts)} shards")
    return [INDEX_FILE, IVFDATA_FILE]


def _merge_on_disk(faiss, trained, parts: list[Path], folder: Path) -> None:
    """``faiss.contrib.ondisk.merge_ondisk``, then written; unlike it, the shard files' mappings are released after
    the merge (merge_ondisk disowns them, so a long-lived process would keep every deleted shard file on disk)."""
    opened = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in parts]
    lists = faiss.InvertedListsPtrVector()
    for index in opened:
        lists.push_back(faiss.extract_index_ivf(index).invlists)
    ivf = faiss.extract_index_ivf(trained)
    on_disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(folder / IVFDATA_FILE))
    ntotal = on_disk.merge_from_multiple(lists.data(), lists.size(), False)
    del lists, opened
    trained.ntotal = ivf.ntotal = ntotal
    ivf.replace_invlists(on_disk, True)
    on_disk.this.disown()  # the index owns the lists now
    faiss.write_index(trained, str(folder / INDEX_FILE))


def load_index(folder: Path, info: IndexInfo):
    """Read the index (ivf_pq: on-disk lists from the same folder, memory-mapped, so the folder may have been renamed
    after building; nprobe set from info.params)."""
    faiss = _faiss()
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise BadInputError(f"{path}: no index file")
    if info.kind == "flat":
        return faiss.read_index(str(path))
    # The index file records the .ivfdata path it was built with; ONDISK_SAME_DIR looks next to the index instead.
    index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    faiss.extract_index_ivf(index).nprobe = int(info.params["nprobe"])
    return index
