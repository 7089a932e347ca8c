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

# The files that take a minute or more: collected first, so that under `make test` (xdist, whole files per worker)
# they start at once instead of leaving one worker alone with them at the end.
SLOW_FIRST = (
    "defs/test_quickstart.py",
    "defs/test_cli.py",
    "demos/test_demo_urls.py",
    "defs/test_webserver_e2e.py",
    "images/test_downloading.py",
    "defs/sources/test_cli_range.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slow files first (otherwise collection order): a scheduling hint only, tests stay independent."""

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).as_posix()
        return next((i for i, name in enumerate(SLOW_FIRST) if path.endswith(name)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: within a rank, the collected order


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots the browser tests took (``record_property("screenshot", path)``) at the end of the run."""
    shots = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == "screenshot" and getattr(report, "when", "call") == "call"
    ]
    if shots:
        terminalreporter.write_sep("-", "screenshots")
        for shot in shots:
            terminalreporter.write_line(str(shot))
