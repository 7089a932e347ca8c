import numpy as np
import polars as pl

from laion_assets.selection.histogram import (
    LABELS,
    add_counts,
    bucket_sentence,
    histogram_counts,
    laion_text,
    lazy_counts,
)


def test_integer_buckets_clip_at_both_ends():
    counts = histogram_counts(np.array([-3.0, 0.0, 0.99, 1.0, 9.99, 10.0, 12.5]))
    assert counts == {"0-1": 3, "1-2": 1, "2-3": 0, "3-4": 0, "4-5": 0, "5-6": 0, "6-7": 0, "7-8": 0, "8-9": 0,
                      "9-10": 3}  # fmt: skip
    assert list(counts) == list(LABELS)


def test_laion_text_format():
    counts = {label: 0 for label in LABELS} | {"0-1": 2_660_000, "5-6": 123_456_789}
    text = laion_text(counts)
    assert text.startswith("{'0-1': '2.66M', '1-2': '0.00M'")
    assert "'5-6': '123.46M'" in text


def test_bucket_sentence():
    assert bucket_sentence(5, 6, 1_234_567, 10_000_000) == "In bucket 5 - 6 there is 12.35% (1.23M) samples:"
    assert bucket_sentence(6.25, 6.5, 0, 0) == "In bucket 6.25 - 6.5 there is 0.00% (0.00M) samples:"


def test_lazy_counts_equal_numpy_counts():
    scores = np.random.default_rng(0).normal(5, 2.5, 20000).astype(np.float32)
    frame = pl.DataFrame({"s": scores}).lazy()
    assert lazy_counts(frame, "s") == histogram_counts(scores)
    assert add_counts(histogram_counts(scores[:5]), histogram_counts(scores[5:])) == histogram_counts(scores)
