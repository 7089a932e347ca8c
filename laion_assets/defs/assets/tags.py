"""``aesthetic_tags``: every shard's metadata joined with its hash and scores, and its checks."""

import dagster as dg
import numpy as np
import polars as pl

from laion_assets.defs.assets.rescore import rescored_shards
from laion_assets.defs.assets.shards import aesthetic_scores
from laion_assets.defs.errors import as_failure
from laion_assets.defs.partitions import shards
from laion_assets.defs.resources import StorageResource
from laion_assets.locations import parquet_rows
from laion_assets.safety import SafetyIndex, build_safety_index
from laion_assets.tags import build_tags, scan_tags


@dg.asset(
    group_name="tags",
    kinds={"numpy"},
    code_version="1",
    description="LAION's separate safety tags (punsafe, pwatermark by hash), de-duplicated by hash, missing "
    "pwatermark filled with 0.5, sorted for binary search. Empty when the embeddings' metadata carries them.",
)
def safety_tags(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Index the optional safety table named by the `safety` setting."""
    source = storage.safety_path
    if source is None:
        context.log.info("no separate safety table configured: punsafe/pwatermark come from the metadata")
        return dg.MaterializeResult(metadata={"source": "embeddings metadata (no separate safety table)"})
    folder = storage.layout.safety_dir
    with as_failure():
        summary = build_safety_index(source, folder)
    storage.push(folder)
    return dg.MaterializeResult(
        metadata={
            "source": str(source),
            "files": summary.files,
            "rows_read": summary.rows_read,
            "dagster/row_count": summary.unique_hashes,
            "duplicate_rows_dropped": summary.rows_read - summary.unique_hashes,
            "pwatermark_filled_with_0.5": summary.pwatermark_filled,
            "path": dg.MetadataValue.path(str(folder)),
        }
    )


@dg.asset(
    deps=[aesthetic_scores, safety_tags, rescored_shards],
    group_name="tags",
    kinds={"parquet"},
    code_version="1",
    description="LAION's aesthetic-tags table: metadata, hash, `aesthetic` (V1) and `AESTHETIC_SCORE` (V2) for "
    "every row of every registered shard, one parquet per shard.",
)
def aesthetic_tags(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Fan in all shards' metadata and scores into the tags table."""
    keys = sorted(context.instance.get_dynamic_partitions(shards.name))
    layout = storage.layout
    with as_failure():
        storage.pull(*(p for key in keys for p in (layout.shard_metadata(key), layout.shard_scores(key))))
        safety = None
        if storage.safety_path is not None:
            storage.pull(layout.safety_dir)
            safety = SafetyIndex.open(layout.safety_dir)
        summary = build_tags(keys, layout, safety)
    storage.push(layout.tags_dir)
    stats = (
        scan_tags(storage.layout)
        .select(
            pl.col("aesthetic").min().alias("aesthetic/min"),
            pl.col("aesthetic").mean().alias("aesthetic/mean"),
            pl.col("aesthetic").max().alias("aesthetic/max"),
            pl.col("AESTHETIC_SCORE").min().alias("AESTHETIC_SCORE/min"),
            pl.col("AESTHETIC_SCORE").mean().alias("AESTHETIC_SCORE/mean"),
            pl.col("AESTHETIC_SCORE").max().alias("AESTHETIC_SCORE/max"),
        )
        .collect()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.rows,
            "shards": len(keys),
            "rows_without_safety_tags": summary.without_safety_tags,
            "safety_source": str(storage.safety_path or "embeddings metadata"),
            "per_shard": dg.MetadataValue.json(summary.per_shard),
            **{f"predictor/{c}": i for c, i in summary.identities.items()},
            **{name: float(stats[name].item()) for name in stats.columns},
            "path": dg.MetadataValue.path(str(storage.layout.tags_dir)),
        }
    )


@dg.asset_check(asset=aesthetic_tags, description="Every V1 and V2 score in the tags table is finite.")
def scores_finite(storage: StorageResource) -> dg.AssetCheckResult:
    """Count NaN, Inf and null scores in the tags table."""
    storage.pull(storage.layout.tags_dir)
    bad = (
        scan_tags(storage.layout)
        .select(
            (~pl.col("aesthetic").is_finite()).fill_null(True).sum().alias("aesthetic"),
            (~pl.col("AESTHETIC_SCORE").is_finite()).fill_null(True).sum().alias("AESTHETIC_SCORE"),
        )
        .collect()
    )
    counts = {c: int(bad[c].item()) for c in bad.columns}
    return dg.AssetCheckResult(
        passed=not any(counts.values()), metadata={f"non_finite/{c}": n for c, n in counts.items()}
    )


@dg.asset_check(
    asset=aesthetic_tags, description="Row counts are conserved from metadata to scores to tags, shard by shard."
)
def row_counts_conserved(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """Compare each shard's row counts across the source metadata, the scores file and the tags part."""
    layout = storage.layout
    mismatched: dict[str, list[int]] = {}
    total = np.zeros(3, dtype=np.int64)
    storage.pull(layout.tags_dir)
    for key in sorted(context.instance.get_dynamic_partitions(shards.name)):
        storage.pull(layout.shard_scores(key))
        paths = (storage.part(key).metadata, layout.shard_scores(key), layout.tags_part(key))
        counts = [parquet_rows(p) if p.exists() else -1 for p in paths]
        total += counts
        if len(set(counts)) != 1:
            mismatched[key] = counts
    return dg.AssetCheckResult(
        passed=not mismatched,
        metadata={
            "metadata_rows": int(total[0]),
            "score_rows": int(total[1]),
            "tag_rows": int(total[2]),
            "mismatched_shards": dg.MetadataValue.json(mismatched),
        },
    )
