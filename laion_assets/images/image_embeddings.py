"""Embedding a downloaded shard: stream its tars, embed images (and captions) with CLIP, write one part.

The part is in clip-retrieval's layout (see :mod:`laion_assets.images.embedding_writer`) with rows in URL-shard order
(``laion_row``), whatever attempt or loader worker fetched them, so the spine indexes and scores it unchanged.
With a watermark head, each image is decoded once and both models run on the same batch; the shard's
``pwatermark`` goes to its watermark file, row-aligned with the part (:mod:`laion_assets.images.watermark_scores`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.images.clip_model import BatchEmbedder, LoadedClip
from laion_assets.images.embedding_writer import write_part
from laion_assets.images.watermark import LoadedWatermark, watermark_pixels
from laion_assets.images.watermark_scores import WatermarkScores, write_watermark_scores
from laion_assets.sources.layout import Part
from laion_assets.sources.schemas import METADATA_COLUMNS, OPTIONAL_METADATA_COLUMNS
from laion_assets.sources.url_sources import ROW_COLUMN

KEY_WIDTH = 9  # img2dataset's key width with its default 10,000 samples per tar


@dataclass(frozen=True)
class EmbeddedShard:
    """What embedding one shard produced."""

    part: Part
    rows: int
    skipped: int
    skipped_reasons: dict[str, int]
    seconds: float
    batch_size: int
    halvings: int
    watermark: WatermarkScores | None = None  # None: no watermark head configured, no watermark file

    @property
    def images_per_second(self) -> float:
        """Embedded images per second of wall time (reading, decoding, model and writing)."""
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ImagePass:
    """What one pass over a shard's decoded images gave: CLIP embeddings and, with a head, ``pwatermark``."""

    metas: list[dict]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]]
    embedder: BatchEmbedder
    pwatermark: np.ndarray | None = None
    watermark_embedder: BatchEmbedder | None = None
    watermark_seconds: float = 0.0


def embed_images(
    tars: Sequence[Path],
    clip: LoadedClip,
    batch_size: int,
    num_workers: int,
    watermark: LoadedWatermark | None = None,
    watermark_batch_size: int | None = None,
) -> ImagePass:
    """Image embeddings (float32) of every decodable sample of ``tars``, their JSON metadata and the skipped ones.

    With ``watermark``, each image is decoded once and also scored by the watermark head (same rows, same order).
    """
    # The reader's torch DataLoader is imported here: loading the definitions must not pay for torch.
    from laion_assets.images.image_reader import image_loader

    embedder = BatchEmbedder(clip.encode_images, batch_size)
    marker = BatchEmbedder(watermark.score, watermark_batch_size or batch_size) if watermark is not None else None
    metas: list[dict] = []
    chunks: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    seconds = 0.0
    skipped: list[tuple[str, str]] = []
    extra = watermark_pixels if watermark is not None else None
    for batch in image_loader(tars, clip.preprocess, batch_size, num_workers, extra):
        skipped.extend(batch.skipped)
        if batch.images is None:
            continue
        chunks.append(embedder(batch.images))
        if marker is not None:
            start = time.perf_counter()
            marks.append(marker(batch.extra))
            seconds += time.perf_counter() - start  # the copy back to numpy waits for the device
        metas.extend(batch.metas)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, clip.embed_dim), dtype=np.float32)
    pwatermark = None
    if marker is not None:
        pwatermark = np.concatenate(marks).astype(np.float32) if marks else np.zeros(0, dtype=np.float32)
    return ImagePass(metas, emb, skipped, embedder, pwatermark, marker, seconds)


def embed_texts(texts: list[str], clip: LoadedClip, batch_size: int) -> np.ndarray:
    """Text embeddings (float32) of captions, batched with the same out-of-memory halving."""
    tokens = clip.tokenizer(texts)
    return BatchEmbedder(clip.encode_tokens, batch_size)(tokens).reshape(len(texts), -1)


def shard_metadata(source: pl.DataFrame, metas: list[dict]) -> pl.DataFrame:
    """The metadata rows of the embedded samples (in ``metas`` order) from the URL shard, plus key, url and caption.

    ``url`` and ``caption`` repeat ``URL`` and ``TEXT`` under clip-retrieval's default metadata column names, so its
    back end (``clip_back`` with ``columns_to_return`` left at ``["url", "caption"]``) serves our folders unchanged.
    """
    try:
        rows = [int(m[ROW_COLUMN]) for m in metas]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"a sample's JSON has no usable {ROW_COLUMN!r}: {exc}") from exc
    fetched = pl.DataFrame(
        {
            ROW_COLUMN: pl.Series(rows, dtype=pl.Int64),
            "original_width": pl.Series([m.get("original_width") for m in metas], dtype=pl.Float64),
            "original_height": pl.Series([m.get("original_height") for m in metas], dtype=pl.Float64),
        }
    )
    frame = fetched.join(source, on=ROW_COLUMN, how="left", maintain_order="left")
    if frame["URL"].null_count():
        raise BadInputError(f"{frame['URL'].null_count()} downloaded sample(s) are not rows of the URL shard")
    if "WIDTH" not in frame.columns:  # the source had no sizes: use the downloaded image's
        frame = frame.with_columns(pl.col("original_width").alias("WIDTH"), pl.col("original_height").alias("HEIGHT"))
    laion = {**METADATA_COLUMNS, **OPTIONAL_METADATA_COLUMNS}
    frame = frame.with_columns(
        [pl.lit(None, dtype=t).alias(c) for c, t in laion.items() if c not in frame.columns]
        + [
            pl.col(ROW_COLUMN).cast(pl.String).str.zfill(KEY_WIDTH).alias("key"),
            pl.col("URL").alias("url"),
            pl.col("TEXT").alias("caption"),
        ]
    )
    first = [*laion, "key", "url", "caption"]
    rest = [c for c in frame.columns if c not in first and c not in ("original_width", "original_height")]
    return frame.select([*first, *rest])


def embed_shard(
    tars: Sequence[Path],
    source: pl.DataFrame,
    clip: LoadedClip,
    out_root: Path,
    number: int,
    batch_size: int = 256,
    num_workers: int = 2,
    embed_text: bool = True,
    watermark: LoadedWatermark | None = None,
    watermark_out: Path | None = None,
    watermark_batch_size: int | None = None,
) -> EmbeddedShard:
    """Embed a shard's downloaded images (and captions, unless ``embed_text`` is off) into part ``number``.

    With ``watermark`` the same pass scores ``pwatermark``, written to ``watermark_out`` row-aligned with the part;
    without one an earlier file at ``watermark_out`` is removed (its rows belonged to the part replaced now).
    """
    if watermark is not None and watermark_out is None:
        raise ValueError("embed_shard: a watermark head needs watermark_out, the file its scores go to")
    start = time.perf_counter()
    done = embed_images(tars, clip, batch_size, num_workers, watermark, watermark_batch_size)
    metas, img_emb, skipped, embedder = done.metas, done.embeddings, done.skipped, done.embedder
    if not metas:
        raise BadInputError(
            f"shard {number:05d}: no decodable image in {len(tars)} tar(s) ({len(skipped)} skipped); "
            "check the images asset's failures"
        )
    metadata = shard_metadata(source, metas)
    order = np.argsort(metadata[ROW_COLUMN].to_numpy(), kind="stable")
    metadata = metadata[order]
    img_emb = img_emb[order]
    text_emb = None
    if embed_text:
        text_emb = embed_texts([t or "" for t in metadata["TEXT"].to_list()], clip, embedder.batch_size)
    part = write_part(out_root, number, img_emb, text_emb, metadata)
    scored = None
    if watermark is not None and watermark_out is not None and done.pwatermark is not None and done.watermark_embedder:
        written = write_watermark_scores(watermark_out, part, done.pwatermark[order], watermark.identity)
        marker = done.watermark_embedder
        scored = replace(
            written, seconds=done.watermark_seconds, batch_size=marker.batch_size, halvings=marker.halvings
        )
    elif watermark_out is not None:
        watermark_out.unlink(missing_ok=True)
    reasons = Counter(reason.split(":")[0] for _, reason in skipped)
    return EmbeddedShard(
        part=part,
        rows=metadata.height,
        skipped=len(skipped),
        skipped_reasons=dict(reasons.most_common()),
        seconds=time.perf_counter() - start,
        batch_size=embedder.batch_size,
        halvings=embedder.halvings,
        watermark=scored,
    )
