"""Publishing assets: ``aesthetic_kv``, ``aesthetic_viz``, the versioned ``release`` and ``hf_release``."""

import json

import dagster as dg

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import file_sha256
from laion_assets.core.outputs import require
from laion_assets.core.paths import resolve
from laion_assets.core.settings import serve_url
from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded
from laion_assets.defs.resources import (
    HfResource,
    PredictorsResource,
    ReleaseResource,
    StorageResource,
    WatermarkResource,
)
from laion_assets.defs.selection.gate import gate_tags
from laion_assets.defs.selection.stats import bucket_embeddings, score_histogram
from laion_assets.defs.selection.subsets import SUBSET_ASSETS
from laion_assets.defs.selection.tags import aesthetic_tags
from laion_assets.release.build import release_dir_for, release_from_layout
from laion_assets.release.gallery import write_galleries
from laion_assets.release.kv import KV_FILES, OnDiskKV
from laion_assets.release.manifest import CARD, MANIFEST, check_files, load_manifest
from laion_assets.release.publishing import push_release
from laion_assets.release.rebuild import build_kvs
from laion_assets.release.tables import laion_pop_table
from laion_assets.selection.tags import built_from_path, scan_tags


@dg.asset(
    deps=[aesthetic_tags],
    group_name="release",
    kinds={"binary"},
    owners=OWNERS,
    tags=asset_tags("release", "kv"),
    code_version="1",
    description="LAION's on-disk KV files: aesthetic.kv (<qe: hash, V1 score) and safety.kv (<qee: hash, punsafe, "
    "pwatermark), sorted by signed int64 hash, no header, nulls dropped, first row per hash.",
)
def aesthetic_kv(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Write the KV files from the tags table with an external sort (memory bounded)."""
    layout = storage.layout
    with as_failure("aesthetic_kv"):
        storage.pull(layout.tags_dir)
        written = build_kvs(layout)
        storage.push(layout.kv_dir)
    metadata: dict[str, object] = {"path": dg.MetadataValue.path(str(layout.kv_dir))}
    for name, summary in written.items():
        metadata[f"{name}/records"] = summary.records
        metadata[f"{name}/dropped_rows"] = summary.dropped
        metadata[f"{name}/format"] = summary.fmt
        context.log.info(f"{name}: {summary.records} records ({summary.dropped} null or repeated rows dropped)")
    metadata["dagster/row_count"] = written["aesthetic.kv"].records
    return dg.MaterializeResult(metadata=rounded(metadata))


@dg.asset_check(asset=aesthetic_kv, blocking=True, description="Each KV file is sorted by hash with no repeated hash.")
def kv_sorted_unique(storage: StorageResource) -> dg.AssetCheckResult:
    """Scan every KV file chunk by chunk and count out-of-order or repeated hashes."""
    bad: dict[str, int] = {}
    storage.pull(storage.layout.kv_dir)
    for name, (fmt, columns) in KV_FILES.items():
        kv = OnDiskKV(storage.layout.kv_dir / name, fmt, columns)
        count, last = 0, None
        for chunk in kv.iter_records():
            keys = chunk["hash"]
            count += int((keys[1:] <= keys[:-1]).sum())
            if last is not None and keys.size and keys[0] <= last:
                count += 1
            if keys.size:
                last = int(keys[-1])
        bad[name] = count
    return dg.AssetCheckResult(
        passed=not any(bad.values()), metadata={"unsorted_or_repeated": dg.MetadataValue.json(bad)}
    )


@dg.asset(
    deps=[aesthetic_tags],
    group_name="release",
    kinds={"html"},
    owners=OWNERS,
    tags=asset_tags("release", "gallery"),
    code_version="1",
    description="Static LAION-style galleries: 10 integer and 40 quarter-point score buckets ('In bucket a - b there "
    "is P.PP% (N.NNM) samples:'), top/bottom pages for aesthetic, punsafe, pwatermark and similarity, and a PNG "
    "histogram per predictor.",
)
def aesthetic_viz(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Write the gallery pages and histograms under ``viz/``."""
    layout = storage.layout
    with as_failure("aesthetic_viz"):
        storage.pull(layout.tags_dir)
        pages = write_galleries(scan_tags(layout), layout.viz_dir)
        storage.push(layout.viz_dir)
    index = layout.viz_dir / "index.html"
    context.log.info(f"galleries: {index.as_uri()}")
    return dg.MaterializeResult(
        metadata={
            "index": dg.MetadataValue.url(index.as_uri()),
            # file:// links do nothing when clicked in the UI; `laion-assets serve` serves the pages over HTTP
            "galleries_http": dg.MetadataValue.url(f"{serve_url()}/galleries/index.html"),
            "path": dg.MetadataValue.path(str(layout.viz_dir)),
            "pages": dg.MetadataValue.json(pages),
            "histogram_aesthetic": dg.MetadataValue.path(str(layout.viz_dir / "histogram_aesthetic.png")),
        }
    )


def _image_heads(watermark: WatermarkResource) -> dict[str, tuple[str, str | None]]:
    """How the watermark head is configured now (weights, identity), for the manifest's ``pwatermark`` entry."""
    identity = watermark.identity()
    return {"pwatermark": (watermark.weights_value, str(identity) if identity else None)}


@dg.asset(
    # pop_captions: the LAION-POP table joins a release with release_config.laion_pop (pop_job builds it).
    deps=[*SUBSET_ASSETS, score_histogram, bucket_embeddings, aesthetic_kv, dg.AssetKey("pop_captions")],
    group_name="release",
    kinds={"parquet", "json"},
    owners=OWNERS,
    tags=asset_tags("release", "release"),
    code_version="1",
    description="A versioned, byte-reproducible release folder releases/<version>/: the subsets (one config each), "
    "KV files, histogram, bucket embeddings, a dataset card (README.md) and manifest.json with every file's sha256; "
    "with release_config.laion_pop, the LAION-POP table of pop_captions too (config laion_pop, data/laion-pop/).",
)
def release(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    predictors: PredictorsResource,
    release_config: ReleaseResource,
    watermark: WatermarkResource,
) -> dg.MaterializeResult:
    """Assemble the release folder, its card and manifest (the changelog compares with the previous release).

    The tags must cover exactly the released shards, each still identical to what was validated, and every subset
    must equal its independent recount; a version that exists with other contents is never rewritten.
    """
    layout = storage.layout
    with as_failure("release"):
        storage.pull(
            layout.subsets_dir, layout.buckets_dir, layout.histogram_path, built_from_path(layout.histogram_path),
            layout.kv_dir, layout.releases_dir, layout.safety_dir,
        )  # fmt: skip
        validations = gate_tags(context.instance, storage, release_config, "release")
        tables = []
        if release_config.laion_pop:
            storage.pull(layout.pop_table_dir)
            tables.append(laion_pop_table(layout.pop_table_dir))
        files = {column: resolve(path) for column, path in predictors.weights().items()}
        built = release_from_layout(
            layout,
            release_config.version,
            storage.parts_source,
            files,
            storage.embedding_dim,
            release_config.name,
            safety=storage.safety_path,
            swap_width_height=storage.swap_stored_metadata,
            language=storage.language,
            excluded_shards=release_config.exclude_shards,
            validations=validations,
            image_heads=_image_heads(watermark),
            tables=tables,
        )
        if not built.unchanged:
            storage.push(built.path)
    manifest = built.manifest
    card = (built.path / CARD).read_text()
    if built.unchanged:
        context.log.info(f"release {built.version} already holds exactly these contents: left as it is")
    else:
        context.log.info(f"release {built.version} written to {built.path}")
    return dg.MaterializeResult(
        metadata={
            "version": built.version,
            "unchanged": built.unchanged,
            "path": dg.MetadataValue.path(str(built.path)),
            "files": len(manifest["files"]) + 1,
            "manifest_sha256": file_sha256(built.path / MANIFEST),
            "rows": dg.MetadataValue.json(
                {rel: e["rows"] for rel, e in manifest["files"].items() if rel.startswith("data/") and "rows" in e}
            ),
            "excluded_shards": dg.MetadataValue.json(manifest["inputs"].get("excluded_shards", [])),
            "changelog": dg.MetadataValue.json(manifest["changelog"]),
            "galleries": dg.MetadataValue.path(str(layout.viz_dir / "index.html")),
            "galleries_http": dg.MetadataValue.url(f"{serve_url()}/galleries/index.html"),
            "card": dg.MetadataValue.md(card.split("\n---\n", 1)[-1][:4000]),
        }
    )


@dg.asset_check(
    asset=release,
    blocking=True,
    description="Every file in the release folder has the sha256 its manifest records.",
)
def release_matches_manifest(storage: StorageResource, release_config: ReleaseResource) -> dg.AssetCheckResult:
    """Hash the release folder's files and compare them with manifest.json."""
    with as_failure("release_matches_manifest"):
        storage.pull(storage.layout.releases_dir)
        folder = release_dir_for(storage.layout, release_config.version)
        problems = check_files(folder, load_manifest(folder))
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset(
    deps=[release],
    group_name="release",
    kinds={"huggingface"},
    owners=OWNERS,
    tags=asset_tags("release", "release"),
    code_version="1",
    description="Pushes the release to a Hugging Face dataset repo: creates it if needed, one commit holding every "
    "changed file (huggingface_hub's create_commit skips unchanged ones), tag = release version; an unchanged release "
    "makes no commit. The dataset card's usage snippet is rewritten to name the repo (card and manifest, in the "
    "release folder too). Token read from HF_TOKEN at run time.",
)
def hf_release(
    context: dg.AssetExecutionContext, storage: StorageResource, release_config: ReleaseResource, hf: HfResource
) -> dg.MaterializeResult:
    """Push ``releases/<version>`` to ``hf.repo_id`` (or list what would be pushed when ``hf.dry_run``)."""
    with as_failure("hf_release"):
        storage.pull(storage.layout.releases_dir)
        folder = release_dir_for(storage.layout, release_config.version)
        if not hf.repo_id:
            raise BadInputError("hf.repo_id is not set: configure the HfResource with the dataset repo to push to")
        require(folder / MANIFEST, f"release {release_config.version}", "materialize `release` first")
        # The token is read here, at run time, and goes to push_release only (never to logs or metadata).
        result = push_release(folder, hf.repo_id, hf.resolved_token(), hf.endpoint, hf.private, hf.dry_run)
        if result.plan.named and not result.dry_run:
            storage.push(folder)  # the card and manifest now name the repo: a remote data root gets them too
    plan = result.plan
    context.log.info(plan.text())
    endpoint = (hf.endpoint or "https://huggingface.co").rstrip("/")
    return dg.MaterializeResult(
        metadata={
            "repo": dg.MetadataValue.url(f"{endpoint}/datasets/{hf.repo_id}"),
            "version": plan.version,
            "dry_run": result.dry_run,
            "committed": result.committed,
            "commit": result.commit_oid or "",
            "tagged": result.tagged,
            "files_added_or_updated": len(plan.add),
            "files_deleted": len(plan.delete),
            "files_unchanged": len(plan.unchanged),
            "plan": dg.MetadataValue.md(f"```\n{plan.text()}\n```"),
            "manifest": dg.MetadataValue.json(json.loads((folder / MANIFEST).read_text())["files"]),
        }
    )


RELEASE_ASSETS = [aesthetic_kv, aesthetic_viz, release, hf_release]
RELEASE_CHECKS = [kv_sorted_unique, release_matches_manifest]
