"""``aesthetic_tags``: every shard's metadata joined with its hash and scores, and its checks."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import (
    OWNERS,
    PREVIEW_ROWS,
    V1_RANGE,
    asset_tags,
    frame_metadata,
    rounded,
    table_metadata,
)
from laion_assets.defs.resources import ReleaseResource, StorageResource
from laion_assets.defs.scoring.assets import aesthetic_scores
from laion_assets.defs.scoring.rescore import rescored_shards
from laion_assets.defs.selection.gate import gate, released_keys
from laion_assets.selection.audit import audit_tags
from laion_assets.selection.tags import TABLE_FILE, build_tags, scan_tags, tag_files
from laion_assets.sources.indexing import read_validation
from laion_assets.sources.safety import INDEX_FILES, SafetyIndex, build_safety_index, check_safety_current


def safety_head(folder: Path) -> pl.DataFrame:
    """The first rows of the safety index's row-aligned npy columns (memory-mapped: nothing else is read)."""
    return pl.DataFrame(
        {name.removesuffix(".npy"): np.load(folder / name, mmap_mode="r")[:PREVIEW_ROWS] for name in INDEX_FILES}
    )


@dg.asset(
    group_name="tags",
    kinds={"numpy"},
    owners=OWNERS,
    tags=asset_tags("selection", "tags"),
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
    with as_failure("safety_tags"):
        summary = build_safety_index(source, folder)
    storage.push(folder)
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "source": str(source),
                "files": summary.files,
                "rows_read": summary.rows_read,
                "dagster/row_count": summary.unique_hashes,
                "duplicate_rows_dropped": summary.rows_read - summary.unique_hashes,
                "pwatermark_filled_with_0.5": summary.pwatermark_filled,
                "path": dg.MetadataValue.path(str(folder)),
                **frame_metadata(safety_head(folder)),
            }
        )
    )


@dg.asset(
    deps=[aesthetic_scores, safety_tags, rescored_shards],
    group_name="tags",
    kinds={"parquet"},
    owners=OWNERS,
    tags=asset_tags("selection", "tags"),
    code_version="3",
    description="LAION's aesthetic-tags table: metadata, hash, `aesthetic` (V1) and `AESTHETIC_SCORE` (V2) for "
    "every row of every released shard, one parquet per shard, with `punsafe`/`pwatermark` provided by LAION or "
    "computed by our heads as storage.punsafe_from/pwatermark_from say (each row records which); "
    "a rebuild rewrites only the parts whose shard, "
    "predictors or safety table changed (tags/_table.json names the table and its parts). Stops, naming the "
    "shards, when a registered shard is not validated and scored, its latest shard run failed, or its source "
    "changed since validation (unless "
    f"release_config.exclude_shards leaves it out). {V1_RANGE}",
)
def aesthetic_tags(
    context: dg.AssetExecutionContext, storage: StorageResource, release_config: ReleaseResource
) -> dg.MaterializeResult:
    """Fan in all released shards' metadata and scores into the tags table."""
    layout = storage.layout
    with as_failure("aesthetic_tags"):
        validations = gate(context.instance, storage, release_config, "aesthetic_tags")
        safety = None
        if storage.safety_path is not None:
            storage.pull(layout.safety_dir)
            safety = SafetyIndex.open(layout.safety_dir)
        # The joined table must be the one safety_tags indexed: a table changed since stops the run.
        safety_id = check_safety_current(storage.safety_path, layout.safety_dir)
        # The previous table's record says which parts can be carried over; only those parts are pulled.
        storage.pull(layout.tags_dir / TABLE_FILE)
        summary = build_tags(validations, layout, safety, safety_id, fetch=storage.pull, sources=storage.safety_sources)
        mirror = storage.mirror
        if mirror is not None:  # a remote data root gets the rewritten parts and the record, not the whole table
            written = [layout.tags_part(key).name for key in summary.rewritten]
            uploaded = mirror.push_changes(layout.tags_dir, written, TABLE_FILE)
            context.log.info(f"pushed {len(uploaded)} file(s) of aesthetic_tags to {storage.data_root_value}")
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
    if release_config.exclude_shards:
        context.log.warning(f"shards left out of the release by configuration: {release_config.exclude_shards}")
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "dagster/row_count": summary.rows,
                "shards": len(validations),
                "table_id": summary.table_id,
                # A rebuild writes only the parts whose shard changed (validation, scores, safety table).
                "parts_rewritten": len(summary.rewritten),
                "parts_kept": len(summary.kept),
                "parts_removed": len(summary.removed),
                "rewritten_shards": dg.MetadataValue.json(list(summary.rewritten)),
                "excluded_shards": dg.MetadataValue.json(sorted(release_config.exclude_shards)),
                "rows_without_safety_tags": summary.without_safety_tags,
                "rows_without_url": summary.without_url,
                "rows_without_caption": summary.without_caption,
                "duplicate_rows": summary.duplicate_rows,
                "duplicate_rows_within_shards": summary.duplicate_rows_within_shards,
                "duplicate_rows_across_shards": summary.duplicate_rows - summary.duplicate_rows_within_shards,
                "declared_language": storage.language or "(none)",
                "safety_source": str(storage.safety_path or "embeddings metadata"),
                # Where punsafe/pwatermark came from: configured per column, and rows per origin.
                **{f"{c}_from": s for c, s in storage.safety_sources.as_dict().items()},
                **{f"rows/{name}": n for name, n in summary.origins.items()},
                "per_shard": dg.MetadataValue.json(summary.per_shard),
                **{f"predictor/{c}": i for c, i in summary.identities.items()},
                **{name: float(stats[name].item()) for name in stats.columns if stats[name].item() is not None},
                "path": dg.MetadataValue.path(str(storage.layout.tags_dir)),
                # Every part has the same columns: the first one's footer and rows stand for the table.
                **table_metadata(tag_files(storage.layout)[0]),
            }
        )
    )


@dg.asset_check(asset=aesthetic_tags, blocking=True, description="Every V1 and V2 score in the tags table is finite.")
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
    asset=aesthetic_tags,
    blocking=True,
    description="aesthetic_tags holds every released shard with exactly the rows clip_embeddings validated for it "
    "(and so the sum of the released shards' rows), and no other shard.",
)
def row_counts_conserved(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, release_config: ReleaseResource
) -> dg.AssetCheckResult:
    """Compare each tags part's rows with the rows recorded when its shard was validated (read apart from the tags)."""
    layout = storage.layout
    storage.pull(layout.tags_dir)
    with as_failure("row_counts_conserved"):
        keys = released_keys(context.instance, storage, release_config)
        validated: dict[str, int] = {}
        unvalidated: dict[str, str] = {}
        for key in keys:
            storage.pull(layout.shard_metadata(key))
            try:
                validated[key] = read_validation(layout.shard_metadata(key)).rows
            except (BadInputError, OSError) as exc:
                unvalidated[key] = f"not validated: {exc}"
    result = audit_tags(layout.tags_dir, validated)
    problems = {**result.problems, **unvalidated}
    return dg.AssetCheckResult(
        passed=not problems,
        description=None if not problems else f"{len(problems)} shard(s) differ: {problems}"[:2000],
        metadata={
            "validated_rows": result.expected_rows,
            "tag_rows": result.actual_rows,
            "shards": len(keys),
            "problems": dg.MetadataValue.json(problems),
        },
    )
