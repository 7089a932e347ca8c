"""A small LAION-POP table as ``pop_captions`` writes it (``data_root/pop/table``): parquet parts + settings.json.

Columns, in order: url, alt_text, llava_caption (str), width, height (int64), nsfw_prediction, aesthetic_score
(float32), similarity (float64), hash (int64), pwatermark (float32), centroid (int32), centroid_similarity
(float32), key (str). Nothing here calls laion_assets code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

SCHEMA = {
    "url": pl.String,
    "alt_text": pl.String,
    "llava_caption": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "nsfw_prediction": pl.Float32,
    "aesthetic_score": pl.Float32,
    "similarity": pl.Float64,
    "hash": pl.Int64,
    "pwatermark": pl.Float32,
    "centroid": pl.Int32,
    "centroid_similarity": pl.Float32,
    "key": pl.String,
}
PROMPT = "Describe this image in detail. Mention `style`, objects and colours.\nBe concise."


def pop_settings(rows: int, k: int = 4) -> dict:
    """The settings.json of a table of ``rows`` rows selected near ``k`` centroids."""
    return {
        "format": 1,
        "rows": rows,
        "selection": {
            "neighbours": 8,
            "min_side": 512,
            "max_pwatermark": 0.8,
            "aesthetic_column": "AESTHETIC_SCORE",
            "min_aesthetic": 5.0,
            "guidance": 0.0,
        },
        "concepts": {"rows": 40, "source": "concepts/sample.parquet"},
        "centroids": {"k": k, "seed": 0, "inertia": 12.5},
        "captions": {
            "model": "llava-hf/llava-1.5-7b-hf",
            "prompt": PROMPT,
            "trim_prefix": "The image shows ",
            "max_new_tokens": 64,
        },
    }


def write_pop_table(folder: Path, rows: int = 30, seed: int = 0, part_rows: int = 16) -> Path:
    """Write ``part-00000.parquet``, ... (``part_rows`` rows each) and ``settings.json`` into ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k = 4
    frame = pl.DataFrame(
        {
            "url": [f"https://example.com/pop/{seed}/{i}.jpg" for i in range(rows)],
            "alt_text": [f"original caption {seed}-{i}" for i in range(rows)],
            "llava_caption": [f"A photo of thing {i} in a bright room, seed {seed}." for i in range(rows)],
            "width": rng.integers(512, 2048, rows),
            "height": rng.integers(512, 2048, rows),
            "nsfw_prediction": rng.uniform(0, 0.5, rows),
            "aesthetic_score": rng.uniform(5, 8, rows),
            "similarity": rng.uniform(0.2, 0.4, rows),
            "hash": rng.integers(-(2**62), 2**62, rows),
            "pwatermark": rng.uniform(0, 0.8, rows),
            "centroid": rng.integers(0, k, rows),
            "centroid_similarity": rng.uniform(0.5, 0.9, rows),
            "key": [f"{i // 10:05d}{i % 10:04d}" for i in range(rows)],
        },
        schema=SCHEMA,
    )
    for index, start in enumerate(range(0, max(rows, 1), part_rows)):
        frame.slice(start, part_rows).write_parquet(folder / f"part-{index:05d}.parquet")
    (folder / "settings.json").write_text(json.dumps(pop_settings(rows, k), indent=2, sort_keys=True) + "\n")
    return folder
