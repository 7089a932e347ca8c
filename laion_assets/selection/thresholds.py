"""LAION's thresholds: the improved_aesthetics cut-offs (V2) and laion-aesthetic/laion-art (V1) with safety filters."""

from __future__ import annotations

from dataclasses import dataclass

from laion_assets.sources.metadata import ENGLISH

__all__ = ["ENGLISH", "PUNSAFE_MAX", "PWATERMARK_MAX", "V1_SUBSETS", "V2_SUBSETS", "V1Subset", "V2Subset"]


@dataclass(frozen=True)
class V2Subset:
    """``improved_aesthetics_{label}plus``: rows with ``AESTHETIC_SCORE >= threshold``."""

    asset_name: str
    threshold: float
    hub_name: str


@dataclass(frozen=True)
class V1Subset:
    """A laion-aesthetic style subset: safe, de-duplicated rows with ``aesthetic > threshold``."""

    asset_name: str
    threshold: float


# Nested by construction: every threshold is >= (V2) or > (V1) a number, so a higher cut-off gives a subset.
V2_SUBSETS: tuple[V2Subset, ...] = (
    V2Subset("subset_4_5plus", 4.5, "improved_aesthetics_4.5plus"),
    V2Subset("subset_4_75plus", 4.75, "improved_aesthetics_4.75plus"),
    V2Subset("subset_5plus", 5.0, "improved_aesthetics_5plus"),
    V2Subset("subset_6plus", 6.0, "improved_aesthetics_6plus"),
    V2Subset("subset_6_25plus", 6.25, "improved_aesthetics_6.25plus"),
    V2Subset("subset_6_5plus", 6.5, "improved_aesthetics_6.5plus"),
)

V1_SUBSETS: tuple[V1Subset, ...] = (
    V1Subset("laion_aesthetic", 7.0),
    V1Subset("laion_art", 8.0),
)

# LAION's safety filters applied before the V1 subsets: keep punsafe < 0.5 and pwatermark < 0.8.
PUNSAFE_MAX = 0.5
PWATERMARK_MAX = 0.8
