import mmh3
import numpy as np

from laion_assets.sources.hashing import laion_hash, laion_hashes

# LAION's own example (laion5B/aesthetic/aesthetic_kv_usage.py), recorded in shared/reference/SOURCES.md.
URL = "http://1.bp.blogspot.com/-4nSga1sbduI/UDT3Q1H9dzI/AAAAAAAABWE/O7_lyFGjmU0/s1600/Vintage+Wedding+Table+Decorations+Pictures.jpg"
TEXT = "Cake Table Decoration Ideas"


def test_laion_test_vector():
    assert laion_hash(URL, TEXT) == 4623837408423549118


def test_missing_url_or_text_counts_as_empty_string():
    assert laion_hash(None, TEXT) == laion_hash("", TEXT) == mmh3.hash64(TEXT.encode(), seed=0, signed=True)[0]
    assert laion_hash(URL, None) == laion_hash(URL, "")


def test_non_ascii_is_hashed_as_utf8():
    assert laion_hash("http://x/é.jpg", "café") == mmh3.hash64("http://x/é.jpgcafé".encode(), seed=0, signed=True)[0]


def test_vectorised_hashes_are_int64_and_match_scalar():
    urls, texts = [URL, "a", None], [TEXT, None, "b"]
    out = laion_hashes(urls, texts)
    assert out.dtype == np.int64
    assert out.tolist() == [laion_hash(u, t) for u, t in zip(urls, texts, strict=True)]
    assert out[0] == 4623837408423549118


def test_polars_column_hashes_equal_the_scalar_ones():
    import polars as pl

    from laion_assets.sources.hashing import laion_hashes_of

    urls = [URL, "a", None, "http://x/é.jpg", "http://日本/😀", None]
    texts = [TEXT, None, "b", "café", "", None]
    out = laion_hashes_of(pl.Series(urls, dtype=pl.String), pl.Series(texts, dtype=pl.String))
    assert out.dtype == np.int64
    assert out.tolist() == [laion_hash(u, t) for u, t in zip(urls, texts, strict=True)]
    assert laion_hashes_of(pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.String)).shape == (0,)
