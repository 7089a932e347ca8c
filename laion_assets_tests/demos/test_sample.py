import hashlib

import numpy as np
import polars as pl

from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.demos.sample import SampleSpec, build_sample, write_sample
from laion_assets.scoring.predictors import load_predictor
from laion_assets.selection.histogram import histogram_counts
from laion_assets.selection.subsets import v1_subset, v2_subset
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.metadata import read_metadata


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.*")}


def test_written_sample_is_deterministic_and_in_layout(tmp_path):
    spec = SampleSpec(parts=2, rows_per_part=300, seed=3)
    write_sample(tmp_path / "a", spec)
    write_sample(tmp_path / "b", spec)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    parts = discover_parts(tmp_path / "a")
    assert [p.embeddings.name for p in parts] == ["img_emb_0.npy", "img_emb_1.npy"]
    emb = np.load(parts[0].embeddings)
    assert emb.shape == (300, 768) and emb.dtype == np.float16
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    assert read_metadata(parts[0].metadata).height == 300


def test_default_sample_exercises_every_rule():
    spec = SampleSpec()
    assert spec.parts >= 4 and spec.parts * spec.rows_per_part >= 10_000
    emb, meta = build_sample(spec)
    v1, v2 = load_predictor(V1_WEIGHTS).score(emb), load_predictor(V2_WEIGHTS).score(emb)
    # Both real predictors spread over 0-10: every V1 integer bucket is populated, V2 covers 1-9.
    assert all(c > 0 for c in histogram_counts(v1).values())
    assert v2.min() < 2 and v2.max() > 8
    tags = read_frame(meta, v1, v2)
    for rule in V2_SUBSETS:
        assert v2_subset(tags, rule).collect().height > 0, rule
    for rule in V1_SUBSETS:
        assert v1_subset(tags, rule).collect().height > 0, rule
    frame = tags.collect()
    assert (frame["punsafe"] >= 0.5).sum() > 0 and (frame["pwatermark"] >= 0.8).sum() > 0
    assert frame["hash"].n_unique() < frame.height  # duplicate hashes
    assert (frame["LANGUAGE"] != "en").sum() > 0 and frame["LANGUAGE"].null_count() > 0


def read_frame(meta: pl.DataFrame, v1, v2) -> pl.LazyFrame:
    from laion_assets.sources.hashing import laion_hashes

    return meta.with_columns(
        pl.Series("hash", laion_hashes(meta["URL"], meta["TEXT"])),
        pl.Series("aesthetic", v1),
        pl.Series("AESTHETIC_SCORE", v2),
    ).lazy()
