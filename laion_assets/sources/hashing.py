"""LAION's sample key: ``hash = mmh3.hash64(url + text, seed=0, signed=True)[0]`` as int64.

LAION's join scripts (rom1504/laion-prepro, ``laion5B/aesthetic``) key every sample this way; a missing URL or
caption counts as the empty string.
"""

from __future__ import annotations

from collections.abc import Iterable

import mmh3
import numpy as np


def laion_hash(url: str | None, text: str | None) -> int:
    """Return LAION's signed 64-bit key for one (url, text) pair."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"), seed=0, signed=True)[0]


def laion_hashes(urls: Iterable[str | None], texts: Iterable[str | None]) -> np.ndarray:
    """Return LAION's keys for aligned url and text columns as an int64 array."""
    return np.fromiter((laion_hash(u, t) for u, t in zip(urls, texts, strict=True)), dtype=np.int64)
