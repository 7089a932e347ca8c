"""LAION-POP as assets: pop_concepts -> pop_centroids -> laion_pop (kNN + filters) -> pop_images -> pop_captions.

The pure steps live in :mod:`laion_assets.pop`; this module wires them to the data root, the kNN index, the
downloader and the VLM resource, and checks what they wrote.
"""

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_path, save_npy
from laion_assets.core.outputs import require
from laion_assets.defs.errors import as_failure
from laion_assets.defs.k8s import GPU_POOL, k8s_op_tags
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded, table_metadata
from laion_assets.defs.pop.config import PopResource
from laion_assets.defs.pop.vlm import VlmResource
from laion_assets.defs.resources import DownloaderResource, StorageResource
from laion_assets.defs.retrieval.assets import knn_index
from laion_assets.defs.selection.stats import bucket_embeddings
from laion_assets.images.downloading import download_shard, fingerprint, summarize
from laion_assets.pop.captioning import caption_tars, chunks_dir
from laion_assets.pop.centroids import train_centroids
from laion_assets.pop.concepts import Concepts, read_concepts
from laion_assets.pop.selection import (
    completeness_problems,
    part_files,
    read_selection_record,
    select_counted,
    soundness_problems,
    write_selection,
)
from laion_assets.pop.table import SETTINGS_FILE, release_table, table_problems, write_table
from laion_assets.release.manifest import project_relative
from laion_assets.retrieval.served import open_index
from laion_assets.sources.url_sources import ROW_COLUMN

SIZES_LISTED = 2000  # up to this many centroids, metadata lists every cluster size and per-centroid count


def _json(path) -> dict:
    return json.loads(path.read_text())


def _write_json(path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


@dg.asset(
    group_name="pop",
    kinds={"numpy", "json"},
    owners=OWNERS,
    tags=asset_tags("pop", "embeddings"),
    code_version="1",
    description="LAION-POP's concept collection: the CLIP embeddings of the concept images (LAION: 4.25 M "
    "Midjourney images, ViT-L/14) read from a clip-retrieval folder, checked (width, finite, unit rows) and recorded "
    "with every file's sha256 in pop/concepts.json.",
)
def pop_concepts(storage: StorageResource, pop: PopResource) -> dg.MaterializeResult:
    """Validate the concept folder and record its files."""
    with as_failure("pop_concepts"):
        concepts = read_concepts(pop.concepts_folder(), storage.embedding_dim)
        _write_json(storage.layout.pop_concepts_path, concepts.to_dict())
        storage.push(storage.layout.pop_concepts_path)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": concepts.rows,
            "dim": concepts.dim,
            "files": len(concepts.files),
            "source": concepts.source,
            "path": dg.MetadataValue.path(str(storage.layout.pop_concepts_path)),
        }
    )


@dg.asset(
    deps=[pop_concepts],
    group_name="pop",
    kinds={"faiss", "numpy"},
    owners=OWNERS,
    tags=asset_tags("pop", "centroids"),
    code_version="1",
    description="k-means (faiss, spherical, seeded) of the concept vectors into k centroids (LAION: 10,000), "
    "L2-normalised; every concept vector is then assigned, giving the cluster sizes and the inertia. Kept when the "
    "concepts and parameters are unchanged.",
)
def pop_centroids(
    context: dg.AssetExecutionContext, storage: StorageResource, pop: PopResource
) -> dg.MaterializeResult:
    """Train the centroids (or keep them when built from the same concepts and parameters)."""
    layout = storage.layout
    with as_failure("pop_centroids"):
        storage.pull(layout.pop_concepts_path, layout.pop_centroids_path, layout.pop_centroids_info)
        record = _json(require(layout.pop_concepts_path, "pop_concepts", "materialize pop_concepts first"))
        concepts = Concepts.from_dict(record, str(layout.pop_concepts_path))
        params = pop.kmeans()
        built_from = {"concepts": [f["sha256"] for f in record["files"]], "params": params.to_dict()}
        previous = _json(layout.pop_centroids_info) if layout.pop_centroids_info.is_file() else None
        unchanged = (
            previous is not None and previous.get("built_from") == built_from and layout.pop_centroids_path.is_file()
        )
        if unchanged:
            info = previous
            context.log.info("pop_centroids: same concepts and parameters: kept")
        else:
            context.log.info(f"pop_centroids: k-means of {concepts.rows} vectors into {params.k} centroids")
            found = train_centroids(concepts, params)
            save_npy(found.vectors, layout.pop_centroids_path)
            info = {
                "built_from": built_from,
                "summary": found.summary(),
                "sizes": found.sizes.tolist(),
                "objective": found.objective,
                "seconds": found.seconds,
            }
            _write_json(layout.pop_centroids_info, info)
            storage.push(layout.pop_centroids_path, layout.pop_centroids_info)
    summary, sizes = info["summary"], info["sizes"]
    listed = sizes if len(sizes) <= SIZES_LISTED else np.percentile(sizes, [0, 1, 10, 50, 90, 99, 100]).tolist()
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": summary["k"],
                "unchanged": unchanged,
                **{k: v for k, v in summary.items() if k != "k"},
                "k": summary["k"],
                "cluster_sizes": dg.MetadataValue.json(listed),
                "seconds": info["seconds"],
                "path": dg.MetadataValue.path(str(layout.pop_centroids_path)),
            }
        )
    )


@dg.asset(
    deps=[pop_centroids, knn_index, bucket_embeddings],
    group_name="pop",
    kinds={"parquet", "faiss"},
    owners=OWNERS,
    tags=asset_tags("pop", "subset"),
    code_version="1",
    description="LAION-POP's selection: each centroid's nearest neighbours from knn_index (query guided towards "
    "aesthetic bucket 9 with weight 0.5), kept when the aesthetic score, the shortest side (LAION: >= 768) and "
    "pwatermark "
    "pass, one row per hash (the nearest centroid's); punsafe kept as a column. Parquet parts like the subsets.",
)
def laion_pop(context: dg.AssetExecutionContext, storage: StorageResource, pop: PopResource) -> dg.MaterializeResult:
    """Query the index with every centroid, filter, de-duplicate and write the parts."""
    layout = storage.layout
    with as_failure("laion_pop"):
        storage.pull(layout.pop_centroids_path, layout.pop_centroids_info, layout.knn_dir, layout.buckets_dir)
        centroids = np.load(require(layout.pop_centroids_path, "pop_centroids", "materialize pop_centroids first"))
        served = open_index(layout.knn_dir, ratings_dirs=[layout.buckets_dir])
        rule = pop.rule()
        rows, counts = select_counted(served, centroids, rule)
        per_centroid = rows.group_by("centroid").len().sort("centroid")
        record = {
            "rule": rule.to_dict(),
            "centroids": _json(layout.pop_centroids_info)["built_from"],
            "index": served.record.get("built_from", {}),
            "ratings_from": served.ratings_from,
            "rows": rows.height,
            "funnel": counts,
        }
        files = write_selection(rows, layout.pop_selection_dir, record, pop.part_rows)
        storage.push(layout.pop_selection_dir)
    filled = np.zeros(len(centroids), dtype=np.int64)
    filled[per_centroid["centroid"].to_numpy()] = per_centroid["len"].to_numpy()
    context.log.info(f"laion_pop: {rows.height} rows from {len(centroids)} centroids in {len(files)} part(s)")
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": rows.height,
                "parts": len(files),
                "centroids": len(centroids),
                "centroids_with_rows": int((filled > 0).sum()),
                "rows_per_centroid_min": int(filled.min()) if len(filled) else 0,
                "rows_per_centroid_median": float(np.median(filled)) if len(filled) else 0.0,
                "rows_per_centroid_max": int(filled.max()) if len(filled) else 0,
                "rows_per_centroid": dg.MetadataValue.json(
                    filled.tolist() if len(filled) <= SIZES_LISTED else "more than 2000 centroids: see selection.json"
                ),
                "funnel": dg.MetadataValue.json(counts),
                "rule": dg.MetadataValue.json(rule.to_dict()),
                "ratings_from": served.ratings_from,
                "path": dg.MetadataValue.path(str(layout.pop_selection_dir)),
            }
        )
        | table_metadata(files[0])
    )


@dg.asset_check(
    asset=laion_pop,
    blocking=True,
    description="Every row meets every filter of the recorded rule, each hash once, centroids in range (soundness); "
    "for sampled centroids, every neighbour in the index that meets the rule is there, under this centroid or a "
    "nearer one (completeness, recounted row by row apart from the vectorised selection).",
)
def laion_pop_meets_rule(storage: StorageResource, pop: PopResource) -> dg.AssetCheckResult:
    """Recount the selection against its rule."""
    layout = storage.layout
    with as_failure("laion_pop_meets_rule"):
        storage.pull(layout.pop_selection_dir, layout.pop_centroids_path, layout.knn_dir, layout.buckets_dir)
        record = read_selection_record(layout.pop_selection_dir)
        rows = pl.concat([pl.read_parquet(f) for f in part_files(layout.pop_selection_dir)])
        rule = pop.rule()
        problems = []
        if record["rule"] != rule.to_dict():
            problems.append(f"selected with {record['rule']}, configured {rule.to_dict()}: materialize laion_pop")
        if rows.height != record["rows"]:
            problems.append(f"parts hold {rows.height} rows, selection.json says {record['rows']}")
        centroids = np.load(layout.pop_centroids_path)
        problems += soundness_problems(rows, rule, len(centroids))
        served = open_index(layout.knn_dir, ratings_dirs=[layout.buckets_dir])
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(centroids), size=min(pop.check_centroids, len(centroids)), replace=False))
        problems += completeness_problems(served, centroids, rows, rule, sample)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "rows": rows.height,
            "centroids_recounted": len(sample),
            "problems": dg.MetadataValue.json(problems[:20]),
        },
    )


def published_path(name: str) -> str:
    """How a folder is named in the released settings and card: project-relative, a URL or a Hub model name as is,
    else only its last component (a user's absolute paths are not published)."""
    if not name or "://" in name or not Path(name).is_absolute():
        return name
    return project_relative(Path(name)) or f"<local folder {Path(name).name}>"


def _part_key(path) -> str:
    return path.stem.removeprefix("part-")


@dg.asset(
    deps=[laion_pop],
    group_name="pop",
    kinds={"webdataset"},
    owners=OWNERS,
    tags=asset_tags("pop", "images"),
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "pop_images_success_rate",
            asset="pop_images",
            description="Warns when fewer than downloader.min_success_rate of the selected URLs were fetched.",
        )
    ],
    description="The selected rows' images, downloaded by img2dataset (the URL chain's bounds and retries) into one "
    "webdataset folder per laion_pop part, resized to image_size on the short side; each sample carries its hash. "
    "A re-run downloads only what failed.",
)
def pop_images(
    context: dg.AssetExecutionContext, storage: StorageResource, downloader: DownloaderResource, pop: PopResource
) -> dg.MaterializeResult:
    """Download every laion_pop part's URLs (one part after the other)."""
    layout = storage.layout
    options = replace(downloader.options(), image_size=pop.image_size, resize_mode=pop.resize_mode)
    urls = fetched = 0
    per_part = {}
    with as_failure("pop_images"):
        storage.pull(layout.pop_selection_dir)
        for path in part_files(layout.pop_selection_dir):
            key = _part_key(path)
            frame = (
                pl.read_parquet(path, columns=["URL", "TEXT", "hash"])
                .with_row_index(ROW_COLUMN)
                .with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
            )
            if frame.is_empty():
                per_part[key] = 0
                continue
            shard_dir = layout.pop_images_dir(key)
            storage.pull(shard_dir)
            result = download_shard(frame, path, shard_dir, options)
            storage.push(shard_dir)
            urls += result.rows
            fetched += result.successes
            per_part[key] = result.successes
            context.log.info(f"pop_images part {key}: {result.successes}/{result.rows} fetched")
    rate = fetched / urls if urls else 1.0
    floor = downloader.min_success_rate
    check = dg.AssetCheckResult(
        check_name="pop_images_success_rate",
        passed=rate >= floor,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{rate:.1%} of {urls} URLs fetched (floor {floor:.0%})",
        metadata=rounded({"success_rate": rate, "floor": floor}),
    )
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": fetched,
                "urls": urls,
                "success_rate": rate,
                "per_part": dg.MetadataValue.json(per_part),
                "image_size": pop.image_size,
                "path": dg.MetadataValue.path(str(layout.pop_dir / "images")),
            }
        ),
        check_results=[check],
    )


@dg.asset(
    deps=[pop_images],
    group_name="pop",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    op_tags=k8s_op_tags(GPU_POOL),
    owners=OWNERS,
    tags=asset_tags("pop", "captions"),
    code_version="1",
    description="A detailed caption per downloaded image by a VLM (LLaVA 1.5 by default, LAION-POP's prompt, "
    "the leading 'This image showcases' trimmed), batched with out-of-memory halving, resumable: finished chunks "
    "are kept and a re-run captions only the rest. Then the released LAION-POP table (pop/table): the captioned "
    "selection under the Hub dataset's column names, with settings.json.",
)
def pop_captions(
    context: dg.AssetExecutionContext, storage: StorageResource, pop: PopResource, vlm: VlmResource
) -> dg.MaterializeResult:
    """Caption every part's images (parts already captioned with the same model and prompt are kept), then join."""
    layout = storage.layout
    spec = vlm.spec()
    wanted = {"model": spec.model, "prompt": spec.prompt, "trim_prefix": spec.trim_prefix,
              "max_new_tokens": spec.max_new_tokens}  # fmt: skip
    captioned_now = resumed = kept = skipped = 0
    seconds = 0.0
    with as_failure("pop_captions"):
        storage.pull(layout.pop_selection_dir, layout.pop_captions_dir, layout.pop_concepts_path,
                     layout.pop_centroids_info)  # fmt: skip
        parts = part_files(layout.pop_selection_dir)
        record = read_selection_record(layout.pop_selection_dir)
        captions = []
        for path in parts:
            key = _part_key(path)
            out = layout.pop_captions_dir / f"part-{key}.parquet"
            done_record = out.with_suffix(".json")
            shard_dir = layout.pop_images_dir(key)
            storage.pull(shard_dir)
            downloads = summarize(shard_dir, 0) if shard_dir.is_dir() else None
            # No image fetched (all URLs failed): nothing to caption, and no reason to load a 14 GB model.
            tars = downloads.tars if downloads is not None and downloads.successes else []
            # The captions stand for these exact images of this exact part: a new selection or download recaptions.
            images = [[str(t.relative_to(shard_dir)), t.stat().st_size, t.stat().st_mtime_ns] for t in tars]
            made_from = {**wanted, "part": fingerprint(path), "tars": images}
            if out.is_file() and done_record.is_file() and _json(done_record) == made_from:
                kept += 1
            elif tars:
                out.parent.mkdir(parents=True, exist_ok=True)
                # Each finished chunk goes up at once: on a remote data root, the next run pulls it and resumes.
                pushed = chunks_dir(out)
                result = caption_tars(tars, vlm.load(), out, vlm.batch_size, vlm.chunk_rows,
                                      on_chunk=lambda _rows, _chunk, pushed=pushed: storage.push(pushed))  # fmt: skip
                _write_json(done_record, made_from)
                captioned_now += result.captioned_now
                resumed += result.resumed
                skipped += result.skipped
                seconds += result.seconds
                context.log.info(
                    f"pop_captions part {key}: {result.rows} captions ({result.resumed} from an earlier run), "
                    f"{result.skipped} images skipped, batch size {result.batch_size}"
                )
                storage.push(out, done_record, chunks_dir(out))  # the chunk folder, now gone, goes from the remote too
            else:
                continue
            captions.append(pl.read_parquet(out))
        selection = pl.concat([pl.read_parquet(p) for p in parts])
        frame = pl.concat(captions) if captions else pl.DataFrame(schema={"hash": pl.Int64, "key": pl.String,
                                                                          "llava_caption": pl.String})  # fmt: skip
        rule = record["rule"]
        table = release_table(selection, frame, rule["aesthetic_column"])
        concepts = _json(layout.pop_concepts_path) if layout.pop_concepts_path.is_file() else {}
        centroid_info = _json(require(layout.pop_centroids_info, "pop_centroids", "materialize pop_centroids first"))
        settings = {
            "selection": rule,
            "concepts": {"rows": concepts.get("rows"), "source": published_path(concepts.get("source", ""))},
            "centroids": {
                "k": centroid_info["summary"]["k"],
                "seed": centroid_info["built_from"]["params"]["seed"],
                "inertia": centroid_info["summary"]["inertia"],
            },
            "captions": {**wanted, "model": published_path(spec.model)},
        }
        write_table(table, layout.pop_table_dir, settings, pop.part_rows)
        storage.push(layout.pop_table_dir)
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": table.height,
                "selected_rows": selection.height,
                "captioned_now": captioned_now,
                "resumed_from_chunks": resumed,
                "parts_kept": kept,
                "skipped_images": skipped,
                "caption_seconds": seconds,
                "model": spec.model,
                "path": dg.MetadataValue.path(str(layout.pop_table_dir)),
            }
        )
        | table_metadata(sorted(layout.pop_table_dir.glob("part-*.parquet"))[0])
    )


@dg.asset_check(
    asset=pop_captions,
    blocking=True,
    description="The released table's rows are laion_pop rows, once each, every one with a non-empty caption that "
    "no longer starts with the trimmed prefix, and settings.json counts them.",
)
def pop_table_sound(storage: StorageResource, vlm: VlmResource) -> dg.AssetCheckResult:
    """Check the LAION-POP table against the selection."""
    layout = storage.layout
    with as_failure("pop_table_sound"):
        storage.pull(layout.pop_table_dir, layout.pop_selection_dir)
        table = pl.concat([pl.read_parquet(f) for f in sorted(layout.pop_table_dir.glob("part-*.parquet"))])
        selection = pl.concat([pl.read_parquet(f, columns=["hash"]) for f in part_files(layout.pop_selection_dir)])
        problems = table_problems(table, selection["hash"].to_list(), vlm.spec().trim_prefix)
        settings = _json(layout.pop_table_dir / SETTINGS_FILE)
        if settings.get("rows") != table.height:
            problems.append(f"settings.json says {settings.get('rows')} rows, the parts hold {table.height}")
    return dg.AssetCheckResult(
        passed=not problems, metadata={"rows": table.height, "problems": dg.MetadataValue.json(problems)}
    )


POP_ASSETS = [pop_concepts, pop_centroids, laion_pop, pop_images, pop_captions]
POP_CHECKS = [laion_pop_meets_rule, pop_table_sound]
