"""The README's Development commands, run as written (``make test`` is the suite itself: CI runs it via .ci/run)."""

import subprocess

from laion_assets.core.paths import PROJECT_DIR
from laion_assets_tests.fresh_copy import section_commands, user_env


def test_development_commands_work_as_written():
    lines = section_commands("Development")
    assert [line.split("#")[0].strip() for line in lines] == [
        "make test", "make lint", "bash scripts/install-chromium.sh",
    ]  # fmt: skip
    for line in lines[1:]:
        done = subprocess.run(["bash", "-c", line], cwd=PROJECT_DIR, env=user_env(), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, f"`{line}` failed:\n{(done.stdout + done.stderr)[-3000:]}"
    version = subprocess.run(["chromium", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "Chromium" in version.stdout  # what the browser tests need
