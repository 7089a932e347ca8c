"""Release-level statistics: LAION's bucket embeddings and the score histogram."""

import dagster as dg

from laion_assets.core.atomic import atomic_path
from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, V1_RANGE, asset_tags, rounded
from laion_assets.defs.resources import ReleaseResource, StorageResource
from laion_assets.defs.selection.gate import gate_tags_parts
from laion_assets.defs.selection.tags import aesthetic_tags
from laion_assets.release.plots import comparison_png, png_markdown
from laion_assets.release.rebuild import build_buckets
from laion_assets.scoring.parts import read_identities
from laion_assets.selection.buckets import N_BUCKETS
from laion_assets.selection.histogram import LABELS, histogram_document, write_histogram
from laion_assets.selection.histogram_history import changed_columns, previous_for, read_document
from laion_assets.selection.tags import built_from_path, recorded_ids, scan_tags, tag_files, write_built_from

SCORE_COLUMNS = ("aesthetic", "AESTHETIC_SCORE")


@dg.asset(
    deps=[aesthetic_tags],
    group_name="stats",
    kinds={"numpy"},
    owners=OWNERS,
    tags=asset_tags("selection", "stats"),
    code_version="1",
    description="LAION's aesthetic bucket embeddings: for k in 0..9 the L2-normalised sum of the embeddings whose "
    "V1 score s has k <= s <= k+1 (both edges inclusive; rows scored below 0 or above 10 are in no bucket), saved "
    "as rating{k}.npy, float32 (1, d). Reads only parts still identical to what clip_embeddings validated. "
    f"{V1_RANGE}",
)
def bucket_embeddings(
    context: dg.AssetExecutionContext, storage: StorageResource, release_config: ReleaseResource
) -> dg.MaterializeResult:
    """Sum embeddings per V1 score bucket over every released shard and save the normalised means."""
    layout = storage.layout
    with as_failure("bucket_embeddings"):
        validations, parts = gate_tags_parts(context.instance, storage, release_config, "bucket_embeddings")
        per_bucket = build_buckets(layout, parts, storage.embedding_dim, validations)
        storage.push(layout.buckets_dir)
    counts = {f"rating{k}": int(per_bucket[k]) for k in range(N_BUCKETS)}
    empty = [k for k in range(N_BUCKETS) if per_bucket[k] == 0]
    if empty:
        context.log.warning(f"empty buckets {empty}: their rating{{k}}.npy is a zero vector")
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "rows_per_bucket": dg.MetadataValue.json(counts),
                "empty_buckets": dg.MetadataValue.json(empty),
                "dim": storage.embedding_dim,
                "path": dg.MetadataValue.path(str(layout.buckets_dir)),
            }
        )
    )


@dg.asset(
    deps=[aesthetic_tags],
    group_name="stats",
    kinds={"json"},
    owners=OWNERS,
    tags=asset_tags("selection", "stats"),
    code_version="1",
    description="Ten integer score buckets '0-1' … '9-10' for each predictor, as counts and as LAION printed them "
    "({'0-1': '2.66M', …}); a score below 0 counts in '0-1' and one of 10 or more in '9-10', so every row counts "
    f"once. {V1_RANGE}",
)
def score_histogram(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Count the tags table's V1 and V2 scores per integer bucket."""
    layout = storage.layout
    with as_failure("score_histogram"):
        storage.pull(layout.tags_dir)
        tags = scan_tags(layout)
        document = histogram_document(tags, SCORE_COLUMNS)
        first_part = min(layout.tags_dir.glob("part-*.parquet"))
        identities = {c: str(i) for c, i in read_identities(first_part).items()}
        storage.pull(layout.histogram_history_path)
        counts, text = document["counts"], document["laion"]
        # The released histogram is a pure function of the tags; the "before" of a predictor change is kept apart
        # (not released) so that a rebuild from the same inputs stays byte-identical.
        previous = previous_for(read_document(layout.histogram_history_path), identities)
        png = comparison_png(counts, identities, previous, LABELS)
        plot = layout.histogram_path.with_suffix(".png")
        with atomic_path(plot) as tmp:
            tmp.write_bytes(png)
        write_histogram(document, layout.histogram_path)
        record = built_from_path(layout.histogram_path)
        write_built_from(record, recorded_ids(tag_files(layout)))  # after the file it describes
        history = {"counts": counts, "identities": identities, "previous": previous}
        write_histogram(history, layout.histogram_history_path)
        storage.push(layout.histogram_path, record, layout.histogram_history_path, plot)
    for column, line in text.items():
        context.log.info(f"{column}: {line}")
    return dg.MaterializeResult(
        metadata=rounded(
            {
                **{f"{column}/laion": line for column, line in text.items()},
                **{f"{column}/counts": dg.MetadataValue.json(c) for column, c in counts.items()},
                "dagster/row_count": sum(counts["aesthetic"].values()),
                "path": dg.MetadataValue.path(str(layout.histogram_path)),
                **{f"predictor/{c}": i for c, i in identities.items()},
                "predictor_changed": dg.MetadataValue.json(changed_columns(previous, identities)),
                "plot": dg.MetadataValue.md(png_markdown(png, "score histogram")),
                "plot_path": dg.MetadataValue.path(str(plot)),
            }
        )
    )
