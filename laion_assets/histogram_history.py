"""Remembering the score histogram made by the previous predictors, to show before/after when one changes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from laion_assets.plots import histograms

Counts = dict[str, dict[str, int]]


def read_document(path: Path) -> dict:
    """The previous histogram document, or an empty one when there is none (or it cannot be read)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def previous_for(old: Mapping, identities: Mapping[str, str]) -> dict | None:
    """The "before" to keep: the old histogram when a predictor changed since it, else the one it kept."""
    old_ids = old.get("identities")
    if old_ids and "counts" in old and dict(old_ids) != dict(identities):
        return {"identities": dict(old_ids), "counts": old["counts"]}
    return old.get("previous")


def changed_columns(previous: Mapping | None, identities: Mapping[str, str]) -> list[str]:
    """Score columns whose predictor differs from the kept "before"."""
    if not previous:
        return []
    return [c for c, i in identities.items() if previous["identities"].get(c) != i]


def comparison_png(
    counts: Counts, identities: Mapping[str, str], previous: Mapping | None, labels: tuple[str, ...]
) -> bytes:
    """Bars per bucket: before/after for each column whose predictor changed, else each column's current counts."""
    changed = changed_columns(previous, identities)
    series: dict[str, list[int]] = {}
    for column, now in counts.items():
        if previous and column in changed and column in previous["counts"]:
            series[f"{column} before"] = [previous["counts"][column].get(label, 0) for label in labels]
            series[f"{column} after"] = [now.get(label, 0) for label in labels]
        else:
            series[column] = [now.get(label, 0) for label in labels]
    title = f"score histogram, before/after the predictor change of {changed}" if changed else "score histogram"
    return histograms(series, labels, title)
