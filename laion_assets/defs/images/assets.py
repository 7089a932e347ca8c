"""The front of the chain for URL sources: ``images`` (img2dataset per shard) and ``image_embeddings`` (CLIP).

With no URL source configured (``storage.urls`` empty) both record that there is nothing to do, so the stored
embeddings flow into ``clip_embeddings`` exactly as before; with one, ``clip_embeddings`` indexes the part that
``image_embeddings`` wrote, and everything downstream is unchanged.
"""

from pathlib import Path

import dagster as dg
import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import require
from laion_assets.defs.k8s import GPU_POOL, k8s_op_tags
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded, table_metadata
from laion_assets.defs.resources import ClipResource, DownloaderResource, StorageResource, WatermarkResource
from laion_assets.defs.sources.batch import ShardDone, process_shards, shards_result
from laion_assets.defs.sources.partitions import SHARD_BACKFILL_POLICY, shards
from laion_assets.images.downloading import SOURCE_FILE, ShardTimeoutError, download_shard, summarize
from laion_assets.images.image_embeddings import embed_shard
from laion_assets.images.watermark_scores import WatermarkScores
from laion_assets.sources.url_sources import find_url_shard, read_url_shard

STORED_MODE = "stored embeddings (storage.urls is empty): nothing to download or embed"


@dg.asset(
    partitions_def=shards,
    backfill_policy=SHARD_BACKFILL_POLICY,
    group_name="images",
    kinds={"webdataset"},
    owners=OWNERS,
    tags=asset_tags("images", "images"),
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "success_rate",
            asset="images",
            description="Warns when the share of a shard's URLs fetched falls under downloader.min_success_rate.",
        )
    ],
    description="One URL shard downloaded by img2dataset (webdataset tars). Re-materializing retries only the "
    "URLs that failed and keeps what succeeded; a shard with nothing left to fetch is not downloaded again.",
)
def images(
    context: dg.AssetExecutionContext, storage: StorageResource, downloader: DownloaderResource
) -> dg.MaterializeResult:
    """Download the URLs of the run's shards that no earlier attempt fetched (one shard at a time)."""
    keys = context.partition_keys
    if not storage.url_mode:
        return dg.MaterializeResult(
            metadata={"mode": STORED_MODE},
            check_results=[dg.AssetCheckResult(check_name="success_rate", passed=True, metadata={"mode": STORED_MODE})],
        )
    # img2dataset runs its own processes and threads per shard: shards go one after the other.
    done = process_shards(context, "images", keys, lambda key: download_one(storage, downloader, key), 1)
    floor = downloader.min_success_rate
    if len(done) == 1:
        (outcome,) = done.values()
        check = _success_check(outcome.extra["success_rate"], outcome.extra["urls"], outcome.extra["failures"], floor)
        return shards_result(context, done, [check])
    rates = {key: outcome.extra["success_rate"] for key, outcome in done.items()}
    low = sorted(key for key, rate in rates.items() if rate < floor)
    urls = sum(outcome.extra["urls"] for outcome in done.values())
    fetched = sum(outcome.extra["successes"] for outcome in done.values())
    check = dg.AssetCheckResult(
        check_name="success_rate",
        passed=not low,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(low)} of {len(done)} shards under the floor {floor:.0%}"
        + (f" ({', '.join(low[:20])}{' …' if len(low) > 20 else ''})" if low else "")
        + f"; {fetched} of {urls} URLs fetched in all",
        metadata=rounded(
            {
                "floor": floor,
                "shards_under_floor": dg.MetadataValue.json(low),
                "success_rate": dg.MetadataValue.json(rates),
            }
        ),
    )
    return shards_result(context, done, [check])


def _success_check(rate: float, urls: int, failures: int, floor: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="success_rate",
        passed=rate >= floor,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{rate:.1%} of {urls} URLs fetched (floor {floor:.0%})",
        metadata=rounded({"success_rate": rate, "floor": floor, "failures": failures}),
    )


def download_one(storage: StorageResource, downloader: DownloaderResource, key: str) -> ShardDone:
    """Download the URLs of one shard that no earlier attempt fetched."""
    out = storage.layout.images_dir(key)
    storage.pull(out)  # earlier attempts: only what failed there is downloaded again
    shard = find_url_shard(storage.urls_path, key)
    frame = read_url_shard(shard.path, storage.swap_width_height)
    try:
        result = download_shard(frame, shard.path, out, downloader.options())
    except ShardTimeoutError:
        storage.push(out)  # the sub-shards img2dataset finished are kept: a remote root must keep them too
        raise
    storage.push(out)
    message = (
        f"shard {key}: {result.successes}/{result.rows} fetched after {result.attempts} attempt(s), "
        f"{result.downloaded_now} URL(s) tried now"
    )
    metadata: dict = {
        "dagster/row_count": result.successes,
        "urls": result.rows,
        "successes": result.successes,
        "failures": result.failures,
        "success_rate": result.success_rate,
        "attempts": result.attempts,
        "downloaded_now": result.downloaded_now,
        "removed_leftovers": dg.MetadataValue.json([str(p) for p in result.removed_leftovers]),
        "failures_by_reason": dg.MetadataValue.json(result.failures_by_reason),
        "tars": len(result.tars),
        "url_shard": dg.MetadataValue.path(str(shard.path)),
        "path": dg.MetadataValue.path(str(out)),
    }
    if result.last is not None:  # the figures of img2dataset's _stats.json for this attempt
        metadata.update(
            {
                "attempt/count": result.last.count,
                "attempt/successes": result.last.successes,
                "attempt/failed_to_download": result.last.failed_to_download,
                "attempt/failed_to_resize": result.last.failed_to_resize,
                "attempt/duration_s": result.last.duration,
                "attempt/peak_rss_bytes": result.last.peak_rss_bytes,
                "attempt/status": dg.MetadataValue.json(result.last.status),
            }
        )
    extra = {"success_rate": result.success_rate, "urls": result.rows, "successes": result.successes,
             "failures": result.failures}  # fmt: skip
    return ShardDone(rounded(metadata), message, extra=extra)


@dg.asset(
    partitions_def=shards,
    backfill_policy=SHARD_BACKFILL_POLICY,
    deps=[images],
    group_name="images",
    kinds={"pytorch", "numpy", "parquet"},
    pool=GPU_POOL,
    op_tags=k8s_op_tags(GPU_POOL),
    owners=OWNERS,
    tags=asset_tags("images", "embeddings"),
    code_version="1",
    description="CLIP image (and caption) embeddings of a shard's downloaded images in clip-retrieval's layout "
    "(float16, L2-normalised, row-aligned with metadata); undecodable images are skipped and counted. With a "
    "watermark head configured, the same pass over the decoded images scores `pwatermark` (LAION's watermark "
    "detector) into the shard's watermark.parquet.",
)
def image_embeddings(
    context: dg.AssetExecutionContext, storage: StorageResource, clip: ClipResource, watermark: WatermarkResource
) -> dg.MaterializeResult:
    """Embed the run's shards' images with the CLIP resource (loaded once) and write their parts."""
    keys = context.partition_keys
    if not storage.url_mode:
        return dg.MaterializeResult(metadata={"mode": STORED_MODE})
    # The models are the step's one accelerator (pool "gpu"): shards go one after the other through them.
    done = process_shards(context, "image_embeddings", keys, lambda key: embed_one(storage, clip, key, watermark), 1)
    return shards_result(context, done)


WATERMARK_OFF = (
    "off: no watermark head configured (watermark.weights and $LAION_ASSETS_WATERMARK are empty), no "
    "watermark.parquet written; pwatermark comes from the URL shard's own column or LAION's tags"
)


def watermark_metadata(scored: WatermarkScores | None, path: Path) -> dict[str, object]:
    """A shard's watermark figures: the head's identity, rows scored, pwatermark min/mean/max, the model's speed."""
    if scored is None:
        return {"watermark": WATERMARK_OFF}
    return {
        "watermark/head": str(scored.identity),
        "watermark/rows": scored.rows,
        **{f"pwatermark/{stat}": value for stat, value in scored.summary.items()},
        "watermark/images_per_second": scored.images_per_second,
        "watermark/seconds": scored.seconds,
        "watermark/batch_size": scored.batch_size,
        "watermark/oom_halvings": scored.halvings,
        "watermark/path": dg.MetadataValue.path(str(path)),
    }


def embed_one(
    storage: StorageResource, clip: ClipResource, key: str, watermark: WatermarkResource | None = None
) -> ShardDone:
    """Embed one shard's images with the CLIP resource and write its part under ``<data_root>/embedded``.

    With a watermark head, the same pass writes the shard's ``pwatermark`` to its watermark file.
    """
    shard_dir = storage.layout.images_dir(key)
    storage.pull(shard_dir)
    source = require(
        shard_dir / SOURCE_FILE,
        f"images for shard {key}",
        f"run `dagster asset materialize --select images --partition {key}`",
    )
    frame = pl.read_parquet(source)
    downloads = summarize(shard_dir, frame.height)
    loaded = clip.load()
    if loaded.embed_dim != storage.embedding_dim:
        raise BadInputError(
            f"CLIP model {clip.model!r} makes {loaded.embed_dim}-d embeddings but storage.embedding_dim is "
            f"{storage.embedding_dim} (LAION's aesthetic heads read ViT-L/14's 768)"
        )
    head = watermark.load() if watermark is not None and watermark.enabled else None
    watermark_out = storage.layout.shard_watermark(key)
    result = embed_shard(
        downloads.tars,
        frame,
        loaded,
        storage.layout.embedded_dir,
        int(key),
        clip.batch_size,
        clip.num_workers,
        clip.embed_text,
        watermark=head,
        watermark_out=watermark_out,
        watermark_batch_size=watermark.batch_size if watermark is not None else None,
    )
    part = result.part
    written = [part.embeddings, part.metadata, part.text_embeddings, watermark_out if result.watermark else None]
    storage.push(*(p for p in written if p is not None))
    message = (
        f"shard {key}: {result.rows} images embedded, {result.skipped} skipped, "
        f"{result.images_per_second:.1f} images/s on {loaded.device}"
        + (f"; pwatermark by {result.watermark.identity.kind}" if result.watermark else "")
    )
    metadata = {
        "dagster/row_count": result.rows,
        "skipped_images": result.skipped,
        "skipped_reasons": dg.MetadataValue.json(result.skipped_reasons),
        "images_per_second": result.images_per_second,
        "seconds": result.seconds,
        "model": clip.model,
        "pretrained": clip.pretrained,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "batch_size": result.batch_size,
        "oom_halvings": result.halvings,
        "embeddings": dg.MetadataValue.path(str(result.part.embeddings)),
        "metadata": dg.MetadataValue.path(str(result.part.metadata)),
        **watermark_metadata(result.watermark, watermark_out),
        **table_metadata(result.part.metadata),
    }
    return ShardDone(rounded(metadata), message)
