"""Streaming img2dataset's webdataset tars (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``) through a DataLoader.

Tars are read sequentially (no random access, so they may sit on slow disks) and split between loader workers
by file. Images are decoded and preprocessed in the workers; one that cannot be decoded is passed on as a
skipped sample with its reason, counted by the caller, and never stops the run.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class Sample:
    """One sample of a tar: its key, its img2dataset JSON, and the preprocessed image or why there is none."""

    key: str
    meta: dict
    image: torch.Tensor | None = None
    error: str | None = None


@dataclass
class Batch:
    """A collated batch: the decodable samples stacked, and the skipped ones with their reasons."""

    keys: list[str]
    metas: list[dict]
    images: torch.Tensor | None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _members(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` for consecutive members sharing a key."""
    key, files = None, {}
    with tarfile.open(tar_path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = Path(member.name).name
            stem, _, ext = name.partition(".")
            if stem != key and key is not None:
                yield key, files
                files = {}
            key = stem
            handle = tar.extractfile(member)
            files[ext.lower()] = handle.read() if handle is not None else b""
    if key is not None:
        yield key, files


def decode_sample(key: str, files: dict[str, bytes], preprocess: Callable) -> Sample:
    """Decode and preprocess one sample; a missing or undecodable image becomes a skipped sample."""
    try:
        meta = json.loads(files["json"]) if "json" in files else {}
    except ValueError:
        meta = {}
    meta.setdefault("key", key)
    if "caption" not in meta and "txt" in files:
        meta["caption"] = files["txt"].decode("utf-8", errors="replace")
    ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
    if ext is None:
        return Sample(key, meta, error="no image in the sample")
    try:
        with Image.open(io.BytesIO(files[ext])) as img:
            img.load()
            image = preprocess(img.convert("RGB"))
    except Exception as exc:  # PIL raises many types for broken files; any of them means "skip this one"
        return Sample(key, meta, error=f"{type(exc).__name__}: {exc}")
    return Sample(key, meta, image=image)


class TarImages(IterableDataset):
    """The samples of a list of tars, each worker reading its share of the files."""

    def __init__(self, tars: Sequence[str | Path], preprocess: Callable) -> None:
        self.tars = [Path(t) for t in tars]
        self.preprocess = preprocess

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        mine = self.tars if info is None else self.tars[info.id :: info.num_workers]
        for tar in mine:
            try:
                for key, files in _members(tar):
                    yield decode_sample(key, files, self.preprocess)
            except (tarfile.TarError, OSError, EOFError) as exc:
                # A truncated tar: keep what was read, report the rest of the file as one skipped entry.
                yield Sample(f"{tar.name}:rest", {}, error=f"unreadable tar {tar}: {exc}")


def collate(samples: list[Sample]) -> Batch:
    """Stack the decodable images of a batch and list the skipped samples."""
    good = [s for s in samples if s.image is not None]
    skipped = [(s.key, s.error or "unknown") for s in samples if s.image is None]
    images = torch.stack([s.image for s in good]) if good else None
    return Batch([s.key for s in good], [s.meta for s in good], images, skipped)


def image_loader(
    tars: Sequence[str | Path], preprocess: Callable, batch_size: int = 256, num_workers: int = 2
) -> DataLoader:
    """A DataLoader of :class:`Batch` over the tars; at most one worker per tar is useful."""
    workers = max(0, min(num_workers, len(tars)))
    return DataLoader(
        TarImages(tars, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
