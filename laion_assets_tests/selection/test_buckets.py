import hashlib

import numpy as np

from laion_assets.core.paths import REFERENCE_DIR
from laion_assets.selection.buckets import (
    BucketAccumulator,
    accumulate_part,
    aesthetic_query,
    bucket_membership,
    save_buckets,
)
from laion_assets_tests.shipped_sources import listed_sha256


def test_both_edges_are_inclusive():
    member = bucket_membership(np.array([5.0, 5.5, 0.0, 10.0, -0.1, 10.1], dtype=np.float32))
    assert member[0].nonzero()[0].tolist() == [4, 5]  # exactly 5.0 is in [4, 5] and in [5, 6]
    assert member[1].nonzero()[0].tolist() == [5]
    assert member[2].nonzero()[0].tolist() == [0]
    assert member[3].nonzero()[0].tolist() == [9]
    assert member[4].sum() == 0 and member[5].sum() == 0  # outside 0..10: in no bucket


def brute_force(emb: np.ndarray, scores: np.ndarray) -> np.ndarray:
    out = np.zeros((10, emb.shape[1]))
    for k in range(10):
        total = emb[(scores >= k) & (scores <= k + 1)].astype(np.float64).sum(axis=0)
        norm = np.linalg.norm(total)
        out[k] = total / norm if norm else total
    return out


def test_accumulator_matches_brute_force_over_chunks_and_parts():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5000, 32)).astype(np.float32)
    scores = rng.uniform(-1, 11, 5000).astype(np.float32)
    scores[:50] = np.round(scores[:50])  # plenty of rows exactly on an edge
    acc = BucketAccumulator(32)
    accumulate_part(acc, emb[:3000], scores[:3000])
    accumulate_part(acc, emb[3000:], scores[3000:])
    np.testing.assert_allclose(acc.vectors(), brute_force(emb, scores), atol=1e-5)
    assert acc.counts.tolist() == [int(((scores >= k) & (scores <= k + 1)).sum()) for k in range(10)]


def test_empty_bucket_stays_zero_and_files_have_laion_shape(tmp_path):
    acc = BucketAccumulator(8)
    acc.add(np.eye(8, dtype=np.float32)[:2], np.array([3.5, 3.2], dtype=np.float32))
    vectors = acc.vectors()
    paths = save_buckets(vectors, tmp_path)
    assert [p.name for p in paths] == [f"rating{k}.npy" for k in range(10)]
    r3 = np.load(tmp_path / "rating3.npy")
    assert r3.shape == (1, 8) and r3.dtype == np.float32
    np.testing.assert_allclose(r3[0], np.array([1, 1, 0, 0, 0, 0, 0, 0]) / np.sqrt(2), atol=1e-7)
    assert not np.load(tmp_path / "rating0.npy").any()


def test_reference_bucket_embeddings_have_laion_format():
    # LAION's real bucket embeddings ship in data/reference/; first prove they are the files SOURCES.md lists.
    listed = listed_sha256(REFERENCE_DIR / "SOURCES.md")
    buckets = [f"vit_l_14_embeddings/rating{k}.npy" for k in range(10)]
    assert set(buckets) <= set(listed)
    for rel, digest in listed.items():
        assert hashlib.sha256((REFERENCE_DIR / rel).read_bytes()).hexdigest() == digest, rel
    for rel in buckets:
        r = np.load(REFERENCE_DIR / rel)
        assert r.shape == (1, 768) and r.dtype == np.float32
        assert abs(np.linalg.norm(r) - 1) < 1e-5


def test_aesthetic_query_formula():
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    rating = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    out = aesthetic_query(q, rating, weight=0.5)
    np.testing.assert_allclose(out, np.array([1.0, 0.5, 0.0]) / np.sqrt(1.25), atol=1e-7)
