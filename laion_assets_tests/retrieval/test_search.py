"""The post-filters on their own: near-duplicate groups chain and keep their best-ranked result; safe mode."""

import numpy as np

from laion_assets.retrieval.search import NEAR_DUPLICATE, near_duplicates, unsafe


def at(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle), 0.0], dtype=np.float32)


def test_near_duplicates_chain_and_keep_the_best_ranked():
    step = np.arccos(NEAR_DUPLICATE) * 0.9  # neighbours are near-duplicates, the ends of the chain are not
    chain = [at(0.0), at(step), at(2 * step)]
    assert float(chain[0] @ chain[2]) < NEAR_DUPLICATE
    far = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    # rank order: the middle of the chain first, then a far one, then the chain's ends
    assert near_duplicates(np.stack([chain[1], far, chain[0], chain[2]])) == {2, 3}
    assert near_duplicates(np.stack([far, chain[2], chain[0]])) == set()  # not linked without the middle one
    assert near_duplicates(np.stack([far])) == set()


def test_safe_mode_hides_unsafe_and_unknown_values():
    assert unsafe(np.array([0.0, 0.4999, 0.5, 0.9, np.nan])).tolist() == [False, False, True, True, True]
