"""Helpers for release tests: build the spine and a release from a generated sample without Dagster."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import NSFW_L14_WEIGHTS, V1_WEIGHTS, V2_WEIGHTS
from laion_assets.release.build import ReleaseSummary, release_from_layout
from laion_assets.release.rebuild import rebuild
from laion_assets.selection.subsets import SUBSET_PART_ROWS
from laion_assets.sources.layout import discover_parts

# The project's active heads (predictors.yaml), so a pure rebuild matches what the graph builds by default.
WEIGHTS = {"aesthetic": V1_WEIGHTS, "AESTHETIC_SCORE": V2_WEIGHTS, "punsafe": NSFW_L14_WEIGHTS}


def build(
    source: Path, data_root: Path, version: str = "v0.1.0", part_rows: int = SUBSET_PART_ROWS
) -> tuple[OutputLayout, ReleaseSummary]:
    """Run the spine from ``source`` into ``data_root`` (subsets in parts of ``part_rows``), assemble ``version``."""
    layout = rebuild(source, data_root, WEIGHTS, part_rows=part_rows)
    summary = release_from_layout(layout, version, source, WEIGHTS, 768)
    return layout, summary


def copy_sample(sample: Path, dest: Path, keep_parts: int | None = None) -> Path:
    """Copy a sample folder, optionally keeping only its first ``keep_parts`` parts."""
    shutil.copytree(sample, dest)
    if keep_parts is not None:
        for part in discover_parts(dest)[keep_parts:]:
            part.embeddings.unlink()
            part.metadata.unlink()
    return dest


def grow(folder: Path, sample: Path) -> Path:
    """Add to ``folder`` the parts of ``sample`` it lacks (a source that grew; a data root holds one source)."""
    for part in discover_parts(sample):
        for path in (part.embeddings, part.metadata):
            target = folder / path.relative_to(sample)
            if not target.exists():
                shutil.copy(path, target)
    return folder


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``, keyed by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
