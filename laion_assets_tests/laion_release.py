"""Input shaped like LAION's released laion2B-en, generated in a temporary folder (independent of our sample).

- ``embeddings/``: clip-retrieval's layout, ``img_emb/img_emb_{N:04d}.npy`` (float16, unit norm, 768-d) beside
  ``metadata/metadata_{N:04d}.parquet``, part numbers with a gap (0, 1, 3).
- The metadata has clip-retrieval / img2dataset's lowercase columns (``image_path, caption, NSFW, similarity,
  LICENSE, url, key, status, error_message, width, height, original_width, original_height, exif, md5``) and no
  language column: laion2B-en's rows are English by source.
- ``joined/``: LAION's "joined" safety table in several parquet files (``URL, TEXT, WIDTH, HEIGHT, similarity, hash,
  punsafe, pwatermark``), in another row order, with repeated hashes (a later, different row must lose to the
  first), null ``pwatermark`` (LAION fills 0.5) and rows that have no safety tags at all.
- Awkward rows LAION's data has: null and blank URLs, null captions, the same url + caption in two parts.

Embeddings are random directions pulled towards the real V1 and V2 heads' weight vectors so that LAION's predictors
spread them over every subset's threshold. Nothing here calls laion_assets code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mmh3
import numpy as np
import polars as pl
import torch

PROJECT = Path(__file__).resolve().parent.parent
V1_FILE = PROJECT / "data" / "models" / "sa_0_4_vit_l_14_linear.pth"
V2_FILE = PROJECT / "data" / "models" / "sac+logos+ava1-l14-linearMSE.pth"
URLS_FILE = PROJECT / "data" / "reference" / "test_1000.parquet"
NUMBERS = (0, 1, 3)
DIM = 768


@dataclass(frozen=True)
class LaionRelease:
    """Where the generated input lies."""

    embeddings: Path
    joined: Path
    numbers: tuple[int, ...]


def _head_directions() -> np.ndarray:
    """Unit vectors along the V1 weight and the collapsed V2 map, read straight from the weight files."""
    v1 = torch.load(V1_FILE, map_location="cpu", weights_only=True)["weight"].double().numpy()[0]
    state = torch.load(V2_FILE, map_location="cpu", weights_only=True)
    w = np.eye(DIM)
    for i in (0, 2, 4, 6, 7):
        w = state[f"layers.{i}.weight"].double().numpy() @ w
    dirs = np.stack([v1, w[0]])
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def write_laion_release(folder: Path, rows_per_part: int = 400, seed: int = 11) -> LaionRelease:
    """Write the embeddings folder and the joined safety table below ``folder``."""
    rng = np.random.default_rng(seed)
    pairs = pl.read_parquet(URLS_FILE).select("URL", "TEXT")
    dirs = _head_directions()
    emb_root, joined = folder / "embeddings", folder / "joined"
    for sub in ("img_emb", "metadata"):
        (emb_root / sub).mkdir(parents=True, exist_ok=True)
    joined.mkdir(parents=True, exist_ok=True)
    tagged: list[dict] = []
    first_part: tuple[list, list] | None = None
    for p, number in enumerate(NUMBERS):
        n = rows_per_part
        z = rng.normal(size=(n, DIM))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        pull = np.stack([rng.uniform(-0.12, 0.2, n), rng.uniform(-0.12, 0.15, n)], axis=1)
        x = z + pull @ dirs
        emb = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        picked = pairs[(np.arange(n) + p * n) % pairs.height]
        urls = [f"{u}?part={number}&row={i}" for i, u in enumerate(picked["URL"].to_list())]
        captions = picked["TEXT"].to_list()
        kind = rng.random(n)
        for i in range(n):
            if kind[i] < 0.01:
                urls[i] = None
            elif kind[i] < 0.02:
                urls[i] = " " if kind[i] < 0.015 else ""
            elif kind[i] < 0.04:
                captions[i] = None
        if first_part is None:
            first_part = (urls[:10], captions[:10])
        elif number == NUMBERS[-1]:
            # The same images (url + caption, so the same hash) again in a later part, as LAION's crawl has them.
            urls[20:30], captions[20:30] = first_part
        width = rng.integers(200, 3000, n)
        height = rng.integers(200, 3000, n)
        key = [f"{number:05d}{i:04d}" for i in range(n)]
        meta = pl.DataFrame(
            {
                "image_path": [f"{k}.jpg" for k in key],
                "caption": pl.Series(captions, dtype=pl.String),
                "NSFW": rng.choice(["UNLIKELY", "UNSURE", "NSFW"], n, p=[0.9, 0.07, 0.03]).tolist(),
                "similarity": rng.uniform(0.28, 0.45, n),
                "LICENSE": ["?"] * n,
                "url": pl.Series(urls, dtype=pl.String),
                "key": key,
                "status": ["success"] * n,
                "error_message": pl.Series([None] * n, dtype=pl.String),
                "width": np.minimum(width, 384).astype(np.int64),
                "height": np.minimum(height, 384).astype(np.int64),
                "original_width": width.astype(np.int64),
                "original_height": height.astype(np.int64),
                "exif": ["{}"] * n,
                "md5": [f"{i:032x}" for i in range(n)],
            }
        )
        np.save(emb_root / "img_emb" / f"img_emb_{number:04d}.npy", emb)
        meta.write_parquet(emb_root / "metadata" / f"metadata_{number:04d}.parquet")
        punsafe = rng.beta(0.6, 4.0, n)
        pwatermark = rng.beta(0.8, 2.5, n)
        for i in range(n):
            if rng.random() < 0.05:
                continue  # about 5 % of rows have no safety tags
            h = mmh3.hash64(((urls[i] or "") + (captions[i] or "")).encode("utf-8"), seed=0, signed=True)[0]
            mark = None if rng.random() < 0.1 else float(pwatermark[i])
            tagged.append(
                {"URL": urls[i], "TEXT": captions[i], "WIDTH": float(width[i]), "HEIGHT": float(height[i]),
                 "similarity": float(meta["similarity"][i]), "hash": h, "punsafe": float(punsafe[i]),
                 "pwatermark": mark}
            )  # fmt: skip
    table = pl.DataFrame(tagged, schema_overrides={"punsafe": pl.Float32, "pwatermark": pl.Float32})
    order = rng.permutation(table.height)
    table = table[order]
    # Later rows repeating an earlier hash with other values: the first (in file order) must win.
    repeats = table.head(25).with_columns(
        pl.lit(0.97, pl.Float32).alias("punsafe"), pl.lit(0.01, pl.Float32).alias("pwatermark")
    )
    table = pl.concat([table, repeats])
    size = table.height // 3 + 1
    for i, chunk in enumerate(table.iter_slices(n_rows=size)):
        chunk.write_parquet(joined / f"part-{i:05d}-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet")
    return LaionRelease(emb_root, joined, NUMBERS)
