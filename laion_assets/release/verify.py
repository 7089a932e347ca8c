"""``laion-assets verify RELEASE_DIR``: rebuild a release from its manifest's inputs and name every differing file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, file_sha256, location
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import MODELS_DIR, PROJECT_DIR, resolve
from laion_assets.core.settings import SAFETY, SOURCE
from laion_assets.release.build import build_release, subsets_with_funnels
from laion_assets.release.card import subset_files as release_parts
from laion_assets.release.manifest import (
    CARD,
    IMAGE_INPUT,
    check_files,
    code_version,
    load_manifest,
    package_versions,
)
from laion_assets.release.rebuild import rebuild
from laion_assets.release.tables import recorded_tables, table_problems
from laion_assets.scoring.predictors import CLIP_L14_DIM, inspect_weights
from laion_assets.selection.safety_columns import SafetySources
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.metadata import ENGLISH


@dataclass
class VerifyReport:
    """Files that differ (release path -> why) and notes that do not fail verification."""

    release_dir: Path
    version: str
    differing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file matches the manifest and the rebuild."""
        return not self.differing

    def text(self) -> str:
        """A human-readable report, one line per differing file."""
        lines = [
            f"{self.release_dir} ({self.version}): " + ("OK" if self.ok else f"{len(self.differing)} file(s) differ")
        ]
        lines += [f"  DIFFERS {rel}: {why}" for rel, why in sorted(self.differing.items())]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def locate_source(manifest: dict, release_dir: Path, source: Location | None) -> Location:
    """The source folder to rebuild from, checked part by part against the recorded hashes."""
    recorded = manifest["inputs"]
    if source is None:
        if recorded.get("source") is None:
            raise BadInputError(
                f"{release_dir / 'manifest.json'}: the source folder was outside the project, so the manifest "
                f"does not name it; pass {SOURCE.flag} DIR or set {SOURCE.env}"
            )
        source = location(recorded["source"])
    parts = {p.key: p for p in discover_parts(source)}
    for entry in recorded["parts"]:
        part = parts.get(entry["key"])
        if part is None:
            raise BadInputError(f"{source}: part {entry['key']} of the release is missing; cannot rebuild")
        for kind in ("embeddings", "metadata"):
            path = getattr(part, kind)
            if file_sha256(path) != entry[f"{kind}_sha256"]:
                raise BadInputError(
                    f"{path}: not the input the release was built from (sha256 differs); cannot rebuild"
                )
    excluded = set(recorded.get("excluded_shards", []))
    extra = sorted(set(parts) - {e["key"] for e in recorded["parts"]} - excluded)
    if extra:
        raise BadInputError(
            f"{source}: parts {extra} were not in the release; point {SOURCE.flag} (or {SOURCE.env}) at the original "
            "folder"
        )
    return source


def locate_safety(manifest: dict, release_dir: Path, safety: Location | None) -> Location | None:
    """The safety-tags table to rebuild with (None when the release used none), checked file by file."""
    recorded = manifest["inputs"].get("safety")
    if recorded is None:
        return None
    if safety is None:
        if recorded.get("source") is None:
            raise BadInputError(
                f"{release_dir / 'manifest.json'}: the safety table was outside the project, so the manifest "
                f"does not name it; pass {SAFETY.flag} DIR or set {SAFETY.env}"
            )
        safety = location(recorded["source"])
    for entry in recorded["files"]:
        path = safety / entry["path"] if safety.is_dir() else safety
        if not path.exists() or file_sha256(path) != entry["sha256"]:
            raise BadInputError(f"{path}: not the safety file the release was built from; cannot rebuild")
    return safety


def release_part_rows(manifest: Mapping[str, object]) -> dict[str, int]:
    """Each subset's part size as the release was written: its first part's rows when it has several.

    A subset in one part was written with a part size at least its rows; its rows (or 1) give that same one part.
    """
    sizes = {}
    for subset in manifest["subsets"]:  # type: ignore[attr-defined]
        parts = list(release_parts(manifest, str(subset["name"])).values())
        sizes[str(subset["name"])] = max(1, int(parts[0]["rows"])) if parts else 1
    return sizes


WEIGHTS_SUFFIXES = (".pth", ".pt", ".npz")  # torch heads; numpy .npz NSFW heads
DATA_ROOT_ENV = "LAION_ASSETS_DATA_ROOT"


def weights_data_roots(release_dir: Path | None) -> list[Path]:
    """Data roots whose ``predictors/`` may hold a release's weights: its own and ``$LAION_ASSETS_DATA_ROOT``."""
    roots = []
    if release_dir is not None:
        folder = Path(release_dir).resolve()
        if folder.parent.name == "releases":  # <data_root>/releases/<version>
            roots.append(folder.parent.parent)
    env = os.environ.get(DATA_ROOT_ENV)
    if env and "://" not in env:  # a remote data root's predictors are not searched
        roots.append(resolve(env))
    return list(dict.fromkeys(roots))


def _weights_files(folder: Path, recursive: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix in WEIGHTS_SUFFIXES and p.is_file())


def locate_weights(
    manifest: dict, weights: Mapping[str, Path] | None, release_dir: Path | None = None
) -> dict[str, Path]:
    """The weights file of each score column, found by the recorded identity (kind + sha256 of the tensors).

    A ``weights`` entry is the only candidate of its column. Otherwise the candidates are the recorded
    project-relative file, every weights file in ``data/models/`` (and ``data/models/nsfw/``), and every
    ``.pth``/``.pt``/``.npz`` under the
    ``predictors/`` folder of the release's data root (``<data_root>/releases/<version>``) and of
    ``$LAION_ASSETS_DATA_ROOT``; the first whose tensors have the recorded identity wins.
    """
    identities: dict[Path, str | None] = {}

    def identity_of(path: Path) -> str | None:
        if path not in identities:
            try:
                identities[path] = str(inspect_weights(path).identity)
            except BadInputError:  # not a predictor at all: just not a candidate
                identities[path] = None
        return identities[path]

    roots = weights_data_roots(release_dir)
    out: dict[str, Path] = {}
    for column, info in manifest["predictors"].items():
        if info.get("input") == IMAGE_INPUT:  # scored from the images: its values come from locate_watermarks
            continue
        identity = str(info["identity"])
        if weights and column in weights:
            path = Path(weights[column])
            found = inspect_weights(path).identity  # names the file when it is missing or not a predictor
            if str(found) != identity:
                raise BadInputError(f"{path}: its weights are {found}, but {column!r} was scored by {identity}")
            out[column] = path
            continue
        shipped = [*_weights_files(MODELS_DIR, recursive=False), *_weights_files(MODELS_DIR / "nsfw", recursive=False)]
        candidates = [PROJECT_DIR / str(info["file"]), *shipped]
        candidates += [p for root in roots for p in _weights_files(root / "predictors", recursive=True)]
        found = next((p for p in dict.fromkeys(candidates) if p.is_file() and identity_of(p) == identity), None)
        if found is None:
            places = [f"{info['file']} (recorded)", str(MODELS_DIR), *(str(r / "predictors") for r in roots)]
            raise BadInputError(
                f"no weights file with identity {identity} for {column!r} in {', '.join(places)}; "
                f"pass --weights {column}=PATH"
            )
        out[column] = found
    return out


def locate_watermarks(manifest: dict, release_dir: Path | None) -> dict[str, Path]:
    """Each released shard's ``watermark.parquet`` when the release's ``pwatermark`` was computed from images.

    A rebuild from the embeddings cannot score images, so it joins the per-shard values the watermark head wrote
    (found in the release's data root or ``$LAION_ASSETS_DATA_ROOT``); the tags join checks them row by row.
    """
    info = manifest["predictors"].get("pwatermark")
    if not info or info.get("input") != IMAGE_INPUT:
        return {}
    keys = [str(p["key"]) for p in manifest["inputs"].get("parts", [])]
    roots = weights_data_roots(release_dir)
    for root in roots:
        found = {key: OutputLayout(root).shard_watermark(key) for key in keys}
        if all(path.is_file() for path in found.values()):
            return found
    raise BadInputError(
        f"pwatermark of release {manifest['version']} was computed from images by {info['identity']}, which a "
        f"rebuild from the embeddings cannot redo: it needs every shard's watermark.parquet, and no data root "
        f"({', '.join(map(str, roots)) or 'none found'}) holds all of them; set {DATA_ROOT_ENV} to the data root "
        "that built the release"
    )


def forced_columns(manifest: dict) -> list[str]:
    """Score columns the release was scored for with a forced predictor (the rebuild must force them too)."""
    return sorted(c for c, info in manifest["predictors"].items() if info.get("forced"))


def verify_release(
    release_dir: str | Path,
    source: str | Path | None = None,
    weights: Mapping[str, Path] | None = None,
    workdir: str | Path | None = None,
    safety: str | Path | None = None,
) -> VerifyReport:
    """Check the release's files against its manifest, then rebuild them from its inputs and compare hashes.

    A table (LAION-POP) cannot be rebuilt from the embeddings: its files are checked by sha256, rows and
    ``settings.json``, and the rebuild takes them from the release folder when they pass (so the card is compared).
    """
    release_dir = Path(release_dir)
    manifest = load_manifest(release_dir)
    report = VerifyReport(release_dir, manifest["version"])
    for rel, why in check_files(release_dir, manifest).items():
        report.differing[rel] = f"in the release folder: {why}"
    tables = recorded_tables(release_dir, manifest)
    for rel, why in table_problems(release_dir, manifest).items():
        earlier = report.differing.get(rel)
        report.differing[rel] = f"{earlier}; {why}" if earlier else f"in the release folder: {why}"
    table_paths = tuple(f"{t.path}/" for t in tables)
    intact = not any(rel.startswith(table_paths) for rel in report.differing)
    if tables:
        report.notes.append(
            f"table(s) {', '.join(f'{t.config} ({t.path}/)' for t in tables)} cannot be rebuilt from the inputs: "
            + (
                "checked by sha256, rows and settings.json, and the rebuild took them from the release folder"
                if intact
                else f"they differ, so the rebuild left them out and {CARD} was not compared with a rebuilt one"
            )
        )
    src = locate_source(manifest, release_dir, location(source) if source else None)
    safety_table = locate_safety(manifest, release_dir, location(safety) if safety else None)
    weight_files = locate_weights(manifest, weights, release_dir)
    watermark_files = locate_watermarks(manifest, release_dir)
    if watermark_files:
        report.notes.append(
            f"pwatermark was computed from images: the rebuild joined the {len(watermark_files)} shards' "
            f"watermark.parquet of {next(iter(watermark_files.values())).parents[2]} (not re-scored)"
        )
    dim = int(manifest["inputs"].get("embedding_dim", CLIP_L14_DIM))
    inputs = manifest["inputs"]
    with tempfile.TemporaryDirectory(prefix="laion-verify-", dir=workdir) as tmp:
        layout = rebuild(
            src,
            Path(tmp) / "out",
            {c: weight_files[c] for c in sorted(weight_files)},
            dim,
            safety_table,
            bool(inputs.get("swap_width_height", False)),
            language=str(inputs.get("language", ENGLISH)),
            exclude=inputs.get("excluded_shards", []),
            forced=forced_columns(manifest),
            part_rows=release_part_rows(manifest),
            watermark_files=watermark_files,
            sources=SafetySources.from_dict({c: e["from"] for c, e in inputs.get("safety_columns", {}).items()}),
        )
        rebuilt = build_release(
            layout,
            manifest["version"],
            inputs=inputs,
            predictors=manifest["predictors"],
            name=manifest["name"],
            subsets=subsets_with_funnels(layout),
            changelog=manifest["changelog"],
            code=manifest["code"],
            packages=manifest["packages"],
            hub_repo=manifest.get("hub_repo"),  # the card names the repo a push wrote in
            tables=tables if intact else (),
        ).manifest
    for rel, entry in sorted(manifest["files"].items()):
        new = rebuilt["files"].get(rel)
        if not intact and (rel.startswith(table_paths) or rel == CARD):
            continue  # checked above; a rebuild without the table renders another card
        if new is None:
            report.differing.setdefault(rel, "not produced by the rebuild")
        elif new["sha256"] != entry["sha256"]:
            why = f"rebuilt sha256 {new['sha256']} != manifest {entry['sha256']}"
            report.differing[rel] = report.differing.get(rel, "") + ("; " if rel in report.differing else "") + why
    for rel in sorted(set(rebuilt["files"]) - set(manifest["files"]) - {CARD}):
        report.differing[rel] = "produced by the rebuild but not listed in the manifest"
    if code_version().get("git_commit") != manifest["code"].get("git_commit"):
        report.notes.append(
            f"built by commit {manifest['code'].get('git_commit')}, verified with {code_version()['git_commit']}"
        )
        if set(report.differing) == {CARD} and not report.differing[CARD].startswith("in the release folder"):
            # Every data file matched: the card is a rendering of the manifest, and other code renders it otherwise.
            report.notes.append(
                f"{CARD} differs ({report.differing.pop(CARD)}) only as rendered by other code: every data file "
                "matches; rebuild the release with this code for its card"
            )
    running = package_versions()
    for name, version in sorted(manifest["packages"].items()):
        if running.get(name) != version:
            report.notes.append(f"{name} {version} recorded, {running.get(name)} installed")
    return report
