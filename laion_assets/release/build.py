"""Assemble a versioned release folder: subsets, KV files, histogram, bucket embeddings, card and manifest.

``<data_root>/releases/<version>/`` is written to a temporary sibling and renamed into place only when complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.errors import BadInputError, MissingUpstreamError, SourceChangedError
from laion_assets.core.locations import Location
from laion_assets.core.outputs import OutputLayout
from laion_assets.release.card import config_name, render_card, subset_path
from laion_assets.release.kv import KV_FILES, record_dtype
from laion_assets.release.manifest import (
    CARD,
    FORMAT_VERSION,
    MANIFEST,
    code_version,
    dumps,
    file_entry,
    load_manifest,
    package_versions,
    predictor_entries,
    safety_entry,
    source_entry,
)
from laion_assets.release.tables import ReleaseTable, table_changes, table_sources
from laion_assets.scoring.parts import IDENTITY_KEY
from laion_assets.selection.audit import SubsetAudit, audit_subset
from laion_assets.selection.buckets import N_BUCKETS
from laion_assets.selection.gating import tags_validations
from laion_assets.selection.subsets import SUBSET_PARTS, rule_funnel, subset_files, subset_rows
from laion_assets.selection.tags import (
    SAFETY_ID_KEY,
    read_built_from,
    recorded_ids,
    safety_columns_record,
    tag_files,
)
from laion_assets.selection.thresholds import PUNSAFE_MAX, PWATERMARK_MAX, V1_SUBSETS, V2_SUBSETS, V1Subset, V2Subset
from laion_assets.sources.indexing import Validation
from laion_assets.sources.metadata import ENGLISH
from laion_assets.sources.safety import SafetySource, check_safety_current

DEFAULT_NAME = "laion-aesthetics-assets"
HISTOGRAM = "stats/score_histogram.json"
# ``version: auto``: the newest release when its contents are the same, else the next patch version.
AUTO = "auto"
FIRST_VERSION = "v0.1.0"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Manifest fields that say what a release holds; code and package versions say what built it and do not count.
# ``tables`` (LAION-POP) is absent from a release without one, as from releases made before tables existed.
CONTENT_FIELDS = ("format", "name", "subsets", "thresholds", "predictors", "inputs", "tables")


class ReleaseExistsError(BadInputError):
    """A release version already exists with other contents; published versions are never rewritten."""


def check_version(version: str) -> str:
    """Return ``version`` if it is a safe folder and git tag name (``v0.1.0``), else raise naming it."""
    if version == AUTO or not _VERSION.match(version) or ".." in version:
        raise BadInputError(
            f"release version {version!r}: use letters, digits, '.', '_' or '-' (e.g. 'v0.1.0'), or 'auto'"
        )
    return version


def version_key(version: str) -> tuple:
    """Sort key that orders ``v0.10.0`` after ``v0.9.0``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version.lstrip("vV")))


def next_version(version: str) -> str:
    """The next patch version: ``v0.1.0`` -> ``v0.1.1``, ``v2`` -> ``v3``; a name without a number gets ``.1``."""
    numbers = list(re.finditer(r"\d+", version))
    if not numbers:
        return f"{version}.1"
    last = numbers[-1]
    return f"{version[: last.start()]}{int(last.group()) + 1}{version[last.end() :]}"


def subset_rules() -> list[dict[str, object]]:
    """Every released subset in release order with its rule (V2 then V1)."""
    out: list[dict[str, object]] = []
    for rule in (*V2_SUBSETS, *V1_SUBSETS):
        v2 = isinstance(rule, V2Subset)
        score = "AESTHETIC_SCORE" if v2 else "aesthetic"
        text = (
            f"English rows with a URL, AESTHETIC_SCORE >= {rule.threshold:g}"
            if v2
            else f"punsafe < {PUNSAFE_MAX:g}, pwatermark < {PWATERMARK_MAX:g}, a URL, one row per hash, "
            f"aesthetic > {rule.threshold:g}"
        )
        entry: dict[str, object] = {"name": rule.asset_name, "score_column": score, "threshold": rule.threshold}
        entry["rule"] = text
        if v2:
            entry["hub_name"] = rule.hub_name
        out.append(entry)
    return out


def rule_of(name: str) -> V1Subset | V2Subset:
    """The rule of a subset by its asset name."""
    return next(r for r in (*V2_SUBSETS, *V1_SUBSETS) if r.asset_name == name)


def thresholds() -> dict[str, object]:
    """The filter constants a release was cut with."""
    return {"language": ENGLISH, "punsafe_max": PUNSAFE_MAX, "pwatermark_max": PWATERMARK_MAX}


def release_sources(layout: OutputLayout) -> dict[str, Path]:
    """Map each data file's path inside the release to the built file under the data root (all must exist).

    Tables (:class:`ReleaseTable`) are not in it: :func:`with_tables` adds them.
    """
    files: dict[str, Path] = {}
    for subset in subset_rules():
        name = str(subset["name"])
        for part in subset_files(layout.require(layout.subset_dir(name), name)):  # every part, in row order
            files[f"{subset_path(name)}/{part.name}"] = part
    for name in KV_FILES:
        files[f"kv/{name}"] = layout.require(layout.kv_dir / name, "aesthetic_kv")
    files[HISTOGRAM] = layout.require(layout.histogram_path, "score_histogram")
    for k in range(N_BUCKETS):
        files[f"buckets/rating{k}.npy"] = layout.require(layout.buckets_dir / f"rating{k}.npy", "bucket_embeddings")
    return files


def with_tables(
    sources: Mapping[str, Path], tables: Sequence[ReleaseTable]
) -> tuple[dict[str, Path], list[dict[str, object]]]:
    """``sources`` plus every table's files, and the tables' manifest entries; raises when a table's config or
    folder is taken (by a subset or another table)."""
    files = dict(sources)
    configs = {config_name(s) for s in subset_rules()} | {str(s["name"]) for s in subset_rules()}
    entries: list[dict[str, object]] = []
    for table in tables:
        taken = [rel for rel in files if rel.startswith(f"{table.path}/") or table.path.startswith(f"{rel}/")]
        if table.config in configs or taken:
            raise BadInputError(
                f"table {table.folder}: config {table.config!r} or folder {table.path}/ is already taken in the release"
            )
        table_files, entry = table_sources(table)
        files.update(table_files)
        entries.append(entry)
        configs.add(table.config)
    return files, entries


def _releases(layout: OutputLayout) -> list[Path]:
    if not layout.releases_dir.is_dir():
        return []
    # Hidden folders are builds in progress (or killed ones), never releases.
    return [
        p
        for p in layout.releases_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    ]


def newest_release(layout: OutputLayout) -> Path | None:
    """The release folder with the highest version, or None."""
    found = _releases(layout)
    return max(found, key=lambda p: version_key(p.name)) if found else None


def previous_release(layout: OutputLayout, version: str) -> Path | None:
    """The newest release folder older than ``version`` (by version order), or None."""
    older = [p for p in _releases(layout) if version_key(p.name) < version_key(version)]
    return max(older, key=lambda p: version_key(p.name)) if older else None


def release_dir_for(layout: OutputLayout, version: str) -> Path:
    """The folder of release ``version``; ``auto`` means the newest one (raises when there is none)."""
    if version != AUTO:
        return layout.release_dir(check_version(version))
    newest = newest_release(layout)
    if newest is None:
        raise MissingUpstreamError(f"no release under {layout.releases_dir} yet: materialize `release` first")
    return newest


def _predictor_changes(old: Mapping[str, Mapping[str, object]], new: Mapping[str, Mapping[str, object]]) -> dict:
    return {
        column: {"before": (old.get(column) or {}).get("identity"), "after": (new.get(column) or {}).get("identity")}
        for column in sorted(set(old) | set(new))
        if (old.get(column) or {}).get("identity") != (new.get(column) or {}).get("identity")
    }


def _input_changes(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, object]:
    def parts(inputs: Mapping[str, object]) -> dict[str, tuple]:
        return {p["key"]: (p["embeddings_sha256"], p["metadata_sha256"]) for p in inputs.get("parts", [])}

    before, after = parts(old), parts(new)
    changes: dict[str, object] = {
        "parts_added": sorted(set(after) - set(before)),
        "parts_removed": sorted(set(before) - set(after)),
        "parts_changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }
    for name in ("language", "excluded_shards", "safety", "swap_width_height", "source"):
        if old.get(name) != new.get(name):
            changes[name] = {"before": old.get(name), "after": new.get(name)}
    return {k: v for k, v in changes.items() if v}


def compute_changelog(previous: Path | None, release_dir: Path, manifest: Mapping[str, object] | None = None) -> dict:
    """What changed against a previous release folder: predictors, inputs, and rows added/removed per subset."""
    if previous is None:
        return {"previous": None, "subsets": {}}
    changes: dict[str, dict[str, int]] = {}
    for subset in subset_rules():
        rel = subset_path(str(subset["name"]))
        new = pl.scan_parquet(subset_files(release_dir / rel)).select("hash")
        old_parts = sorted((previous / rel).glob(SUBSET_PARTS))  # a release of one part-00000.parquet too
        old = pl.scan_parquet(old_parts).select("hash") if old_parts else pl.LazyFrame({"hash": []}, {"hash": pl.Int64})
        changes[str(subset["name"])] = {
            "rows_before": int(old.select(pl.len()).collect().item()),
            "rows_after": int(new.select(pl.len()).collect().item()),
            "added": int(new.join(old.unique(), on="hash", how="anti").select(pl.len()).collect().item()),
            "removed": int(old.join(new.unique(), on="hash", how="anti").select(pl.len()).collect().item()),
        }
    changelog: dict[str, object] = {"previous": previous.name, "subsets": changes}
    if manifest is not None:
        old = load_manifest(previous)
        changelog["predictors"] = _predictor_changes(old.get("predictors", {}), manifest.get("predictors", {}))
        changelog["inputs"] = _input_changes(old.get("inputs", {}), manifest.get("inputs", {}))
        if old.get("tables") or manifest.get("tables"):  # a release without tables keeps the changelog it had
            changelog["tables"] = table_changes(previous, old, release_dir, manifest)
    return changelog


def release_card(release_dir: Path, manifest: Mapping[str, object]) -> bytes:
    """The dataset card (UTF-8) of a release folder, from its manifest (any README entry left out) and histogram."""
    files: dict = manifest["files"]  # type: ignore[assignment]
    histogram = json.loads((release_dir / HISTOGRAM).read_text())
    rendered = render_card({**manifest, "files": {rel: e for rel, e in files.items() if rel != CARD}}, histogram)
    return rendered.encode()


@dataclass(frozen=True)
class ReleaseSummary:
    """What building a release wrote (``unchanged``: an existing release already held exactly this)."""

    path: Path
    version: str
    manifest: dict
    unchanged: bool = False


def _record_size(rel: str) -> int | None:
    name = rel.rpartition("/")[2]
    return record_dtype(KV_FILES[name][0]).itemsize if rel.startswith("kv/") and name in KV_FILES else None


def release_content(manifest: Mapping[str, object]) -> dict[str, object]:
    """What a release holds: every data file's sha256 and the content fields (not the card, code or packages)."""
    files = manifest.get("files", {})
    return {
        "files": {rel: entry["sha256"] for rel, entry in files.items() if rel != CARD},  # type: ignore[union-attr]
        **{name: manifest.get(name) for name in CONTENT_FIELDS},
    }


def content_differences(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """Names of the files and manifest fields whose content differs between two manifests."""
    a, b = release_content(old), release_content(new)
    files_a, files_b = a.pop("files"), b.pop("files")
    files = [rel for rel in set(files_a) | set(files_b) if files_a.get(rel) != files_b.get(rel)]
    fields = [f"manifest {name}" for name in CONTENT_FIELDS if a[name] != b[name]]
    # The subsets first: they are what a user compares releases by.
    return sorted(files, key=lambda rel: (not rel.startswith("data/"), rel)) + fields


def build_release(
    layout: OutputLayout,
    version: str,
    *,
    inputs: dict,
    predictors: Mapping[str, Mapping[str, object]],
    name: str = DEFAULT_NAME,
    subsets: list[dict[str, object]] | None = None,
    changelog: dict | None = None,
    code: dict | None = None,
    packages: dict | None = None,
    hub_repo: str | None = None,
    tables: Sequence[ReleaseTable] = (),
) -> ReleaseSummary:
    """Assemble ``releases/<version>/`` with its dataset card and manifest; a built version is never rewritten.

    ``version`` ``auto`` picks the newest release when its contents are the same (nothing is written), else the next
    patch version after it (``v0.1.0`` when there is none). An explicit version that already exists is left as it
    is when the contents are the same and refused (:class:`ReleaseExistsError`) when they differ. ``changelog``,
    ``code`` and ``packages`` default to a fresh comparison with the previous release and the running code;
    ``verify`` passes the recorded ones so that only the data decides whether bytes match. ``hub_repo`` is the Hub
    repo the card's usage snippet names (None: a placeholder; a push writes the repo in, and ``verify`` passes the
    recorded one). ``tables`` are finished tables (LAION-POP) released as their own configs, their parts copied
    byte for byte; they are listed in the manifest's ``tables`` field, which a release without tables lacks.
    """
    if version != AUTO:
        check_version(version)
    with release_lock(layout):  # one build at a time decides the version and renames into place
        return _build_release_locked(
            layout, version, inputs, predictors, name, subsets, changelog, code, packages, hub_repo, tables
        )


@contextmanager
def release_lock(layout: OutputLayout) -> Iterator[None]:
    """Hold an exclusive lock on the data root's releases (another build waits; the lock goes with the process).

    The lock file sits beside ``releases/``, not in it, so mirroring that folder never touches it.
    """
    with _releases_lock(layout.root):
        yield


@contextmanager
def release_folder_lock(release_dir: Path) -> Iterator[None]:
    """The release lock of the data root holding ``release_dir`` (``<data_root>/releases/<version>``).

    A folder elsewhere (a copy handed to ``laion-assets push``) belongs to no data root and is not locked.
    """
    folder = Path(release_dir).resolve()
    if folder.parent.name != "releases":
        yield
        return
    with _releases_lock(folder.parent.parent):
        yield


@contextmanager
def _releases_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".releases.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_release_locked(
    layout: OutputLayout,
    version: str,
    inputs: dict,
    predictors: Mapping[str, Mapping[str, object]],
    name: str,
    subsets: list[dict[str, object]] | None,
    changelog: dict | None,
    code: dict | None,
    packages: dict | None,
    hub_repo: str | None,
    tables: Sequence[ReleaseTable],
) -> ReleaseSummary:
    newest = newest_release(layout) if version == AUTO else None
    target_version = (next_version(newest.name) if newest else FIRST_VERSION) if version == AUTO else version
    check_version(target_version)
    existing = newest if version == AUTO else layout.release_dir(target_version)
    sources, table_entries = with_tables(release_sources(layout), tables)
    target = layout.release_dir(target_version)
    if target.exists() and not (target / MANIFEST).is_file():
        raise ReleaseExistsError(
            f"{target}: exists but is not a release (no manifest.json); it is never deleted: move it away or "
            "choose another version"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target_version}.", suffix=".tmp", dir=target.parent))
    try:
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        files = {rel: file_entry(tmp / rel, _record_size(rel)) for rel in sorted(sources)}
        manifest = {
            "format": FORMAT_VERSION,
            "name": name,
            "version": target_version,
            "subsets": subsets if subsets is not None else subset_rules(),
            "thresholds": thresholds(),
            "predictors": {k: dict(v) for k, v in predictors.items()},
            "inputs": inputs,
            "files": files,
            "code": code if code is not None else code_version(),
            "packages": packages if packages is not None else package_versions(),
            "hub_repo": hub_repo,
        }
        if table_entries:
            manifest["tables"] = table_entries
        if changelog is None:
            changelog = compute_changelog(previous_release(layout, target_version), tmp, json.loads(dumps(manifest)))
        manifest["changelog"] = changelog
        # Round-trip through JSON so the card sees exactly what a later reader of manifest.json sees.
        manifest = json.loads(dumps(manifest))
        if existing is not None and (existing / MANIFEST).is_file():
            recorded = load_manifest(existing)
            differing = content_differences(recorded, manifest)
            if not differing:
                return ReleaseSummary(existing, recorded["version"], recorded, unchanged=True)
            if version != AUTO:
                shown = ", ".join(differing[:6]) + (f" and {len(differing) - 6} more" if len(differing) > 6 else "")
                raise ReleaseExistsError(
                    f"{existing}: release {target_version} already exists with other contents ({shown}); a released "
                    f"version is never rewritten: set release_config.version to a new version (e.g. "
                    f"{next_version(newest_release(layout).name)}) or to 'auto'"
                )
        (tmp / CARD).write_bytes(release_card(tmp, manifest))
        manifest["files"][CARD] = file_entry(tmp / CARD)
        (tmp / MANIFEST).write_text(dumps(manifest))
        os.rename(tmp, target)  # under the lock, and checked above: the target does not exist
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReleaseSummary(target, target_version, manifest)


def tags_identities(layout: OutputLayout) -> dict[str, str]:
    """The predictor identity of each score column, as recorded in the tags table (all shards agree)."""
    files = sorted(layout.require(layout.tags_dir, "aesthetic_tags").glob("part-*.parquet"))
    if not files:
        raise BadInputError(f"{layout.tags_dir}: aesthetic_tags holds no part files; re-materialize aesthetic_tags")
    raw = (pq.read_schema(files[0]).metadata or {}).get(IDENTITY_KEY.encode())
    if raw is None:
        raise BadInputError(f"{files[0]}: no predictor identity recorded; re-materialize aesthetic_tags")
    return dict(json.loads(raw))


def subsets_with_funnels(layout: OutputLayout) -> list[dict[str, object]]:
    """Every subset's rule with its row count and where its candidates went (dropped by language, URL, ...)."""
    files = tag_files(layout)
    out = []
    for entry in subset_rules():
        name = str(entry["name"])
        rows = subset_rows(subset_files(layout.require(layout.subset_dir(name), name)))
        out.append({**entry, "rows": rows, "funnel": rule_funnel(files, rule_of(name), rows)})
    return out


def audit_subsets(layout: OutputLayout, funnels: Mapping[str, Mapping[str, int]] | None = None) -> list[SubsetAudit]:
    """Recount every subset independently from the tags table (``audit``)."""
    files = tag_files(layout)
    return [
        audit_subset(
            rule.asset_name,
            files,
            subset_files(layout.require(layout.subset_dir(rule.asset_name), rule.asset_name)),
            rule,
            (funnels or {}).get(rule.asset_name),
        )
        for rule in (*V2_SUBSETS, *V1_SUBSETS)
    ]


def check_release_inputs(layout: OutputLayout, safety: Location | None) -> str:
    """The tags table every released output was computed from; raises naming each output that is not current.

    The subsets, KV files, histogram and bucket embeddings each record the tags table they read
    (``tags.read_built_from``); the tags record the safety table they joined, which must be the one ``safety_tags``
    indexed from the configured table, unchanged since.
    """
    files = tag_files(layout)
    tags_id = recorded_ids(files)
    joined = recorded_ids(files, SAFETY_ID_KEY)
    configured = check_safety_current(safety, layout.safety_dir)
    if joined != configured:
        raise SourceChangedError(
            f"aesthetic_tags joined safety table {joined!r} but the configured one is {configured!r}; "
            "re-materialize safety_tags and aesthetic_tags (and what follows them)"
        )
    outputs = [(rule.asset_name, layout.subset_dir(rule.asset_name)) for rule in (*V2_SUBSETS, *V1_SUBSETS)]
    outputs += [("aesthetic_kv", layout.kv_dir), ("score_histogram", layout.histogram_path)]
    outputs += [("bucket_embeddings", layout.buckets_dir)]
    stale = []
    for asset, output in outputs:
        recorded = read_built_from(output)
        if recorded != tags_id:
            stale.append(f"{asset} ({'computed from another aesthetic_tags' if recorded else 'records no tags'})")
    if stale:
        raise BadInputError(
            f"release stopped: {', '.join(stale)} not computed from the current aesthetic_tags ({tags_id}); "
            "re-materialize them (everything downstream of aesthetic_tags)"
        )
    return tags_id


def release_from_layout(
    layout: OutputLayout,
    version: str,
    source: Location,
    predictor_files: Mapping[str, Path],
    dim: int,
    name: str = DEFAULT_NAME,
    safety: Location | None = None,
    swap_width_height: bool = False,
    language: str = ENGLISH,
    excluded_shards: Sequence[str] = (),
    validations: Mapping[str, Validation] | None = None,
    image_heads: Mapping[str, tuple[str, str | None]] | None = None,
    tables: Sequence[ReleaseTable] = (),
) -> ReleaseSummary:
    """Build a release from a data root whose spine is built, recording the source parts and predictors.

    Every subset is first recounted independently from the tags table; a subset that is not exactly what its rule
    selects stops the release (nothing is written). ``tables`` (LAION-POP) are released as their own configs.
    """
    validations = validations if validations is not None else tags_validations(layout)
    check_release_inputs(layout, safety)
    subsets = subsets_with_funnels(layout)
    failed = [a for a in audit_subsets(layout, {s["name"]: s["funnel"] for s in subsets}) if not a.passed]
    if failed:
        raise BadInputError(
            "release stopped: " + " | ".join(p for a in failed for p in a.problems) + "; rebuild the subsets"
        )
    inputs = {
        **source_entry(source, validations),
        "embedding_dim": dim,
        "safety": safety_entry(safety, SafetySource.read(layout.safety_dir) if safety is not None else None),
        # Where punsafe/pwatermark came from (LAION's table or metadata, our heads, or both) and how many rows each.
        "safety_columns": safety_columns_record(layout.tags_dir),
        "swap_width_height": swap_width_height,
        "language": language,
        "excluded_shards": sorted(excluded_shards),
    }
    predictors = predictor_entries(tags_identities(layout), dict(predictor_files), image_heads)
    return build_release(
        layout, version, inputs=inputs, predictors=predictors, name=name, subsets=subsets, tables=tables
    )
