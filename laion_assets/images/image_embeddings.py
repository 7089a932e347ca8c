"""Embedding a downloaded shard: stream its tars, embed images (and captions) with CLIP, write one part.

The part is in clip-retrieval's layout (see :mod:`laion_assets.images.embedding_writer`) with rows in URL-shard order
(``laion_row``), whatever attempt or loader worker fetched them, so the spine indexes and scores it unchanged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.errors import BadInputError
from laion_assets.images.clip_model import BatchEmbedder, LoadedClip
from laion_assets.images.embedding_writer import write_part
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

    @property
    def images_per_second(self) -> float:
        """Embedded images per second of wall time (reading, decoding, model and writing)."""
        return self.rows / self.seconds if self.seconds else 0.0


def embed_images(
    tars: Sequence[Path], clip: LoadedClip, batch_size: int, num_workers: int
) -> tuple[list[dict], np.ndarray, list[tuple[str, str]], BatchEmbedder]:
    """Image embeddings (float32) of every decodable sample of ``tars``, their JSON metadata and the skipped ones."""
    # The reader's torch DataLoader is imported here: loading the definitions must not pay for torch.
    from laion_assets.images.image_reader import image_loader

    embedder = BatchEmbedder(clip.encode_images, batch_size)
    metas: list[dict] = []
    chunks: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for batch in image_loader(tars, clip.preprocess, batch_size, num_workers):
        skipped.extend(batch.skipped)
        if batch.images is None:
            continue
        chunks.append(embedder(batch.images))
        metas.extend(batch.metas)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, clip.embed_dim), dtype=np.float32)
    return metas, emb, skipped, embedder


def embed_texts(texts: list[str], clip: LoadedClip, batch_size: int) -> np.ndarray:
    """Text embeddings (float32) of captions, batched with the same out-of-memory halving."""
    tokens = clip.tokenizer(texts)
    return BatchEmbedder(clip.encode_tokens, batch_size)(tokens).reshape(len(texts), -1)


def shard_metadata(source: pl.DataFrame, metas: list[dict]) -> pl.DataFrame:
    """The metadata rows of the embedded samples (in ``metas`` order) from the URL shard, plus key and caption."""
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
        + [pl.col(ROW_COLUMN).cast(pl.String).str.zfill(KEY_WIDTH).alias("key"), pl.col("TEXT").alias("caption")]
    )
    first = [*laion, "key", "caption"]
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
) -> EmbeddedShard:
    """Embed a shard's downloaded images (and captions, unless ``embed_text`` is off) into part ``number``."""
    start = time.perf_counter()
    metas, img_emb, skipped, embedder = embed_images(tars, clip, batch_size, num_workers)
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
    reasons = Counter(reason.split(":")[0] for _, reason in skipped)
    return EmbeddedShard(
        part=part,
        rows=metadata.height,
        skipped=len(skipped),
        skipped_reasons=dict(reasons.most_common()),
        seconds=time.perf_counter() - start,
        batch_size=embedder.batch_size,
        halvings=embedder.halvings,
    )
