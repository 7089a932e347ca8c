"""Pure modules (every rule LAION defined) must never import dagster; the wiring lives in laion_assets.defs."""

import pkgutil
import subprocess
import sys

import laion_assets
from laion_assets.paths import PROJECT_DIR

WIRING = {"laion_assets.definitions", "laion_assets.demo", "laion_assets.demo_urls", "laion_assets.cli"}


def pure_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(laion_assets.__path__, "laion_assets.")]
    return sorted(n for n in names if not n.startswith("laion_assets.defs") and n not in WIRING)


def test_rule_modules_exist_under_their_names():
    names = set(pure_modules())
    for rule in ("hashing", "predictors", "thresholds", "buckets", "histogram", "subsets", "schemas", "layout"):
        assert f"laion_assets.{rule}" in names


def test_pure_modules_do_not_import_dagster():
    modules = pure_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
