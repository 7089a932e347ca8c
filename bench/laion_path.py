"""LAION's path for scoring stored embeddings, as ``embedding-reader``'s ``examples/aesthetic_inference.py`` does it.

Usage: PYTHONPATH=<dir with embedding_reader> python bench/laion_path.py SRC OUT
``EmbeddingReader(..., file_format="parquet_npy", meta_columns=[url, caption])`` reads the clip-retrieval folder in
batches of 10**6 rows (numpy + pandas metadata), the heads are numpy (``x @ w + b`` on the float32 cast, V1 and the
collapsed V2, the same weights ``laion-assets score`` uses), the hash is LAION's ``compute_hash`` per row, and each
batch goes to a parquet file through pandas, as in that script. Run by ``bench/score.py`` for its side-by-side CPU
comparison; it is not part of the package.
"""

import math
import os
import sys

import mmh3
import numpy as np
import pandas as pd
from embedding_reader import EmbeddingReader

from laion_assets.scoring.active import load_active


def compute_hash(url, text):
    """LAION's hash, as in the example script."""
    if url is None:
        url = ""
    if text is None:
        text = ""
    total = (url + text).encode("utf-8")
    return mmh3.hash64(total)[0]


def main(src: str, out: str, batch_size: int = 10**6) -> None:
    reader = EmbeddingReader(
        os.path.join(src, "img_emb"),
        metadata_folder=os.path.join(src, "metadata"),
        file_format="parquet_npy",
        meta_columns=["URL", "TEXT"],
    )
    os.makedirs(out, exist_ok=True)
    aesthetic = load_active(reader.dimension, ["aesthetic", "AESTHETIC_SCORE"])  # the linear heads LAION's path ran
    heads = {name: (p.weight, np.float32(p.bias)) for name, p in aesthetic.items()}
    batch_count = math.ceil(reader.count / batch_size)
    padding = int(math.log10(batch_count)) + 1
    for i, (embeddings, ids) in enumerate(reader(batch_size=batch_size, start=0, end=reader.count)):
        x = embeddings.astype(np.float32)
        df = pd.DataFrame({name: x @ w + b for name, (w, b) in heads.items()})
        df["hash"] = [compute_hash(u, t) for u, t in zip(ids["URL"], ids["TEXT"], strict=True)]
        df["url"] = ids["URL"]
        df.to_parquet(os.path.join(out, str(i).zfill(padding) + ".parquet"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
