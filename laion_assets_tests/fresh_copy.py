"""A fresh copy of the project with a ``.venv`` that behaves like the one ``make venv`` builds, in a second.

The copy holds what a clone holds (``git ls-files``, plus files not yet committed and not ignored). Its venv is
made with ``venv --without-pip`` from the base interpreter; a ``.pth`` puts the copy first on the path, then the
running venv's site-packages (so every pinned package is there without installing), and the console scripts
point at the copy's python. ``.venv/.installed`` is newer than ``pyproject.toml``, so ``make`` does not rebuild
it; ``make`` applies ``scripts/patch-activate.sh`` itself, as on a real first run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path

from laion_assets.core.paths import PROJECT_DIR

SCRIPTS = ("dagster", "dagster-webserver", "dagster-daemon", "dg", "laion-assets")
# What a clone does not have: built or run-time folders.
NOT_IN_A_CLONE = {".venv", ".git", ".dagster", ".dagster-urls", "__pycache__", ".pytest_cache", ".ruff_cache"}
NOT_IN_A_CLONE_PATHS = {"data/out", "data/sample", "data/demo-urls"}


def project_files(root: Path = PROJECT_DIR) -> list[str]:
    """The project's files as a clone would have them, relative to ``root``."""
    if (root / ".git").exists():
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted(f for f in listed.split("\0") if f and (root / f).is_file())
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not set(rel.parts) & NOT_IN_A_CLONE:
            if not any(rel.as_posix().startswith(p + "/") for p in NOT_IN_A_CLONE_PATHS):
                files.append(rel.as_posix())
    return sorted(files)


def copy_project(dest: Path, root: Path = PROJECT_DIR) -> Path:
    """Copy the project's files into ``dest`` (modification times kept, as a checkout would not matter here)."""
    for rel in project_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target, follow_symlinks=False)
    return dest


def make_venv(root: Path) -> Path:
    """Give the copy at ``root`` a ``.venv`` whose python imports the copy's ``laion_assets`` and our packages."""
    venv = root / ".venv"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Path lines only: the running venv's .pth files (its editable finder for the original) are not processed.
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "laion_assets_fresh_copy.pth").write_text("\n".join([str(root), *ours]) + "\n")
    for ep in entry_points(group="console_scripts"):
        if ep.name in SCRIPTS:
            script = venv / "bin" / ep.name
            # As pip writes them: the guard matters, dagster's executors spawn processes that re-import __main__.
            script.write_text(
                f"#!{python}\nimport sys\nfrom {ep.module} import {ep.attr}\n"
                f"if __name__ == '__main__':\n    sys.exit({ep.attr}())\n"
            )
            script.chmod(0o755)
    (venv / ".installed").touch()
    return venv


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell environment: no venv active, none of our settings, no test paths; plus ``extra``."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DAGSTER_HOME", "DAGSTER_MODULE_NAME", "DAGSTER_PACKAGE_NAME")
    drop += ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # under `make test`: the copy's make is a user's, not a sub-make
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("DAGSTER_CLI_", "LAION_ASSETS_", "PYTEST_"))
    }
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != ours)
    env.update(extra)
    return env


def run_all(
    cases: Mapping[str, tuple[list[str], dict[str, str]]], cwd: Path = PROJECT_DIR, workers: int = 3
) -> dict[str, subprocess.CompletedProcess]:
    """Run independent commands (argv, environment) side by side in ``cwd``; their results by case name."""

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(run, args, env) for name, (args, env) in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def ok(result: subprocess.CompletedProcess) -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def failed(result: subprocess.CompletedProcess) -> str:
    """The output (stdout and stderr) of a command that must have failed."""
    assert result.returncode != 0, result.stdout[-2000:]
    return result.stdout + result.stderr


def section_commands(title: str, readme: Path = PROJECT_DIR / "README.md") -> list[str]:
    """The command lines of the bash blocks in the README section whose heading starts with ``title``."""
    section = re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## )", readme.read_text(), re.S | re.M)
    assert section, f"{readme}: no section '{title}'"
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", section.group(1), re.S | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]
