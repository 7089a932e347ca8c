"""``laion-assets verify RELEASE_DIR``: rebuild a release from its manifest's inputs and name every differing file."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from laion_assets.errors import BadInputError
from laion_assets.layout import discover_parts
from laion_assets.locations import Location, file_sha256, location
from laion_assets.manifest import CARD, check_files, code_version, load_manifest, package_versions
from laion_assets.paths import MODELS_DIR, PROJECT_DIR
from laion_assets.pipeline import rebuild
from laion_assets.predictors import CLIP_L14_DIM
from laion_assets.release import build_release, subsets_with_funnels
from laion_assets.thresholds import ENGLISH


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
                f"{release_dir / 'manifest.json'}: the source folder was outside the project; pass --source DIR"
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
        raise BadInputError(f"{source}: parts {extra} were not in the release; point --source at the original folder")
    return source


def locate_safety(manifest: dict, release_dir: Path, safety: Location | None) -> Location | None:
    """The safety-tags table to rebuild with (None when the release used none), checked file by file."""
    recorded = manifest["inputs"].get("safety")
    if recorded is None:
        return None
    if safety is None:
        if recorded.get("source") is None:
            raise BadInputError(
                f"{release_dir / 'manifest.json'}: the safety table was outside the project; pass --safety DIR"
            )
        safety = location(recorded["source"])
    for entry in recorded["files"]:
        path = safety / entry["path"] if safety.is_dir() else safety
        if not path.exists() or file_sha256(path) != entry["sha256"]:
            raise BadInputError(f"{path}: not the safety file the release was built from; cannot rebuild")
    return safety


def locate_weights(manifest: dict, weights: Mapping[str, Path] | None) -> dict[str, Path]:
    """The weights file of each score column, checked against the recorded predictor identity."""
    out: dict[str, Path] = {}
    for column, info in manifest["predictors"].items():
        candidates = [Path(weights[column])] if weights and column in weights else []
        candidates += [PROJECT_DIR / str(info["file"]), MODELS_DIR / Path(str(info["file"])).name]
        digest = str(info["identity"]).partition("@sha256:")[2]
        found = next((p for p in candidates if p.is_file() and file_sha256(p) == digest), None)
        if found is None:
            raise BadInputError(
                f"no weights file with sha256 {digest} for {column!r} (tried {', '.join(map(str, candidates))}); "
                f"pass --weights {column}=PATH"
            )
        out[column] = found
    return out


def verify_release(
    release_dir: str | Path,
    source: str | Path | None = None,
    weights: Mapping[str, Path] | None = None,
    workdir: str | Path | None = None,
    safety: str | Path | None = None,
) -> VerifyReport:
    """Check the release's files against its manifest, then rebuild them from its inputs and compare hashes."""
    release_dir = Path(release_dir)
    manifest = load_manifest(release_dir)
    report = VerifyReport(release_dir, manifest["version"])
    for rel, why in check_files(release_dir, manifest).items():
        report.differing[rel] = f"in the release folder: {why}"
    src = locate_source(manifest, release_dir, location(source) if source else None)
    safety_table = locate_safety(manifest, release_dir, location(safety) if safety else None)
    weight_files = locate_weights(manifest, weights)
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
        ).manifest
    for rel, entry in sorted(manifest["files"].items()):
        new = rebuilt["files"].get(rel)
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
    running = package_versions()
    for name, version in sorted(manifest["packages"].items()):
        if running.get(name) != version:
            report.notes.append(f"{name} {version} recorded, {running.get(name)} installed")
    return report
