"""LAION's sample key: ``hash = mmh3.hash64(url + text, seed=0, signed=True)[0]`` as int64.

LAION's join scripts (rom1504/laion-prepro, ``laion5B/aesthetic``) key every sample this way; a missing URL or
caption counts as the empty string.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter

import mmh3
import numpy as np
import polars as pl


def laion_hash(url: str | None, text: str | None) -> int:
    """Return LAION's signed 64-bit key for one (url, text) pair."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"), seed=0, signed=True)[0]


def laion_hashes(urls: Iterable[str | None], texts: Iterable[str | None]) -> np.ndarray:
    """Return LAION's keys for aligned url and text columns as an int64 array."""
    return np.fromiter((laion_hash(u, t) for u, t in zip(urls, texts, strict=True)), dtype=np.int64)


def laion_hashes_of(urls: pl.Series, texts: pl.Series) -> np.ndarray:
    """:func:`laion_hashes` of two aligned polars string columns, about twice as fast.

    The concatenation happens in polars, and mmh3 hashes each Python ``str`` as its UTF-8 bytes: polars strings are
    always valid UTF-8, so this equals encoding each pair (mmh3 must never see a lone surrogate, which it cannot
    encode). A null counts as the empty string.
    """
    frame = pl.DataFrame({"u": urls.cast(pl.String), "t": texts.cast(pl.String)})
    joined = frame.select(pl.concat_str([pl.col("u").fill_null(""), pl.col("t").fill_null("")])).to_series()
    keys = map(mmh3.hash64, joined.to_list(), repeat(0), repeat(True))
    return np.fromiter(map(itemgetter(0), keys), dtype=np.int64, count=joined.len())
