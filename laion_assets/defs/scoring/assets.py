"""``aesthetic_scores``: shards' stored embeddings scored with the active heads (aesthetic, NSFW), many per run."""

from pathlib import Path

import dagster as dg
import polars as pl

from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, V1_RANGE, asset_tags, rounded, table_metadata
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.assets import ShardRunConfig, clip_embeddings, missing_part, shows_preview
from laion_assets.defs.sources.batch import ShardDone, process_shards, shards_result
from laion_assets.defs.sources.partitions import SHARD_BACKFILL_POLICY, shards
from laion_assets.scoring.parts import ScoredPart, score_part
from laion_assets.scoring.predictors import Predictor
from laion_assets.selection.gating import scores_current
from laion_assets.selection.tags import shard_hint
from laion_assets.sources.layout import Part


def score_shard(
    storage: StorageResource,
    parts: dict[str, Part],
    predictors: dict[str, Predictor],
    key: str,
    redo: bool,
    preview: bool = True,
) -> ShardDone:
    """Score one shard, or keep its scores when the active predictors made them from its current validation."""
    layout = storage.layout
    part = parts.get(key)
    if part is None:
        raise missing_part(storage, key)
    storage.pull(layout.shard_metadata(key), layout.shard_scores(key))
    indexed = layout.require(layout.shard_metadata(key), f"clip_embeddings for shard {key}", shard_hint(key))
    identities = {column: p.identity for column, p in predictors.items()}
    if not redo and scores_current(key, layout, part, storage.shard_settings, identities):
        kept = kept_scores(key, layout.shard_scores(key), identities)
        metadata = {**scores_metadata(kept, layout.shard_scores(key), preview), "up_to_date": True}
        message = f"shard {key}: already scored by the active predictors from its current validation: kept"
        return ShardDone(metadata, message, scores_version(kept).value, skipped=True)
    scored = score_part(part, indexed, predictors, layout.shard_scores(key))
    storage.push(layout.shard_scores(key))
    message = f"shard {key}: {scored.rows} rows scored"
    metadata = scores_metadata(scored, layout.shard_scores(key), preview)
    return ShardDone(metadata, message, scores_version(scored).value)


def kept_scores(key: str, path: Path, identities: dict) -> ScoredPart:
    """What a current scores file holds, as scoring it again would report it (rows, predictors, min/mean/max)."""
    frame = pl.read_parquet(path, columns=list(identities))
    summary = {
        column: {"min": float(s.min()), "mean": float(s.mean()), "max": float(s.max())} if s.len() else {}  # type: ignore[arg-type]
        for column, s in ((c, frame[c]) for c in identities)
    }
    return ScoredPart(key, frame.height, dict(identities), summary)


@dg.asset(
    partitions_def=shards,
    backfill_policy=SHARD_BACKFILL_POLICY,
    deps=[clip_embeddings],
    group_name="shards",
    kinds={"pytorch", "parquet"},
    owners=OWNERS,
    tags=asset_tags("scoring", "scores"),
    code_version="1",
    description="V1 (`aesthetic`) and V2 (`AESTHETIC_SCORE`) scores of every row of a shard and, when "
    "predictors.yaml configures it, `punsafe` (LAION's CLIP-based NSFW detector on the same embedding), float32, "
    "with the identity (kind + sha256) of the predictor that made each column. A run may hold many shards: the "
    "predictors "
    "load once, shards are scored storage.workers at a time, and a shard already scored by the active predictors "
    f"from its current validation is kept (config `redo: true` scores it again). {V1_RANGE}",
)
def aesthetic_scores(
    context: dg.AssetExecutionContext, config: ShardRunConfig, storage: StorageResource, predictors: PredictorsResource
) -> dg.MaterializeResult:
    """Score the run's shards' stored embeddings with the active predictors, loaded once."""
    keys = context.partition_keys
    step = "aesthetic_scores"
    with as_failure(f"{step} (shard {keys[0]})" if len(keys) == 1 else step):
        loaded = predictors.load(storage.embedding_dim)
        parts, workers = storage.parts(keys), storage.shard_workers
    done = process_shards(
        context,
        step,
        keys,
        lambda key: score_shard(storage, parts, loaded, key, config.redo, shows_preview(keys, key)),
        workers,
    )
    return shards_result(context, done)


def scores_metadata(scored: ScoredPart, path: Path, preview: bool = True) -> dict[str, object]:
    """Metadata of one shard's scores: rows, path, per column its predictor and score summary; schema and preview."""
    metadata: dict[str, object] = {"dagster/row_count": scored.rows, "path": dg.MetadataValue.path(str(path))}
    for column, identity in scored.identities.items():
        metadata[f"predictor/{column}"] = str(identity)
        for stat, value in scored.summary[column].items():
            metadata[f"{column}/{stat}"] = value
    return rounded({**metadata, **(table_metadata(path) if preview else {})})


def scores_version(scored: ScoredPart) -> dg.DataVersion:
    """The data version of a shard's scores: which predictors made them (shown per partition in the UI)."""
    return dg.DataVersion(",".join(f"{c}={i.kind}@{i.sha256[:12]}" for c, i in sorted(scored.identities.items())))
