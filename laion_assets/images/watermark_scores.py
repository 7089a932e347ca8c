"""Per-shard ``pwatermark`` files: writing them, which head made them, which shards are stale, re-scoring from images.

One file per shard, ``<data_root>/shards/<key>/watermark.parquet`` (:meth:`OutputLayout.shard_watermark`):

- columns ``hash`` (int64, LAION's hash of URL + TEXT, as ``clip_embeddings`` computes it from the same metadata)
  and ``pwatermark`` (float32), one row per row of the shard's embedded part, in its order, which is also the
  order of ``clip_embeddings``' ``metadata.parquet`` when that indexed this part;
- footer ``laion_assets.predictors``: ``{"pwatermark": "watermark-effnet-b3a@sha256:<hex>"}`` (the scoring heads'
  key and format); ``laion_assets.watermark_part``: ``{"key", "metadata", "metadata_sha256", "rows"}``, the
  embedded part it was scored for (its metadata file and that file's sha256).

A shard's file is current when it records the active head's identity and was made for the part
``clip_embeddings`` indexed (or, before indexing, for the part on disk). Re-scoring reads the shard's downloaded
images again (the ``images`` asset's tars), so a shard whose images are gone, or a source of stored embeddings,
which has none, is reported as needing images, with what to run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.identity import IDENTITY_KEY, HeadIdentity
from laion_assets.core.locations import file_sha256
from laion_assets.core.outputs import OutputLayout
from laion_assets.images.clip_model import BatchEmbedder
from laion_assets.images.downloading import attempt_dirs
from laion_assets.images.watermark import WATERMARK_COLUMN, LoadedWatermark, watermark_pixels
from laion_assets.sources.indexing import read_validation
from laion_assets.sources.layout import Part
from laion_assets.sources.metadata import read_hashes
from laion_assets.sources.url_sources import ROW_COLUMN

PART_KEY = "laion_assets.watermark_part"

CURRENT = "current"
STALE = "stale"
UNSCORED = "unscored"
NEEDS_IMAGES = "needs images"
UNEMBEDDED = "unembedded"

STORED_MODE_REASON = (
    "a source of stored embeddings has no images to run the watermark head on: point storage.urls at this "
    "source's URL shards to download and embed them (image_embeddings scores pwatermark in the same pass), or "
    "turn the watermark head off (watermark.weights empty) and take pwatermark from LAION's tags"
)


@dataclass(frozen=True)
class WatermarkScores:
    """One shard's ``pwatermark`` as written: rows, the head, min/mean/max, and the model's own time."""

    key: str
    rows: int
    identity: HeadIdentity
    summary: dict[str, float]
    seconds: float = 0.0
    batch_size: int = 0
    halvings: int = 0

    @property
    def images_per_second(self) -> float:
        """Images scored per second of the watermark model's own time (transfer, forward, softmax)."""
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class WatermarkRecord:
    """What a watermark file's footer records: the head's identity and the embedded part it was scored for."""

    identity: str
    part: dict

    @property
    def metadata_sha256(self) -> str | None:
        """The sha256 of the embedded part's metadata file the rows belong to."""
        return self.part.get("metadata_sha256")


def write_watermark_scores(out: Path, part: Part, scores: np.ndarray, identity: HeadIdentity) -> WatermarkScores:
    """Write ``scores`` (row-aligned with ``part``'s metadata) with the rows' LAION hashes, atomically."""
    hashes = read_hashes(part.metadata)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != hashes.len():
        raise BadInputError(f"shard {part.key}: {scores.shape[0]} pwatermark value(s) for {hashes.len()} rows")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise BadInputError(f"shard {part.key}: row {int(np.argmax(bad))} has a non-finite pwatermark")
    table = pl.DataFrame({"hash": hashes, WATERMARK_COLUMN: pl.Series(WATERMARK_COLUMN, scores, dtype=pl.Float32)})
    record = {
        "key": part.key,
        "metadata": str(part.metadata),
        "metadata_sha256": file_sha256(part.metadata),
        "rows": int(hashes.len()),
    }
    footer = {
        IDENTITY_KEY: json.dumps({WATERMARK_COLUMN: str(identity)}, sort_keys=True),
        PART_KEY: json.dumps(record, sort_keys=True),
    }
    write_parquet(table.to_arrow(), out, footer)
    summary = (
        {"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max())} if scores.size else {}
    )
    return WatermarkScores(part.key, int(scores.shape[0]), identity, summary)


def read_watermark_record(path: Path) -> WatermarkRecord:
    """The head identity and embedded part a watermark file records; raises naming the file when it has none."""
    footer = pq.read_schema(path).metadata or {}
    raw_ids, raw_part = footer.get(IDENTITY_KEY.encode()), footer.get(PART_KEY.encode())
    if raw_ids is None or raw_part is None:
        raise BadInputError(f"{path}: records no watermark head or part; re-score it (`laion-assets rescore`)")
    identities = json.loads(raw_ids)
    if WATERMARK_COLUMN not in identities:
        raise BadInputError(f"{path}: records heads {sorted(identities)} but none for {WATERMARK_COLUMN!r}")
    HeadIdentity.parse(identities[WATERMARK_COLUMN])  # refuse a malformed identity here, naming the file below
    return WatermarkRecord(identities[WATERMARK_COLUMN], json.loads(raw_part))


def read_watermark(path: Path) -> tuple[pl.DataFrame, WatermarkRecord]:
    """A watermark file's rows (``hash``, ``pwatermark``) and its record."""
    try:
        return pl.read_parquet(path, columns=["hash", WATERMARK_COLUMN]), read_watermark_record(path)
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError(f"{path}: cannot read the watermark scores: {exc}") from exc


def indexed_watermark(layout: OutputLayout, key: str) -> tuple[pl.DataFrame | None, str]:
    """The shard's ``hash, pwatermark`` row-aligned with ``clip_embeddings``' metadata, or None and why not.

    Aligned means: made for the very embedded metadata file that ``clip_embeddings`` validated (same sha256), with
    as many rows. The tags join can then take the column as is (its ``hash`` equals the metadata's row for row).
    """
    path = layout.shard_watermark(key)
    if not path.exists():
        return None, f"{path} is missing"
    frame, record = read_watermark(path)
    validation = read_validation(layout.shard_metadata(key))
    if record.metadata_sha256 != validation.metadata.get("sha256"):
        return None, f"{path} was scored for another embedding of shard {key} than clip_embeddings indexed"
    if frame.height != validation.rows:
        return None, f"{path} has {frame.height} rows, the indexed metadata {validation.rows}"
    return frame, f"scored by {record.identity}"


def image_tars(images_dir: Path) -> list[Path]:
    """The tars of a shard's finished download attempts (empty when its images are gone or were never fetched)."""
    return [t for a in attempt_dirs(images_dir) for t in sorted(a.glob("*.tar"))] if images_dir.is_dir() else []


def needs_images_hint(key: str, images_dir: Path) -> str:
    """Why a shard cannot be re-scored and what to run: its images are gone."""
    return (
        f"its images are gone ({images_dir} has no downloaded tars): download and embed it again with "
        f"`dagster asset materialize --select images,image_embeddings --partition {key}` (image_embeddings scores "
        "pwatermark in the same pass), then rebuild its scores and the tags (`laion-assets rescore`)"
    )


@dataclass(frozen=True)
class WatermarkState:
    """One shard's ``pwatermark`` status against the active watermark head."""

    key: str
    status: str
    recorded: str | None
    reason: str

    @property
    def needs_scores(self) -> bool:
        """True when re-scoring from the shard's images would bring it up to date."""
        return self.status in (STALE, UNSCORED)


def _made_for(record: WatermarkRecord, layout: OutputLayout, key: str, part: Part) -> bool:
    """True when the file was scored for the part's current metadata file."""
    try:
        validation = read_validation(layout.shard_metadata(key))
    except (BadInputError, OSError):
        validation = None
    if (
        validation is not None
        and validation.metadata.get("sha256") == record.metadata_sha256
        and not validation.source_changes(part)
    ):
        return True  # what clip_embeddings validated, still unchanged: no need to read the file again
    return file_sha256(part.metadata) == record.metadata_sha256


def watermark_state(
    key: str, layout: OutputLayout, active: HeadIdentity, part: Part | None, url_mode: bool = True
) -> WatermarkState:
    """Compare one shard's watermark file with the active head and the shard's embedded part.

    ``part`` is the part ``image_embeddings`` wrote for the shard (None: none yet); ``url_mode`` says whether the
    shards come from URLs, so that a shard without an embedded part will get one, or from stored embeddings.
    """
    if part is None:
        if not url_mode:
            return WatermarkState(key, NEEDS_IMAGES, None, STORED_MODE_REASON)
        return WatermarkState(
            key, UNEMBEDDED, None, "image_embeddings has not embedded it yet (its shard run scores pwatermark)"
        )
    path = layout.shard_watermark(key)
    recorded = None
    if not path.exists():
        status, problem = UNSCORED, f"{path} is missing"
    else:
        try:
            record = read_watermark_record(path)
            recorded = record.identity
        except (BadInputError, OSError, ValueError) as exc:
            record = None
            status, problem = STALE, f"cannot read which head made it: {exc}"
        if record is not None:
            if record.identity != str(active):
                status, problem = STALE, f"scored by another head ({record.identity} -> {active})"
            elif not _made_for(record, layout, key, part):
                status, problem = STALE, "scored for an earlier embedding of the shard (image_embeddings ran since)"
            else:
                return WatermarkState(key, CURRENT, recorded, "scored by the active watermark head")
    images = layout.images_dir(key)
    if not image_tars(images):
        return WatermarkState(key, NEEDS_IMAGES, recorded, f"{problem}, and {needs_images_hint(key, images)}")
    return WatermarkState(key, status, recorded, problem)


def watermark_states(
    keys: Sequence[str], layout: OutputLayout, active: HeadIdentity, parts: dict[str, Part], url_mode: bool = True
) -> list[WatermarkState]:
    """The watermark state of every shard, in the order given (``parts``: the embedded parts by key)."""
    return [watermark_state(key, layout, active, parts.get(key), url_mode) for key in keys]


def score_tars(
    tars: Sequence[Path], watermark: LoadedWatermark, batch_size: int = 256, num_workers: int = 2
) -> tuple[dict[int, float], BatchEmbedder, float]:
    """``pwatermark`` of every decodable image of the tars by its URL-shard row, the batcher, and the model's time."""
    # The reader's torch DataLoader is imported here: loading the definitions must not pay for torch.
    from laion_assets.images.image_reader import image_loader

    embedder = BatchEmbedder(watermark.score, batch_size)
    found: dict[int, float] = {}
    seconds = 0.0
    for batch in image_loader(tars, watermark_pixels, batch_size, num_workers):
        if batch.images is None:
            continue
        start = time.perf_counter()
        scores = embedder(batch.images)
        seconds += time.perf_counter() - start
        for meta, score in zip(batch.metas, scores, strict=True):
            if ROW_COLUMN in meta:
                found[int(meta[ROW_COLUMN])] = float(score)
    return found, embedder, seconds


def rescore_watermark(
    key: str,
    layout: OutputLayout,
    part: Part,
    watermark: LoadedWatermark,
    batch_size: int = 256,
    num_workers: int = 2,
) -> WatermarkScores:
    """Score the rows of a shard's embedded part again from its downloaded images, and write its watermark file."""
    images = layout.images_dir(key)
    tars = image_tars(images)
    if not tars:
        raise MissingUpstreamError(f"shard {key}: cannot re-score pwatermark: {needs_images_hint(key, images)}")
    rows = pl.read_parquet(part.metadata, columns=[ROW_COLUMN])[ROW_COLUMN].to_list()
    found, embedder, seconds = score_tars(tars, watermark, batch_size, num_workers)
    missing = [row for row in rows if row not in found]
    if missing:
        raise BadInputError(
            f"shard {key}: {len(missing)} embedded row(s) have no decodable image in {images} (rows "
            f"{', '.join(map(str, missing[:10]))}{' …' if len(missing) > 10 else ''}): the images changed since "
            f"the shard was embedded; embed it again with `dagster asset materialize --select image_embeddings "
            f"--partition {key}` (it scores pwatermark in the same pass)"
        )
    scores = np.array([found[row] for row in rows], dtype=np.float32)
    written = write_watermark_scores(layout.shard_watermark(key), part, scores, watermark.identity)
    return replace(written, seconds=seconds, batch_size=embedder.batch_size, halvings=embedder.halvings)
