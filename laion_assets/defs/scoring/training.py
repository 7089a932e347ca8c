"""``aesthetic_predictor_trained``: LAION's V2 recipe trained on new ratings, saved as a V2-compatible predictor."""

import json

import dagster as dg

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import resolve
from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, asset_tags, rounded
from laion_assets.defs.resources import StorageResource
from laion_assets.release.plots import png_markdown, predicted_vs_true
from laion_assets.scoring.predictors import V2_MLP_LINEAR, load_for_column, weights_sha256
from laion_assets.scoring.training import (
    RatingsTable,
    TrainConfig,
    ratings_from_parquet,
    ratings_from_sac,
    save_predictor,
    train_v2,
)

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class TrainingConfig(dg.Config):
    """Where the ratings are and the recipe (LAION's V2 defaults)."""

    ratings: str = "data/ratings/ratings.parquet"
    embedding_column: str = "embedding"
    rating_column: str = "rating"
    sac_embeddings: str = ""
    sac_keys: str = ""
    sac_key_column: str = "path"
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.05
    seed: int = 0
    threads: int = 0  # torch threads while training; 0 keeps torch's default


def load_ratings(config: TrainingConfig) -> RatingsTable:
    """Read the ratings table: SAC's sqlite (with its embeddings npy + image-path parquet) or a parquet."""
    path = resolve(config.ratings)
    if path.suffix in SQLITE_SUFFIXES:
        if not (config.sac_embeddings and config.sac_keys):
            raise BadInputError(
                f"{path}: a SAC database needs sac_embeddings (.npy) and sac_keys (parquet of image paths) beside it"
            )
        return ratings_from_sac(path, resolve(config.sac_embeddings), resolve(config.sac_keys), config.sac_key_column)
    return ratings_from_parquet(path, config.embedding_column, config.rating_column)


@dg.asset(
    group_name="predictors",
    kinds={"pytorch"},
    owners=OWNERS,
    tags=asset_tags("scoring", "predictor"),
    code_version="2",
    description="A V2 aesthetic predictor (LAION's MLP, MSE, Adam 1e-3, batch 256, 50 epochs, last 5% validation, "
    "best checkpoint) trained on a ratings table. Apart from the shard graph on purpose: a trained predictor scores "
    "nothing until a person accepts it. `laion-assets activate AESTHETIC_SCORE PATH` (PATH is in this asset's "
    "`activate` metadata) makes it the active V2 predictor in predictors.yaml; the `rescore` job "
    "(`rescored_shards`) then re-scores only the shards it outdates and rebuilds the tags and everything after.",
)
def aesthetic_predictor_trained(
    context: dg.AssetExecutionContext, config: TrainingConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Train the V2 MLP on the configured ratings and save the best checkpoint under the data root."""
    recipe = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        val_fraction=config.val_fraction,
        seed=config.seed,
        kind=V2_MLP_LINEAR,
        threads=config.threads or None,
    )
    folder = storage.layout.root / "predictors"
    with as_failure():
        table = load_ratings(config)
        context.log.info(f"training on {len(table)} rated rows from {table.source}")
        result = train_v2(table, recipe)
        # Named by the identity digest (the tensors), so retraining to the same weights rewrites the same file.
        digest = weights_sha256(result.state_dict)
        weights = save_predictor(result.state_dict, folder / f"aesthetic_predictor_trained-{digest[:12]}.pth")
        # Proves it loads back as a head that fits AESTHETIC_SCORE (V2 kind, finite weights).
        identity = load_for_column(weights, "AESTHETIC_SCORE", table.embeddings.shape[1]).identity
    png = predicted_vs_true(
        result.val_true, result.val_pred, f"validation: {result.val_rows} rows, MSE {result.val_mse:.4f}"
    )
    plot = weights.with_suffix(".png")
    with atomic_path(plot) as tmp:
        tmp.write_bytes(png)
    report = {"identity": str(identity), "val_mse": result.val_mse, "val_mae": result.val_mae,
              "spearman": result.spearman, "best_epoch": result.best_epoch, "history": result.history}  # fmt: skip
    with atomic_path(weights.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    context.log.info(f"val MSE {result.val_mse:.4f}, MAE {result.val_mae:.4f}, Spearman {result.spearman:.4f}")
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "val_mse": result.val_mse,
                "val_mae": result.val_mae,
                "val_spearman": result.spearman,
                "best_epoch": result.best_epoch,
                "train_rows": result.train_rows,
                "val_rows": result.val_rows,
                "predictor": str(identity),
                "path": dg.MetadataValue.path(str(weights)),
                "plot_path": dg.MetadataValue.path(str(plot)),
                "predicted_vs_true": dg.MetadataValue.md(png_markdown(png, "predicted vs true")),
                "activate": dg.MetadataValue.md(f"`laion-assets activate AESTHETIC_SCORE {weights}`"),
                "ratings": table.source,
            }
        )
    )
