"""Finished tables a release carries as their own dataset config (LAION-POP): parts copied byte for byte.

A table folder holds ``part-00000.parquet``, ``part-00001.parquet``, ... and a ``settings.json`` saying how it was
made (``{"format": 1, "rows": N, ...}``). The release copies both under the table's path (``data/laion-pop/``),
records them in ``manifest.json`` like every other file, and the table's settings in the manifest's ``tables``
field, from which the dataset card describes it. Nothing here can rebuild a table (LAION-POP's captions come from a
captioning model run on the images), so ``verify`` checks its files by hash, rows and settings instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from laion_assets.core.errors import BadInputError, MissingUpstreamError

SETTINGS = "settings.json"
TABLE_FORMAT = 1
TABLE_PARTS = "part-*.parquet"
LAION_POP_CONFIG = "laion_pop"
LAION_POP_PATH = "data/laion-pop"
LAION_POP_ASSET = "pop_captions"
HUB_LAION_POP = "laion/laion-pop"
_CONFIG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PATH = re.compile(r"^data(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})+$")

# Where each LAION-POP column's name comes from: the laion/laion-pop dataset on the Hub (its card is disabled; these
# are the names public loaders of it use), our best guess at its name there, or ours.
HUB = "laion/laion-pop"
GUESS = "laion/laion-pop (best guess)"
OURS = "ours"
LAION_POP_COLUMNS: dict[str, tuple[str, str]] = {
    "url": ("the image URL", HUB),
    "alt_text": ("LAION's original caption (the alt text)", GUESS),
    "llava_caption": ("the caption the captioning model wrote for the image", HUB),
    "width": ("image width in pixels", HUB),
    "height": ("image height in pixels", HUB),
    "nsfw_prediction": ("LAION's punsafe, from the CLIP-based NSFW detector", HUB),
    "aesthetic_score": ("the aesthetic score the selection used", OURS),
    "similarity": ("LAION's CLIP text-image similarity", OURS),
    "hash": ("our LAION row hash (int64, as in the subsets)", OURS),
    "pwatermark": ("probability of a watermark", OURS),
    "centroid": ("the concept centroid the row was selected for", OURS),
    "centroid_similarity": ("cosine similarity of the image embedding to that centroid", OURS),
    "key": ("img2dataset's key of the downloaded image", OURS),
}


@dataclass(frozen=True)
class ReleaseTable:
    """A finished table folder (``part-*.parquet`` + ``settings.json``) released as ``config`` under ``path``."""

    folder: Path
    config: str = LAION_POP_CONFIG
    path: str = LAION_POP_PATH

    def __post_init__(self) -> None:
        if not _CONFIG.match(self.config):
            raise BadInputError(f"table config {self.config!r}: use letters, digits, '.', '_' or '-'")
        if not _PATH.match(self.path) or ".." in self.path:
            raise BadInputError(f"table path {self.path!r}: a folder under data/ (e.g. {LAION_POP_PATH!r})")


def laion_pop_table(folder: Path) -> ReleaseTable:
    """The LAION-POP table in ``folder`` (``data_root/pop/table``) as config ``laion_pop``; raises when missing."""
    folder = Path(folder)
    if not (folder / SETTINGS).is_file():
        raise MissingUpstreamError(
            f"the LAION-POP table is not there ({folder / SETTINGS} is missing): materialize `{LAION_POP_ASSET}` "
            "first, or leave release_config.laion_pop off"
        )
    return ReleaseTable(folder)


def table_parts(folder: Path) -> list[Path]:
    """The parquet parts of a table folder in row order; raises naming the folder when it holds none."""
    parts = sorted(Path(folder).glob(TABLE_PARTS))
    if not parts:
        raise BadInputError(f"{folder}: no table parts ({TABLE_PARTS}) found; re-materialize {LAION_POP_ASSET}")
    return parts


def read_settings(path: Path) -> dict:
    """A table's ``settings.json``: a JSON object of format 1 with an int ``rows``; the error names the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: missing; a table folder holds its settings.json beside its parts")
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(settings, dict):
        raise BadInputError(f"{path}: holds {type(settings).__name__}, expected a JSON object")
    if settings.get("format") != TABLE_FORMAT:
        raise BadInputError(f"{path}: table settings format {settings.get('format')!r}, expected {TABLE_FORMAT}")
    rows = settings.get("rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise BadInputError(f"{path}: 'rows' is {rows!r}, expected the table's row count")
    return settings


def rows_problem(settings_path: Path, settings: Mapping[str, object], parts: Sequence[Path]) -> str | None:
    """Why ``settings.json`` and the parts disagree on the row count, or None when they agree."""
    held = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    if settings["rows"] != held:
        return f"{settings_path}: says {settings['rows']:,} rows, but the {len(parts)} part(s) beside it hold {held:,}"
    return None


def table_sources(table: ReleaseTable) -> tuple[dict[str, Path], dict[str, object]]:
    """``({path in the release: file}, manifest entry)`` of one table; raises when its settings miscount its rows."""
    parts = table_parts(table.folder)
    settings = read_settings(table.folder / SETTINGS)
    problem = rows_problem(table.folder / SETTINGS, settings, parts)
    if problem:
        raise BadInputError(f"{problem}; re-materialize {LAION_POP_ASSET}")
    files = {f"{table.path}/{p.name}": p for p in parts}
    files[f"{table.path}/{SETTINGS}"] = table.folder / SETTINGS
    entry = {"config": table.config, "path": table.path, "rows": settings["rows"], "settings": settings}
    return files, entry


def recorded_tables(release_dir: Path, manifest: Mapping[str, object]) -> list[ReleaseTable]:
    """The tables a release holds, read from its own folder (what ``verify`` rebuilds the release with)."""
    entries = manifest.get("tables") or []
    return [ReleaseTable(Path(release_dir) / str(e["path"]), str(e["config"]), str(e["path"])) for e in entries]


def table_files(manifest: Mapping[str, object], path: str) -> dict[str, dict]:
    """The manifest entries of one table's files (parts and settings), by path inside the release."""
    files: dict[str, dict] = manifest["files"]  # type: ignore[assignment]
    return {rel: e for rel, e in sorted(files.items()) if rel.startswith(f"{path}/")}


def table_problems(release_dir: Path, manifest: Mapping[str, object]) -> dict[str, str]:
    """``{path: problem}`` for each table file whose rows differ from the manifest or from its ``settings.json``."""
    release_dir = Path(release_dir)
    problems: dict[str, str] = {}
    for entry in manifest.get("tables") or []:  # type: ignore[attr-defined]
        path = str(entry["path"])
        files = table_files(manifest, path)
        parts = [release_dir / rel for rel in files if rel.endswith(".parquet")]
        readable = True
        for rel in (r for r in files if r.endswith(".parquet")):
            if not (release_dir / rel).is_file():
                readable = False
                continue
            try:
                rows = pq.ParquetFile(release_dir / rel).metadata.num_rows
            except Exception as exc:  # noqa: BLE001 - a damaged file is a problem to report, whatever pyarrow raises
                problems[rel] = f"not a readable parquet file ({type(exc).__name__}: {exc})"
                readable = False
                continue
            if rows != files[rel].get("rows"):
                problems[rel] = f"holds {rows:,} rows, the manifest records {files[rel].get('rows')}"
        settings_rel = f"{path}/{SETTINGS}"
        try:
            settings = read_settings(release_dir / settings_rel)
        except BadInputError as exc:
            problems[settings_rel] = str(exc)
            continue
        if readable:
            problem = rows_problem(release_dir / settings_rel, settings, parts)
            if problem:
                problems[settings_rel] = problem
    return problems


def table_changes(
    previous_dir: Path, old: Mapping[str, object], release_dir: Path, new: Mapping[str, object]
) -> dict[str, dict[str, object]]:
    """Per table config in either manifest: rows before/after, rows added/removed (by ``hash``), settings changed."""
    before = {str(e["config"]): e for e in old.get("tables") or []}  # type: ignore[attr-defined]
    after = {str(e["config"]): e for e in new.get("tables") or []}  # type: ignore[attr-defined]
    changes: dict[str, dict[str, object]] = {}
    for config in sorted(set(before) | set(after)):
        a, b = before.get(config), after.get(config)
        old_hashes = _hashes(previous_dir, old, a)
        new_hashes = _hashes(release_dir, new, b)
        changes[config] = {
            "rows_before": int(a["rows"]) if a else 0,
            "rows_after": int(b["rows"]) if b else 0,
            "added": len(new_hashes - old_hashes),
            "removed": len(old_hashes - new_hashes),
            "settings_changed": (a or {}).get("settings") != (b or {}).get("settings"),
        }
    return changes


def _hashes(release_dir: Path, manifest: Mapping[str, object], entry: Mapping[str, object] | None) -> set[int]:
    if entry is None:
        return set()
    parts = [Path(release_dir) / rel for rel in table_files(manifest, str(entry["path"])) if rel.endswith(".parquet")]
    found: set[int] = set()
    for part in parts:
        if "hash" in pq.read_schema(part).names:
            found |= set(pq.read_table(part, columns=["hash"])["hash"].to_pylist())
    return found
