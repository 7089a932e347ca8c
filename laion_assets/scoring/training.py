"""Training an aesthetic predictor with LAION's V2 recipe from a table of (embedding, mean rating).

The recipe of improved-aesthetic-predictor's ``train_predictor.py``: the V2 MLP, MSE loss, Adam lr 1e-3, batch
256, 50 epochs, the last 5% of the rows (in table order) held out for validation, and the checkpoint with the
best validation MSE kept; L1 is the second metric. Ratings come from SAC's sqlite database (``AVG(rating)`` per
image, joined with the images' embeddings) or from a parquet of embeddings and ratings (AVA-style).
"""

from __future__ import annotations

import copy
import io
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError
from laion_assets.scoring.predictors import V2_MLP_LINEAR, v2_module
from laion_assets.sources.embeddings import l2_normalize, open_embeddings

if TYPE_CHECKING:  # torch is imported where it is used: loading the definitions must not pay for it
    import torch
    from torch import nn

# SAC's tables: generations (prompts) -> images (one row per generated image) -> paths (file per image);
# ratings holds one row per (rater, image). LAION trained on the mean rating per image.
SAC_MEAN_RATINGS = """
SELECT images.id AS iid, paths.path AS path, AVG(ratings.rating) AS rating, COUNT(ratings.rating) AS n_ratings
FROM images
JOIN ratings ON ratings.iid = images.id
JOIN paths ON paths.iid = images.id
GROUP BY images.id
ORDER BY images.id
"""


@dataclass(frozen=True)
class RatingsTable:
    """Unit-norm float32 embeddings (n, d) and their mean ratings (n,), in training order."""

    embeddings: np.ndarray
    ratings: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.ratings.shape[0])


def _checked(embeddings: np.ndarray, ratings: np.ndarray, source: str) -> RatingsTable:
    embeddings = np.asarray(embeddings, dtype=np.float32)
    ratings = np.asarray(ratings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != ratings.shape[0]:
        raise BadInputError(f"{source}: {embeddings.shape} embeddings do not pair with {ratings.shape[0]} ratings")
    if len(ratings) < 2:
        raise BadInputError(f"{source}: {len(ratings)} rated rows; training needs at least 2")
    bad_rows = ~np.isfinite(embeddings).all(axis=1) | ~np.isfinite(ratings)
    if bad_rows.any():
        raise BadInputError(f"{source}: row {int(np.argmax(bad_rows))} has a non-finite embedding or rating")
    return RatingsTable(l2_normalize(embeddings).astype(np.float32), ratings, source)


def ratings_from_parquet(
    path: str | Path, embedding_column: str = "embedding", rating_column: str = "rating"
) -> RatingsTable:
    """Read a parquet with a list-of-floats embedding column and a mean-rating column (AVA-style)."""
    path = Path(path)
    try:
        frame = pl.read_parquet(path, columns=[embedding_column, rating_column])
    except Exception as exc:  # polars raises several types for missing files/columns
        raise BadInputError(f"{path}: cannot read columns {embedding_column!r}, {rating_column!r}: {exc}") from exc
    for column in (embedding_column, rating_column):
        missing = frame[column].is_null()
        if missing.any():
            raise BadInputError(f"{path}: row {int(missing.arg_max())} has no {column!r}")
    try:
        embeddings = np.stack(frame[embedding_column].to_numpy())
    except ValueError as exc:
        raise BadInputError(f"{path}: {embedding_column!r} rows do not all have the same width: {exc}") from exc
    return _checked(embeddings, frame[rating_column].cast(pl.Float64).to_numpy(), str(path))


def sac_mean_ratings(db_path: str | Path) -> pl.DataFrame:
    """Mean rating per image from SAC's sqlite schema: columns ``iid, path, rating, n_ratings``."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise BadInputError(f"{db_path}: SAC ratings database not found")
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            rows = conn.execute(SAC_MEAN_RATINGS).fetchall()
    except sqlite3.Error as exc:
        raise BadInputError(f"{db_path}: not a SAC database (tables images, ratings, paths): {exc}") from exc
    schema = {"iid": pl.Int64, "path": pl.String, "rating": pl.Float64, "n_ratings": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def ratings_from_sac(
    db_path: str | Path, embeddings_npy: str | Path, keys_parquet: str | Path, key_column: str = "path"
) -> RatingsTable:
    """Join SAC's mean ratings with image embeddings stored as an .npy row-aligned with a parquet of image paths."""
    means = sac_mean_ratings(db_path)
    if means.is_empty():
        raise BadInputError(f"{db_path}: no rated image (ratings joined with images and paths is empty)")
    array = open_embeddings(embeddings_npy)
    try:
        keys = pl.read_parquet(keys_parquet, columns=[key_column])[key_column].cast(pl.String)
    except Exception as exc:  # polars raises several types for missing files/columns
        raise BadInputError(f"{keys_parquet}: cannot read column {key_column!r}: {exc}") from exc
    if keys.len() != array.shape[0]:
        raise BadInputError(f"{keys_parquet}: {keys.len()} keys but {embeddings_npy} has {array.shape[0]} rows")
    if keys.n_unique() != keys.len():
        raise BadInputError(f"{keys_parquet}: {key_column!r} has duplicate image paths")
    index = pl.DataFrame({"path": keys, "row": np.arange(keys.len())})
    joined = means.join(index, on="path", how="left")
    missing = joined.filter(pl.col("row").is_null())
    if missing.height:
        raise BadInputError(
            f"{keys_parquet}: {missing.height} rated image(s) have no embedding, e.g. {missing['path'][0]!r} "
            f"(image id {missing['iid'][0]})"
        )
    rows = joined["row"].to_numpy()
    return _checked(np.asarray(array[rows]), joined["rating"].to_numpy(), f"{db_path} + {embeddings_npy}")


@dataclass(frozen=True)
class TrainConfig:
    """LAION's V2 recipe; tests shrink epochs, nothing else."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.05
    seed: int = 0
    kind: str = V2_MLP_LINEAR
    threads: int | None = None  # torch intra-op threads while training; None keeps torch's setting


@dataclass
class TrainResult:
    """The best checkpoint and how it does on the validation rows."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    val_mse: float
    val_mae: float
    spearman: float
    train_rows: int
    val_rows: int
    val_true: np.ndarray
    val_pred: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties get their average rank); NaN when either side is constant."""
    ra = pl.Series(np.asarray(a, dtype=np.float64)).rank("average").to_numpy()
    rb = pl.Series(np.asarray(b, dtype=np.float64)).rank("average").to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def split(n: int, val_fraction: float) -> int:
    """Index where validation starts: the last ``val_fraction`` of the rows (at least one row each side)."""
    if not 0 < val_fraction < 1:
        raise BadInputError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    return min(max(int(round(n * (1 - val_fraction))), 1), n - 1)


def _predict(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch])[:, 0] for i in range(0, len(x), batch)])


def train_v2(table: RatingsTable, config: TrainConfig = TrainConfig()) -> TrainResult:
    """Train the V2 MLP on ``table`` and return the best-validation-MSE checkpoint with its metrics."""
    import torch

    if config.threads is None:
        return _train(table, config)
    # Small batches gain nothing from many threads, and on a shared machine they lose a lot.
    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(table, config)
    finally:
        torch.set_num_threads(before)


def _train(table: RatingsTable, config: TrainConfig) -> TrainResult:
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    border = split(len(table), config.val_fraction)
    x = torch.from_numpy(table.embeddings)
    y = torch.from_numpy(table.ratings)
    x_train, y_train, x_val, y_val = x[:border], y[:border], x[border:], y[border:]
    model = v2_module(config.kind, table.embeddings.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    best, best_state, best_epoch, history = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(border, generator=generator)
        losses = []
        for i in range(0, border, config.batch_size):
            idx = order[i : i + config.batch_size]
            optimizer.zero_grad()
            loss = mse(model(x_train[idx])[:, 0], y_train[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.detach().item())
        pred = _predict(model, x_val)
        val_mse, val_mae = float(mse(pred, y_val)), float(l1(pred, y_val))
        history.append({"epoch": epoch, "train_mse": float(np.mean(losses)), "val_mse": val_mse, "val_mae": val_mae})
        if val_mse < best:
            best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    pred = _predict(model, x_val).numpy()
    truth = y_val.numpy()
    return TrainResult(
        state_dict={f"layers.{k}": v.detach().clone() for k, v in best_state.items()},
        best_epoch=best_epoch,
        val_mse=float(np.mean((pred - truth) ** 2)),
        val_mae=float(np.mean(np.abs(pred - truth))),
        spearman=spearman(pred, truth),
        train_rows=border,
        val_rows=len(table) - border,
        val_true=truth,
        val_pred=pred,
        history=history,
    )


def predictor_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """The bytes ``torch.save`` writes for a state_dict, independent of where they end up.

    Saving into memory names the archive's records ``archive/...`` instead of after the (temporary) file, so the
    same tensors give the same bytes: a retrained predictor with identical weights is an identical file.
    """
    import torch

    # Sorted keys and contiguous CPU tensors: the bytes depend on the values only, not on how training left them.
    state = {k: state_dict[k].detach().cpu().contiguous() for k in sorted(state_dict)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_predictor(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Save a V2-compatible state_dict (``layers.{0,2,4,6,7}``) atomically, with deterministic bytes."""
    data = predictor_bytes(state_dict)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
