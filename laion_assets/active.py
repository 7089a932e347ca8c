"""The active predictors as configuration: ``predictors.yaml`` maps each score column to a weights file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from laion_assets.atomic import atomic_path
from laion_assets.errors import BadInputError
from laion_assets.paths import PROJECT_DIR

ACTIVE_FILE = PROJECT_DIR / "predictors.yaml"
SCORE_COLUMNS = ("aesthetic", "AESTHETIC_SCORE")

_HEADER = """\
# The active aesthetic predictors: score column -> weights file (relative paths start at the project folder).
# Every stored score records the identity (kind + sha256) of the file that made it, so changing a file here marks
# exactly the shards scored by another predictor out of date; `rescore` (job, schedule, CLI) re-scores them.
# `laion-assets activate AESTHETIC_SCORE PATH` rewrites this file, e.g. to make a trained predictor the active V2.
"""


def read_active(path: str | Path = ACTIVE_FILE) -> dict[str, str]:
    """Return ``{score column: weights path}`` from a predictors file; errors name the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: active-predictors file not found (it maps {list(SCORE_COLUMNS)} to weights)")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise BadInputError(f"{path}: expected a mapping of score column -> weights file, got {type(loaded).__name__}")
    missing = [c for c in SCORE_COLUMNS if c not in loaded]
    unknown = [c for c in loaded if c not in SCORE_COLUMNS]
    if missing or unknown:
        raise BadInputError(
            f"{path}: columns must be exactly {list(SCORE_COLUMNS)} (missing {missing}, unknown {unknown})"
        )
    bad = [c for c, v in loaded.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise BadInputError(f"{path}: {bad} must name a weights file")
    return {c: str(loaded[c]) for c in SCORE_COLUMNS}


def write_active(mapping: Mapping[str, str], path: str | Path = ACTIVE_FILE) -> Path:
    """Write a predictors file atomically (keeping the explanatory header)."""
    body = yaml.safe_dump({c: str(mapping[c]) for c in SCORE_COLUMNS}, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(_HEADER + body)
    return Path(path)


def activate(column: str, weights: str | Path, path: str | Path = ACTIVE_FILE) -> dict[str, str]:
    """Make ``weights`` the active predictor of ``column``; returns the new mapping."""
    if column not in SCORE_COLUMNS:
        raise BadInputError(f"{column!r} is not a score column; choose one of {list(SCORE_COLUMNS)}")
    mapping = read_active(path)
    mapping[column] = str(weights)
    write_active(mapping, path)
    return mapping
