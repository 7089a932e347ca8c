"""Assemble a versioned release folder: subsets, KV files, histogram, bucket embeddings, card and manifest.

``<data_root>/releases/<version>/`` is written to a temporary sibling and renamed into place only when complete.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.atomic import atomic_dir
from laion_assets.buckets import N_BUCKETS
from laion_assets.dataset_card import render_card, subset_path
from laion_assets.errors import BadInputError
from laion_assets.kv import KV_FILES, record_dtype
from laion_assets.layout import Part
from laion_assets.locations import Location
from laion_assets.manifest import (
    CARD,
    FORMAT_VERSION,
    MANIFEST,
    code_version,
    dumps,
    file_entry,
    package_versions,
    predictor_entries,
    safety_entry,
    source_entry,
)
from laion_assets.outputs import OutputLayout, require
from laion_assets.shards import IDENTITY_KEY
from laion_assets.subsets import SUBSET_FILE
from laion_assets.thresholds import ENGLISH, PUNSAFE_MAX, PWATERMARK_MAX, V1_SUBSETS, V2_SUBSETS, V2Subset

DEFAULT_NAME = "laion-aesthetics-assets"
HISTOGRAM = "stats/score_histogram.json"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_version(version: str) -> str:
    """Return ``version`` if it is a safe folder and git tag name (``v0.1.0``), else raise naming it."""
    if not _VERSION.match(version) or ".." in version:
        raise BadInputError(f"release version {version!r}: use letters, digits, '.', '_' or '-' (e.g. 'v0.1.0')")
    return version


def version_key(version: str) -> tuple:
    """Sort key that orders ``v0.10.0`` after ``v0.9.0``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version.lstrip("vV")))


def subset_rules() -> list[dict[str, object]]:
    """Every released subset in release order with its rule (V2 then V1)."""
    out: list[dict[str, object]] = []
    for rule in (*V2_SUBSETS, *V1_SUBSETS):
        v2 = isinstance(rule, V2Subset)
        score = "AESTHETIC_SCORE" if v2 else "aesthetic"
        text = (
            f"English rows, AESTHETIC_SCORE >= {rule.threshold:g}"
            if v2
            else f"punsafe < {PUNSAFE_MAX:g}, pwatermark < {PWATERMARK_MAX:g}, one row per hash, "
            f"aesthetic > {rule.threshold:g}"
        )
        entry: dict[str, object] = {"name": rule.asset_name, "score_column": score, "threshold": rule.threshold}
        entry["rule"] = text
        if v2:
            entry["hub_name"] = rule.hub_name
        out.append(entry)
    return out


def thresholds() -> dict[str, object]:
    """The filter constants a release was cut with."""
    return {"language": ENGLISH, "punsafe_max": PUNSAFE_MAX, "pwatermark_max": PWATERMARK_MAX}


def release_sources(layout: OutputLayout) -> dict[str, Path]:
    """Map each data file's path inside the release to the built file under the data root (all must exist)."""
    files: dict[str, Path] = {}
    for subset in subset_rules():
        name = str(subset["name"])
        files[f"{subset_path(name)}/{SUBSET_FILE}"] = require(layout.subset_dir(name) / SUBSET_FILE, name)
    for name in KV_FILES:
        files[f"kv/{name}"] = require(layout.kv_dir / name, "aesthetic_kv")
    files[HISTOGRAM] = require(layout.histogram_path, "score_histogram")
    for k in range(N_BUCKETS):
        files[f"buckets/rating{k}.npy"] = require(layout.buckets_dir / f"rating{k}.npy", "bucket_embeddings")
    return files


def previous_release(layout: OutputLayout, version: str) -> Path | None:
    """The newest release folder older than ``version`` (by version order), or None."""
    if not layout.releases_dir.is_dir():
        return None
    older = [
        p
        for p in layout.releases_dir.iterdir()
        if p.is_dir() and (p / MANIFEST).is_file() and version_key(p.name) < version_key(version)
    ]
    return max(older, key=lambda p: version_key(p.name)) if older else None


def compute_changelog(previous: Path | None, release_dir: Path) -> dict[str, object]:
    """Rows added and removed per subset (matched by hash) against a previous release folder."""
    if previous is None:
        return {"previous": None, "subsets": {}}
    changes: dict[str, dict[str, int]] = {}
    for subset in subset_rules():
        rel = f"{subset_path(str(subset['name']))}/{SUBSET_FILE}"
        new = pl.scan_parquet(release_dir / rel).select("hash")
        old_path = previous / rel
        old = (
            pl.scan_parquet(old_path).select("hash")
            if old_path.is_file()
            else pl.LazyFrame({"hash": []}, {"hash": pl.Int64})
        )
        changes[str(subset["name"])] = {
            "rows_before": int(old.select(pl.len()).collect().item()),
            "rows_after": int(new.select(pl.len()).collect().item()),
            "added": int(new.join(old.unique(), on="hash", how="anti").select(pl.len()).collect().item()),
            "removed": int(old.join(new.unique(), on="hash", how="anti").select(pl.len()).collect().item()),
        }
    return {"previous": previous.name, "subsets": changes}


@dataclass(frozen=True)
class ReleaseSummary:
    """What building a release wrote."""

    path: Path
    version: str
    manifest: dict


def _record_size(rel: str) -> int | None:
    name = rel.rpartition("/")[2]
    return record_dtype(KV_FILES[name][0]).itemsize if rel.startswith("kv/") and name in KV_FILES else None


def build_release(
    layout: OutputLayout,
    version: str,
    *,
    inputs: dict,
    predictors: Mapping[str, Mapping[str, object]],
    name: str = DEFAULT_NAME,
    changelog: dict | None = None,
    code: dict | None = None,
    packages: dict | None = None,
) -> ReleaseSummary:
    """Copy the built files into ``releases/<version>/`` and write its dataset card and manifest.

    ``changelog``, ``code`` and ``packages`` default to a fresh comparison with the previous release and the
    running code; ``verify`` passes the recorded ones so that only the data decides whether bytes match.
    """
    check_version(version)
    sources = release_sources(layout)
    target = layout.release_dir(version)
    with atomic_dir(target) as tmp:
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        files = {rel: file_entry(tmp / rel, _record_size(rel)) for rel in sorted(sources)}
        if changelog is None:
            changelog = compute_changelog(previous_release(layout, version), tmp)
        manifest = {
            "format": FORMAT_VERSION,
            "name": name,
            "version": version,
            "subsets": subset_rules(),
            "thresholds": thresholds(),
            "predictors": {k: dict(v) for k, v in predictors.items()},
            "inputs": inputs,
            "files": files,
            "changelog": changelog,
            "code": code if code is not None else code_version(),
            "packages": packages if packages is not None else package_versions(),
        }
        # Round-trip through JSON so the card sees exactly what a later reader of manifest.json sees.
        manifest = json.loads(dumps(manifest))
        histogram = json.loads((tmp / HISTOGRAM).read_text())
        (tmp / CARD).write_text(render_card(manifest, histogram))
        manifest["files"][CARD] = file_entry(tmp / CARD)
        (tmp / MANIFEST).write_text(dumps(manifest))
    return ReleaseSummary(target, version, manifest)


def tags_identities(layout: OutputLayout) -> dict[str, str]:
    """The predictor identity of each score column, as recorded in the tags table (all shards agree)."""
    files = sorted(require(layout.tags_dir, "aesthetic_tags").glob("part-*.parquet"))
    if not files:
        raise BadInputError(f"{layout.tags_dir}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    raw = (pq.read_schema(files[0]).metadata or {}).get(IDENTITY_KEY.encode())
    if raw is None:
        raise BadInputError(f"{files[0]}: no predictor identity recorded; re-materialize aesthetic_tags")
    return dict(json.loads(raw))


def release_from_layout(
    layout: OutputLayout,
    version: str,
    source: Path,
    parts: list[Part],
    predictor_files: Mapping[str, Path],
    dim: int,
    name: str = DEFAULT_NAME,
    safety: Location | None = None,
    swap_width_height: bool = False,
) -> ReleaseSummary:
    """Build a release from a data root whose spine is built, recording the source parts and predictors."""
    inputs = {
        **source_entry(source, parts),
        "embedding_dim": dim,
        "safety": safety_entry(safety),
        "swap_width_height": swap_width_height,
    }
    predictors = predictor_entries(tags_identities(layout), dict(predictor_files))
    return build_release(layout, version, inputs=inputs, predictors=predictors, name=name)
