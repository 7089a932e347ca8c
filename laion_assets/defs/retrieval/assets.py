"""``knn_index``: a faiss index over the released shards' image embeddings, and its blocking check."""

from dataclasses import asdict

import dagster as dg
import numpy as np
import polars as pl

from laion_assets.core.settings import serve_url
from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded
from laion_assets.defs.resources import ReleaseResource, StorageResource
from laion_assets.defs.selection.gate import gate_tags_parts
from laion_assets.defs.selection.tags import aesthetic_tags
from laion_assets.retrieval.catalog import part_name
from laion_assets.retrieval.index_build import IndexParams
from laion_assets.retrieval.index_folder import FORMAT, IndexedShard, build_index_folder
from laion_assets.retrieval.served import ServedIndex, open_index, read_index_json
from laion_assets.selection.tags import recorded_ids, tag_files

# Below this recall@10 (measured against exact search when the index was built) the check fails the run.
MIN_RECALL = 0.9
SELF_QUERIES = 32


class KnnIndexConfig(dg.Config):
    """How to build the index (faiss): ``auto`` is exact up to ``exact_max_rows`` rows, IVF-PQ above; 0 means
    "chosen from the data" (the rules: ``laion_assets.retrieval.index_build.IndexParams``)."""

    kind: str = "auto"
    exact_max_rows: int = IndexParams.exact_max_rows
    nlist: int = 0
    pq_m: int = 0
    nprobe: int = 0
    train_rows: int = 0
    nbits: int = IndexParams.nbits
    seed: int = 0
    recall_queries: int = IndexParams.recall_queries
    rerank_factor: int = IndexParams.rerank_factor
    quantizer: str = "auto"
    threads: int = 0
    name: str = ""
    """The index's name in ``/indices-list`` (default: the release's name)."""

    def params(self) -> IndexParams:
        """The build parameters."""
        return IndexParams(
            kind=self.kind, exact_max_rows=self.exact_max_rows, nlist=self.nlist, pq_m=self.pq_m, nprobe=self.nprobe,
            train_rows=self.train_rows, seed=self.seed, recall_queries=self.recall_queries, nbits=self.nbits,
            rerank_factor=self.rerank_factor, quantizer=self.quantizer, threads=self.threads,
        )  # fmt: skip


@dg.asset(
    deps=[aesthetic_tags],
    group_name="retrieval",
    kinds={"faiss", "arrow"},
    owners=OWNERS,
    tags=asset_tags("retrieval", "index"),
    code_version="1",
    description="A faiss kNN index over the released shards' image embeddings (inner product on the unit "
    "vectors): exact up to exact_max_rows rows, IVF-PQ with on-disk inverted lists above, built shard by shard. "
    "Ids map to (shard, row) -> hash -> the row's metadata and scores (memory-mapped Arrow parts). recall@10 is "
    "measured against exact search on sampled rows. `laion-assets serve` answers clip-retrieval's API over it.",
)
def knn_index(
    context: dg.AssetExecutionContext, config: KnnIndexConfig, storage: StorageResource, release_config: ReleaseResource
) -> dg.MaterializeResult:
    """Build (or keep, when built from the same tags, files and parameters) the index under ``knn/``."""
    layout = storage.layout
    with as_failure("knn_index"):
        validations, parts = gate_tags_parts(context.instance, storage, release_config, "knn_index")
        keys = sorted(validations)  # gate_tags_parts checked each part is still the file that was validated
        params = config.params()
        built_from = {
            "tags_table": recorded_ids(tag_files(layout)),
            "shards": {key: validations[key].id for key in keys},
            "params": asdict(params),
        }
        name = config.name or release_config.name
        storage.pull(layout.knn_dir)
        previous = read_index_json(layout.knn_dir) if (layout.knn_dir / "index.json").is_file() else None
        unchanged = previous is not None and (
            previous.get("format"),
            previous.get("built_from"),
            previous.get("name"),
        ) == (FORMAT, built_from, name)
        if unchanged:
            record = previous
            context.log.info("knn_index: built from the same tags, files and parameters: kept")
        else:
            shards = [IndexedShard(key, parts[key].embeddings, layout.tags_part(key)) for key in keys]
            record = build_index_folder(layout.knn_dir, shards, params, name, built_from, context.log.info)
            storage.push(layout.knn_dir)
    info = record["info"]
    size = sum(p.stat().st_size for p in layout.knn_dir.rglob("*") if p.is_file())
    url = serve_url()
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": info["rows"],
                "unchanged": unchanged,
                "kind": info["kind"],
                "dim": info["dim"],
                "params": dg.MetadataValue.json(info["params"]),
                "recall_at_10": info["recall_at_10"],
                "recall_queries": info["recall_queries"],
                "build_cpu_seconds": info["build_cpu_seconds"],
                "build_wall_seconds": info["build_wall_seconds"],
                "size_bytes": size,
                "shards": len(info["shards"]),
                "path": dg.MetadataValue.path(str(layout.knn_dir)),
                "search_page": dg.MetadataValue.url(f"{url}/"),
                "serve": dg.MetadataValue.md(
                    f"Search it: `laion-assets serve` then open [{url}/]({url}/) "
                    f'(clip-retrieval\'s `ClipClient("{url}/knn-service", "{name}")` works too).'
                ),
            }
        )
    )


@dg.asset_check(
    asset=knn_index,
    blocking=True,
    description="The index holds every tags row once (ids in shard order, each catalog part's hashes equal its tags "
    "part's), rows' own vectors find themselves, and recall@10 measured at build time is at least 0.9.",
)
def knn_index_complete(storage: StorageResource) -> dg.AssetCheckResult:
    """Recount the rows against the tags, compare hashes per shard, query sampled rows' own vectors."""
    layout = storage.layout
    problems: list[str] = []
    with as_failure("knn_index_complete"):
        storage.pull(layout.knn_dir, layout.tags_dir)
        served = open_index(layout.knn_dir)
        spans = {s["key"]: s for s in served.info.shards}
        tags = {f.stem.removeprefix("part-"): f for f in tag_files(layout)}
        if sorted(spans) != sorted(tags):
            problems.append(f"index shards {sorted(spans)} != tags parts {sorted(tags)}")
        expected_first = 0
        for key in sorted(spans):
            first, rows = int(spans[key]["first_id"]), int(spans[key]["rows"])
            if first != expected_first:
                problems.append(f"shard {key}: first id {first}, expected {expected_first}")
            expected_first += rows
            if key not in tags:
                continue
            want = pl.read_parquet(tags[key], columns=["hash"])["hash"]
            got = pl.read_ipc(layout.knn_dir / part_name(key), columns=["hash"])["hash"]
            if not want.equals(got):
                problems.append(
                    f"shard {key}: catalog hashes differ from {tags[key].name} ({got.len()}/{want.len()} rows)"
                )
        ntotal = int(served.index.ntotal)
        if ntotal != served.catalog.rows:
            problems.append(f"faiss holds {ntotal} vectors, the catalog {served.catalog.rows} rows")
        recall = float(served.record["info"]["recall_at_10"])
        if recall < MIN_RECALL:
            problems.append(f"recall@10 {recall:.3f} < {MIN_RECALL}")
        found = _self_queries(served, problems)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "rows": served.catalog.rows,
            "recall_at_10": recall,
            "self_queries_found": found,
            "problems": dg.MetadataValue.json(problems[:20]),
        },
    )


def _self_queries(served: ServedIndex, problems: list[str]) -> int:
    """Query sampled rows' stored vectors: each must come back in its own top 10 (or tie with an equal vector)."""
    rng = np.random.default_rng(0)
    ids = np.unique(rng.integers(0, served.catalog.rows, size=min(SELF_QUERIES, served.catalog.rows)))
    queries = served.vectors(ids)
    sims, found, _ = served.search(queries, 10)
    missed = []
    for i, (want, row_ids, row_sims) in enumerate(zip(ids, found, sims, strict=True)):
        own = float(queries[i] @ queries[i])
        # a row with ten or more equal vectors (duplicates) may be crowded out of its own top 10 by ties
        if want not in row_ids and not (len(row_sims) == 10 and row_sims[-1] >= own - 1e-4):
            missed.append(f"id {int(want)} {served.info.locate(np.array([want]))[0]}")
    needed = 1.0 if served.record["info"]["kind"] == "flat" else MIN_RECALL
    if len(missed) > (1 - needed) * len(ids):
        problems.append(f"{len(missed)} of {len(ids)} sampled rows are not in their own top 10: {missed[:5]}")
    return len(ids) - len(missed)
