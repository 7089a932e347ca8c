"""The active predictors as configuration: ``predictors.yaml`` maps each score column to a weights file.

``aesthetic`` and ``AESTHETIC_SCORE`` are required; ``punsafe`` (LAION's NSFW detector) is optional: a file without
it, e.g. one written before the head existed, still loads, and then ``punsafe`` is not computed.

An optional ``force`` list names the columns whose weights are used although they do not fit the column (a head
of another kind, or NaN/Inf in its tensors); ``laion-assets activate COLUMN PATH --force`` adds a column to it and
activating without ``--force`` takes it out again, so a force never outlives the file it was given for.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import PROJECT_DIR

if TYPE_CHECKING:
    from laion_assets.scoring.predictors import Predictor

ACTIVE_FILE = PROJECT_DIR / "predictors.yaml"
REQUIRED_COLUMNS = ("aesthetic", "AESTHETIC_SCORE")
OPTIONAL_COLUMNS = ("punsafe",)
SCORE_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
FORCE_KEY = "force"
# The weights laion-assets ships for each column (LAION's released heads; see data/models/).
DEFAULT_WEIGHTS = {
    "aesthetic": "data/models/sa_0_4_vit_l_14_linear.pth",
    "AESTHETIC_SCORE": "data/models/sac+logos+ava1-l14-linearMSE.pth",
    "punsafe": "data/models/nsfw/clip_autokeras_binary_nsfw.npz",
}

_HEADER = """\
# The active predictors: score column -> weights file (relative paths start at the project folder).
# Every stored score records the identity (kind + sha256 of the tensors) of the weights that made it, so changing a
# file here marks exactly the shards scored by other weights out of date; `rescore` (job, schedule, CLI) re-scores them.
# `laion-assets activate AESTHETIC_SCORE PATH` rewrites this file, e.g. to make a trained predictor the active V2.
# `aesthetic` takes a V1 head, `AESTHETIC_SCORE` a V2 one; `force: [COLUMN]` (from `activate --force`) uses
# weights that do not fit their column anyway, and every release made with them says so.
# `punsafe` (optional: leave it out and it is not computed) takes LAION's CLIP-based NSFW detector, a numpy .npz
# (data/models/nsfw/: the ViT-L/14 head; clip_autokeras_nsfw_b32.npz is the ViT-B/32 one, for 512-d embeddings).
"""


def _read(path: Path) -> tuple[dict[str, str], list[str]]:
    if not path.is_file():
        raise BadInputError(
            f"{path}: active-predictors file not found (it maps {list(REQUIRED_COLUMNS)}, optionally "
            f"{list(OPTIONAL_COLUMNS)}, to weights)"
        )
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise BadInputError(f"{path}: expected a mapping of score column -> weights file, got {type(loaded).__name__}")
    forced = loaded.pop(FORCE_KEY, None) or []
    if not isinstance(forced, list) or any(c not in SCORE_COLUMNS for c in forced):
        raise BadInputError(f"{path}: `{FORCE_KEY}` must be a list of score columns from {list(SCORE_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in loaded]
    unknown = [c for c in loaded if c not in SCORE_COLUMNS]
    if missing or unknown:
        raise BadInputError(
            f"{path}: columns must be {list(REQUIRED_COLUMNS)}, optionally {list(OPTIONAL_COLUMNS)} "
            f"(missing {missing}, unknown {unknown})"
        )
    bad = [c for c, v in loaded.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise BadInputError(f"{path}: {bad} must name a weights file")
    return {c: str(loaded[c]) for c in SCORE_COLUMNS if c in loaded}, [c for c in SCORE_COLUMNS if c in forced]


def read_active(path: str | Path = ACTIVE_FILE) -> dict[str, str]:
    """Return ``{score column: weights path}`` from a predictors file (an optional column it leaves out is absent);
    errors name the file and the fault."""
    return _read(Path(path))[0]


def read_forced(path: str | Path = ACTIVE_FILE) -> list[str]:
    """Return the score columns whose weights the predictors file forces (used although they do not fit)."""
    return _read(Path(path))[1]


def write_active(mapping: Mapping[str, str], path: str | Path = ACTIVE_FILE, forced: Collection[str] = ()) -> Path:
    """Write a predictors file atomically (keeping the explanatory header); ``forced`` columns go in ``force``."""
    document: dict[str, object] = {c: str(mapping[c]) for c in SCORE_COLUMNS if c in mapping}
    if forced:
        document[FORCE_KEY] = [c for c in SCORE_COLUMNS if c in forced]
    body = yaml.safe_dump(document, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(_HEADER + body)
    return Path(path)


def weights_entry(given: str, cwd: Path | None = None) -> tuple[Path, str]:
    """The weights file a user named on the command line, and how ``predictors.yaml`` records it.

    A relative path that names a file from the current directory means that file (recorded project-relative when it
    is inside the project, else absolute); otherwise it is taken from the project folder, as every path in
    ``predictors.yaml`` is. An absolute path is recorded as it is.
    """
    path = Path(given).expanduser()
    if path.is_absolute():
        return path, str(path)
    here = Path(os.path.abspath((Path.cwd() if cwd is None else cwd) / path))  # normalised, symlinks kept
    if here.is_file():
        inside = here.is_relative_to(PROJECT_DIR)
        return here, here.relative_to(PROJECT_DIR).as_posix() if inside else str(here)
    in_project = PROJECT_DIR / path
    if in_project.is_file():
        return in_project, given
    raise BadInputError(
        f"{given}: predictor weights file not found, neither from the current directory ({here}) nor from the "
        f"project folder ({in_project})"
    )


def activate(column: str, weights: str | Path, path: str | Path = ACTIVE_FILE, force: bool = False) -> dict[str, str]:
    """Make ``weights`` the active predictor of ``column`` (forced or not); returns the new mapping."""
    if column not in SCORE_COLUMNS:
        raise BadInputError(f"{column!r} is not a score column; choose one of {list(SCORE_COLUMNS)}")
    mapping, forced = _read(Path(path))
    mapping[column] = str(weights)
    forced = [c for c in forced if c != column] + ([column] if force else [])
    write_active(mapping, path, forced)
    return mapping


def load_active(dim: int, heads: Collection[str] | None = None, path: str | Path = ACTIVE_FILE) -> dict[str, Predictor]:
    """The active predictors as the ``predictors`` resource loads them by default: ``{score column: predictor}``.

    ``heads`` picks columns by name (default: every column the file maps); weights the file forces are used
    although they do not fit their column. Errors name an unknown head and the heads there are.
    """
    from laion_assets.core.paths import resolve
    from laion_assets.scoring.predictors import load_for_column

    path = resolve(path)
    mapping, forced = _read(path)
    chosen = list(mapping) if heads is None else list(dict.fromkeys(heads))
    unknown = [h for h in chosen if h not in mapping]
    if unknown or not chosen:
        optional = [h for h in unknown if h in OPTIONAL_COLUMNS]
        hint = (
            f"; {optional} is optional and {path} does not configure it: `laion-assets activate {optional[0]} "
            f"{DEFAULT_WEIGHTS[optional[0]]}`"
            if optional
            else ""
        )
        raise BadInputError(
            f"unknown head(s) {unknown or '(none given)'}: the heads are the score columns of {path}: "
            f"{list(mapping)}{hint}"
        )
    return {h: load_for_column(resolve(mapping[h]), h, dim, h in forced) for h in chosen}
