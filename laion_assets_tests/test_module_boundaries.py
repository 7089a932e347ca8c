"""The house by stages: imports run one way along LAION's chain, and pure modules never import dagster.

Stages, in chain order: ``core`` (shared), ``sources``, ``images``, ``scoring``, ``selection``, ``release``,
``retrieval``, ``pop``. A module of a stage may import its own stage and earlier ones, never a later one, ``defs``, the
front ends or the code location. The wiring (``defs``, ``definitions``) and the front ends (``cli``, ``demos``)
may import any stage.
"""

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import laion_assets
from laion_assets.core.paths import PROJECT_DIR

STAGES = ("core", "sources", "images", "scoring", "selection", "release", "retrieval", "pop")
PACKAGE_DIR = Path(laion_assets.__file__).parent
# Modules that run Dagster (the code location and the front ends that launch it); every other one is pure.
WIRING = {
    "laion_assets.definitions",
    "laion_assets.definitions_k8s",
    "laion_assets.cli",
    "laion_assets.demos.local",
    "laion_assets.demos.urls",
}


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(laion_assets.__path__, "laion_assets."))


def pure_modules() -> list[str]:
    return [n for n in all_modules() if not n.startswith("laion_assets.defs") and n not in WIRING]


def module_file(name: str) -> Path:
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported(source: str) -> set[str]:
    """Every module a source imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in STAGES else None


def test_every_pure_module_lives_in_a_stage_or_the_demos():
    loose = [n for n in pure_modules() if stage_of(n) is None and not n.startswith("laion_assets.demos")]
    assert loose == [], loose


def test_rule_modules_exist_under_their_stages():
    names = set(all_modules())
    for rule in (
        "sources.hashing",
        "sources.layout",
        "scoring.predictors",
        "selection.thresholds",
        "selection.buckets",
        "selection.histogram",
        "selection.subsets",
        "selection.schemas",
        "release.kv",
    ):
        assert f"laion_assets.{rule}" in names


def later_imports(name: str, source: str) -> list[str]:
    """Imports of ``source`` (module ``name``) that reach a later stage, defs, the front ends or the code location."""
    stage = stage_of(name)
    if stage is None:
        return []
    wrong = []
    for target in sorted(imported(source)):
        if not target.startswith("laion_assets"):
            continue
        other = stage_of(target)
        if other is None or STAGES.index(other) > STAGES.index(stage):
            wrong.append(f"{name} imports {target}")
    return wrong


def test_stages_import_only_their_own_and_earlier_stages():
    wrong = [w for n in all_modules() for w in later_imports(n, module_file(n).read_text())]
    assert wrong == []


def test_the_walk_finds_a_later_stage_import_inside_a_function():
    source = (
        "from laion_assets.core.errors import BadInputError\n\ndef f():\n    from laion_assets.release.kv import KV\n"
    )
    assert later_imports("laion_assets.sources.layout", source) == [
        "laion_assets.sources.layout imports laion_assets.release.kv"
    ]
    assert later_imports("laion_assets.release.kv", source) == []
    assert later_imports("laion_assets.core.paths", "import laion_assets.defs.jobs\n") == [
        "laion_assets.core.paths imports laion_assets.defs.jobs"
    ]


def test_pure_modules_name_no_dagster_import():
    wrong = [
        f"{n} imports {t}"
        for n in pure_modules()
        for t in imported(module_file(n).read_text())
        if t.split(".")[0] == "dagster"
    ]
    assert wrong == []


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


def readme_table() -> list[tuple[str, list[str]]]:
    """(stage, module paths) of every row of the README's "Where each LAION rule lives" table."""
    text = (PROJECT_DIR / "README.md").read_text()
    section = text.split("## Where each LAION rule lives", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("stage", "---"):
            rows.append((cells[0], re.findall(r"`(laion_assets/[^`]+\.py)`", cells[2])))
    return rows


def test_readme_rule_table_matches_the_tree():
    rows = readme_table()
    assert rows, "the README lost its rule table"
    named = {path for _, paths in rows for path in paths}
    for stage, paths in rows:
        for path in paths:
            assert (PROJECT_DIR / path).is_file(), f"README names {path}, which does not exist"
            assert path.split("/")[1] == stage, f"README puts {path} under stage {stage}"
    on_disk = {
        str(path.relative_to(PROJECT_DIR))
        for folder in (*STAGES, "demos")
        for path in (PACKAGE_DIR / folder).glob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(on_disk - named) == [], "modules the README's rule table does not name"


# The front ends: the ``laion-assets`` command and the demos. They call the stages' public functions, Dagster's API
# or the code location's public surface (``laion_assets.definitions``), never the wiring inside ``defs``.
FRONT_ENDS = ("laion_assets.cli", "laion_assets.demos")


def front_ends() -> list[str]:
    return [n for n in all_modules() if n == FRONT_ENDS[0] or n.startswith(FRONT_ENDS[1] + ".")]


def defs_imports(name: str, source: str) -> list[str]:
    """Imports of ``source`` (module ``name``) that reach into ``laion_assets.defs``, however they are spelled."""
    targets = set(imported(source))
    for node in ast.walk(ast.parse(source)):  # `from laion_assets import defs` names the package as an alias
        if isinstance(node, ast.ImportFrom) and node.module == "laion_assets":
            targets.update(f"laion_assets.{alias.name}" for alias in node.names)
    return [
        f"{name} imports {t}" for t in sorted(targets) if t == "laion_assets.defs" or t.startswith("laion_assets.defs.")
    ]


def test_front_ends_use_public_entry_points():
    names = front_ends()
    assert {"laion_assets.cli", "laion_assets.demos.local", "laion_assets.demos.urls"} <= set(names)
    wrong = [w for n in names for w in defs_imports(n, module_file(n).read_text())]
    assert wrong == [], "front ends reach into defs; use laion_assets.definitions' public names instead"


def test_the_front_end_walk_finds_every_spelling_of_a_defs_import():
    inside = "def f():\n    from laion_assets.defs.resources import StorageResource\n"
    assert defs_imports("laion_assets.cli", inside) == ["laion_assets.cli imports laion_assets.defs.resources"]
    assert defs_imports("m", "import laion_assets.defs.jobs\n") == ["m imports laion_assets.defs.jobs"]
    assert defs_imports("m", "from laion_assets import defs\n") == ["m imports laion_assets.defs"]
    assert defs_imports("m", "from laion_assets.defs import jobs\n") == ["m imports laion_assets.defs"]
    assert defs_imports("m", "from laion_assets.definitions import defs, shard_job\nimport dagster as dg\n") == []
