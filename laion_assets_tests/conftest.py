"""Shared fixtures: small generated samples in clip-retrieval layout.

LAION's real files that the exactness tests compare with ship in the repo (``data/models/``, ``data/reference/``,
checked against the sha256 in their SOURCES.md), so those tests run on every clone; nothing reads ``../shared``.
"""

import os
from pathlib import Path

import pytest

# Nothing may download at test time: make every hub client fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

from laion_assets.demos.sample import SampleSpec, write_sample

SMALL_SPEC = SampleSpec(parts=3, rows_per_part=400, seed=7)


@pytest.fixture(scope="session")
def small_sample_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated sample (3 parts x 400 rows), built once per session; treat it as read-only."""
    out = tmp_path_factory.mktemp("sample") / "sample"
    write_sample(out, SMALL_SPEC)
    return out


@pytest.fixture
def small_sample(small_sample_session: Path, tmp_path: Path) -> Path:
    """A private copy of the small sample that a test may damage."""
    import shutil

    out = tmp_path / "sample"
    shutil.copytree(small_sample_session, out)
    return out
