"""Remembering the score histogram made by the previous predictors, to show before/after when one changes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

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
