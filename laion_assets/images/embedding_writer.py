"""Writing one part in clip-retrieval's layout: ``img_emb``, ``text_emb`` and ``metadata``, row-aligned.

Embeddings are L2-normalised (a zero row stays zero) and stored as float16. The three files of a part are
written to temporary names and renamed together at the end, so a failure leaves no half part behind.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import PARQUET_OPTIONS, atomic_path
from laion_assets.core.errors import BadInputError
from laion_assets.sources.embeddings import l2_normalize
from laion_assets.sources.layout import Part


def _save_unit_fp16(array: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, l2_normalize(array.astype(np.float32)).astype(np.float16))


def write_part(
    root: str | Path,
    number: int,
    img_emb: np.ndarray,
    text_emb: np.ndarray | None,
    metadata: pl.DataFrame,
    width: int = 5,
) -> Part:
    """Write part ``number`` below ``root``; returns it as :class:`layout.Part`."""
    root = Path(root)
    rows = metadata.height
    if img_emb.ndim != 2 or img_emb.shape[0] != rows:
        raise BadInputError(f"part {number}: {img_emb.shape} image embeddings for {rows} metadata rows")
    if text_emb is not None and text_emb.shape != img_emb.shape:
        raise BadInputError(f"part {number}: text embeddings {text_emb.shape} != image embeddings {img_emb.shape}")
    n = f"{number:0{width}d}"
    paths = {
        "img": root / "img_emb" / f"img_emb_{n}.npy",
        "text": root / "text_emb" / f"text_emb_{n}.npy",
        "meta": root / "metadata" / f"metadata_{n}.parquet",
    }
    with ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in paths.items() if k != "text" or text_emb is not None}
        _save_unit_fp16(img_emb, tmp["img"])
        if text_emb is not None:
            _save_unit_fp16(text_emb, tmp["text"])
        pq.write_table(metadata.to_arrow(), tmp["meta"], **PARQUET_OPTIONS)
    if text_emb is None:
        paths["text"].unlink(missing_ok=True)  # a stale one from an earlier run would no longer be aligned
    return Part(number, paths["img"], paths["meta"], paths["text"] if text_emb is not None else None)
