"""Release-level statistics: LAION's bucket embeddings and the score histogram."""

import json

import dagster as dg
import polars as pl

from laion_assets.atomic import atomic_dir, atomic_path
from laion_assets.buckets import N_BUCKETS, BucketAccumulator, accumulate_part, save_buckets
from laion_assets.defs.assets.tags import aesthetic_tags
from laion_assets.defs.errors import as_failure
from laion_assets.defs.partitions import shards
from laion_assets.defs.resources import StorageResource
from laion_assets.embeddings import open_embeddings
from laion_assets.errors import BadInputError
from laion_assets.histogram import LABELS, laion_text, lazy_counts
from laion_assets.histogram_history import changed_columns, comparison_png, previous_for, read_document
from laion_assets.outputs import require
from laion_assets.plots import png_markdown
from laion_assets.shards import read_identities
from laion_assets.tags import scan_tags

SCORE_COLUMNS = ("aesthetic", "AESTHETIC_SCORE")


@dg.asset(
    deps=[aesthetic_tags],
    group_name="stats",
    kinds={"numpy"},
    code_version="1",
    description="LAION's aesthetic bucket embeddings: for k in 0..9 the L2-normalised sum of the embeddings whose "
    "V1 score s has k <= s <= k+1 (both edges inclusive), saved as rating{k}.npy, float32 (1, d).",
)
def bucket_embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Sum embeddings per V1 score bucket over every shard and save the normalised means."""
    layout = storage.layout
    acc = BucketAccumulator(storage.embedding_dim)
    with as_failure():
        for key in sorted(context.instance.get_dynamic_partitions(shards.name)):
            tags_part = require(layout.tags_part(key), f"aesthetic_tags for shard {key}")
            scores = pl.read_parquet(tags_part, columns=["aesthetic"])["aesthetic"].to_numpy()
            embeddings = open_embeddings(storage.part(key).embeddings)
            if embeddings.shape[0] != scores.shape[0]:
                raise BadInputError(
                    f"{storage.part(key).embeddings}: {embeddings.shape[0]} rows but {tags_part} has "
                    f"{scores.shape[0]}; re-materialize the shard"
                )
            accumulate_part(acc, embeddings, scores)
        with atomic_dir(layout.buckets_dir) as tmp:
            save_buckets(acc.vectors(), tmp)
    counts = {f"rating{k}": int(acc.counts[k]) for k in range(N_BUCKETS)}
    empty = [k for k in range(N_BUCKETS) if acc.counts[k] == 0]
    if empty:
        context.log.warning(f"empty buckets {empty}: their rating{{k}}.npy is a zero vector")
    return dg.MaterializeResult(
        metadata={
            "rows_per_bucket": dg.MetadataValue.json(counts),
            "empty_buckets": dg.MetadataValue.json(empty),
            "dim": storage.embedding_dim,
            "path": dg.MetadataValue.path(str(layout.buckets_dir)),
        }
    )


@dg.asset(
    deps=[aesthetic_tags],
    group_name="stats",
    kinds={"json"},
    code_version="1",
    description="Ten integer score buckets '0-1' … '9-10' for each predictor, as counts and as LAION printed them "
    "({'0-1': '2.66M', …}).",
)
def score_histogram(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Count the tags table's V1 and V2 scores per integer bucket."""
    layout = storage.layout
    with as_failure():
        tags = scan_tags(layout)
        counts = {column: lazy_counts(tags, column) for column in SCORE_COLUMNS}
        first_part = min(layout.tags_dir.glob("part-*.parquet"))
        identities = {c: str(i) for c, i in read_identities(first_part).items()}
    text = {column: laion_text(c) for column, c in counts.items()}
    # Keep the histogram of the previous predictors so the plot shows before/after a change (issue 4).
    previous = previous_for(read_document(layout.histogram_path), identities)
    document = {"counts": counts, "laion": text, "identities": identities, "previous": previous}
    png = comparison_png(counts, identities, previous, LABELS)
    plot = layout.histogram_path.with_suffix(".png")
    with atomic_path(plot) as tmp:
        tmp.write_bytes(png)
    with atomic_path(layout.histogram_path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    for column, line in text.items():
        context.log.info(f"{column}: {line}")
    return dg.MaterializeResult(
        metadata={
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
