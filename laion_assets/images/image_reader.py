"""Streaming img2dataset's webdataset tars (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``) through a DataLoader.

The tars are read and their members grouped into samples by ``webdataset`` (its tar iterators). Tars are read
sequentially (no random access, so they may sit on slow disks) and split between loader workers
by file. Images are decoded and preprocessed in the workers; one that cannot be decoded is passed on as a
skipped sample with its reason, counted by the caller, and never stops the run. Given a second preprocessing
(``extra``, the watermark head's), each image is decoded once and both tensors travel together in the batch.
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
    extra: torch.Tensor | None = None  # the second preprocessing of the same decoded image, when one is given


@dataclass
class Batch:
    """A collated batch: the decodable samples stacked (both preprocessings, row-aligned), the skipped ones."""

    keys: list[str]
    metas: list[dict]
    images: torch.Tensor | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra: torch.Tensor | None = None


def _tar_error(exc: BaseException) -> str:
    """The error's own message: webdataset appends ``@ <stream>`` and the stream/URL to an exception's args."""
    if isinstance(exc, OSError) and exc.strerror:  # e.g. the tar is missing: args[0] is the errno
        return f"{type(exc).__name__}: {exc.strerror}"
    first = str(exc.args[0]) if exc.args else str(exc)
    return f"{type(exc).__name__}: {first.split(' @ ')[0]}"


def _members(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` per sample of one tar, read and grouped by webdataset, in file order."""
    # Imported here: webdataset's package import pulls in more than loading the definitions should pay for.
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with open(tar_path, "rb") as stream:
        # Our own file handle (closed when done) instead of webdataset's gopen; group_by_keys joins the consecutive
        # members sharing a key, lowercases extensions and raises on a repeated one.
        for sample in group_by_keys(tar_file_expander([{"url": str(tar_path), "stream": stream}])):
            # img2dataset writes flat names; a folder in the tar is not part of the key.
            key = sample["__key__"].rsplit("/", 1)[-1]
            yield key, {ext: data for ext, data in sample.items() if not ext.startswith("__")}


def decode_sample(key: str, files: dict[str, bytes], preprocess: Callable, extra: Callable | None = None) -> Sample:
    """Decode one sample once and preprocess it (also with ``extra``); a missing or undecodable image is skipped."""
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
            rgb = img.convert("RGB")
            image = preprocess(rgb)
            # Inside the guard: an image either preprocessing fails on is skipped for both, so they stay aligned.
            second = extra(rgb) if extra is not None else None
    except Exception as exc:  # PIL raises many types for broken files; any of them means "skip this one"
        return Sample(key, meta, error=f"{type(exc).__name__}: {exc}")
    return Sample(key, meta, image=image, extra=second)


class TarImages(IterableDataset):
    """The samples of a list of tars, each worker reading its share of the files."""

    def __init__(self, tars: Sequence[str | Path], preprocess: Callable, extra: Callable | None = None) -> None:
        self.tars = [Path(t) for t in tars]
        self.preprocess = preprocess
        self.extra = extra

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        mine = self.tars if info is None else self.tars[info.id :: info.num_workers]
        for tar in mine:
            members = _members(tar)
            while True:
                # Only reading the tar is guarded here, so an error of decoding is never taken for a broken tar.
                try:
                    key, files = next(members)
                except StopIteration:
                    break
                except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                    # A truncated or corrupt tar (ValueError: webdataset's repeated file name in one sample): keep
                    # what was read, report the rest of the file as one skipped entry naming the tar.
                    yield Sample(f"{tar.name}:rest", {}, error=f"unreadable tar {tar}: {_tar_error(exc)}")
                    break
                yield decode_sample(key, files, self.preprocess, self.extra)


def collate(samples: list[Sample]) -> Batch:
    """Stack the decodable images of a batch and list the skipped samples."""
    good = [s for s in samples if s.image is not None]
    skipped = [(s.key, s.error or "unknown") for s in samples if s.image is None]
    images = torch.stack([s.image for s in good]) if good else None
    extra = torch.stack([s.extra for s in good]) if good and good[0].extra is not None else None
    return Batch([s.key for s in good], [s.meta for s in good], images, skipped, extra)


def image_loader(
    tars: Sequence[str | Path],
    preprocess: Callable,
    batch_size: int = 256,
    num_workers: int = 2,
    extra: Callable | None = None,
) -> DataLoader:
    """A DataLoader of :class:`Batch` over the tars (``extra``: a second preprocessing of each decoded image).

    At most one worker per tar is useful.
    """
    workers = max(0, min(num_workers, len(tars)))
    return DataLoader(
        TarImages(tars, preprocess, extra),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
