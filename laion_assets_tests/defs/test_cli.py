"""Every ``laion-assets`` subcommand finds the source, data root and instance the same way: flag > environment.

The real CLI runs in subprocesses. Two demos build two data roots with their instances, one from flags, one from
the environment; then each subcommand runs once with flags (the environment pointing at decoys that would make it
fail) and once from the environment alone. The defaults (no flag, no variable) are tested on a fresh copy of the
project in ``test_quickstart.py``. Independent commands run side by side to keep the test short. Messages about
missing inputs come from the CLI run in this process; activation is tested in bash on a patched activate script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from laion_assets.cli import main
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.demos.sample import SampleSpec, write_sample
from laion_assets_tests.fresh_copy import failed, ok, run_all, user_env

BIN = Path(sys.executable).parent
CLI, DAGSTER = str(BIN / "laion-assets"), str(BIN / "dagster")
TINY = SampleSpec(parts=1, rows_per_part=400, seed=5)


def env_with(**settings: str) -> dict[str, str]:
    """A clean environment (none of our settings inherited) that runs this checkout, plus ``settings``."""
    return user_env(PYTHONPATH=str(PROJECT_DIR), **settings)


def shards_of(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sorted(instance.get_dynamic_partitions("shards"))


def rescore_config(home: Path) -> dict:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run_,) = instance.get_runs(dg.RunsFilter(job_name="rescore"))
        return run_.run_config["resources"]["storage"]["config"]


def release_of(root: Path) -> Path:
    (manifest,) = (root / "releases").glob("*/manifest.json")
    return manifest.parent


def test_every_subcommand_takes_the_flag_else_the_environment(tmp_path: Path):
    source = tmp_path / "sample"
    write_sample(source, TINY)
    flag_root, env_root, empty_root = tmp_path / "out-flag", tmp_path / "out-env", tmp_path / "empty"
    flag_home, env_home, empty_home = (tmp_path / n for n in ("home-flag", "home-env", "home-empty"))
    for folder in (empty_root, flag_home, env_home, empty_home):
        folder.mkdir()
    decoy_source = tmp_path / "decoy" / "sample"  # would be built (and checked for) if the flag lost
    # With flags given, the environment names places where the command would fail or that must stay untouched.
    decoys = env_with(LAION_ASSETS_SOURCE=str(decoy_source), LAION_ASSETS_DATA_ROOT=str(empty_root),
                      DAGSTER_HOME=str(empty_home))  # fmt: skip
    from_env = env_with(LAION_ASSETS_SOURCE=str(source), LAION_ASSETS_DATA_ROOT=str(env_root),
                        DAGSTER_HOME=str(env_home))  # fmt: skip
    flags = ["--data-root", str(flag_root), "--dagster-home", str(flag_home)]

    demos = run_all(
        {
            "flags": ([CLI, "demo", "--source", str(source), *flags], decoys),
            "env": ([CLI, "demo"], from_env),
        },
        workers=2,
    )
    for name, root, home in (("flags", flag_root, flag_home), ("env", env_root, env_home)):
        out = ok(demos[name])
        assert (root / "subsets" / "subset_6_5plus" / "part-00000.parquet").is_file(), name
        assert (root / "shards" / "00000" / "scores.parquet").is_file(), name
        assert shards_of(home) == ["00000"], name
        assert f"instance {home} (from {'--dagster-home' if name == 'flags' else 'DAGSTER_HOME'})" in out
    assert not decoy_source.parent.exists() and not any(empty_root.iterdir()) and shards_of(empty_home) == []

    some_hash = pl.read_parquet(flag_root / "tags" / "part-00000.parquet")["hash"][0]
    new_samples = tmp_path / "new-flag", tmp_path / "new-env"
    sample_args = ["sample", "--parts", "1", "--rows-per-part", "20"]
    register_homes = tmp_path / "register-flag", tmp_path / "register-env"
    wrong_root = env_with(LAION_ASSETS_DATA_ROOT=str(empty_root), DAGSTER_HOME=str(flag_home))
    source_files = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    for home in register_homes:
        home.mkdir()
    results = run_all(
        {
            "stale flags": ([CLI, "stale", *flags], decoys),
            # Pointed at a data root without outputs (the flag's, then the variable's): a clear error, not "nothing".
            "stale flag root": ([CLI, "stale", "--data-root", str(empty_root)], env_with(DAGSTER_HOME=str(flag_home))),
            "stale env root": ([CLI, "stale"], wrong_root),
            "stale no shards": ([CLI, "stale", "--data-root", str(flag_root)], decoys),
            # The case: after `demo --data-root X`, a plain `rescore` must not exit 0 having found nothing.
            "rescore env root": ([CLI, "rescore"], wrong_root),
            "rescore flags": ([CLI, "rescore", "--source", str(source), *flags], decoys),
            "rescore env": ([CLI, "rescore"], from_env),
            "kv flags": ([CLI, "kv", "lookup", str(some_hash), "--data-root", str(flag_root)], decoys),
            "kv env": ([CLI, "kv", "lookup", str(some_hash)], from_env),
            "register flags": (
                [CLI, "register", "--source", str(source), "--dagster-home", str(register_homes[0])],
                decoys,
            ),
            "register env": (
                [CLI, "register"],
                env_with(LAION_ASSETS_SOURCE=str(source), DAGSTER_HOME=str(register_homes[1])),
            ),
            "verify flags": ([CLI, "verify", str(release_of(flag_root)), "--source", str(source)], decoys),
            "verify env": ([CLI, "verify", str(release_of(env_root))], from_env),
            "sample flags": ([CLI, *sample_args, "--source", str(new_samples[0])], decoys),
            "sample env": ([CLI, *sample_args], env_with(LAION_ASSETS_SOURCE=str(new_samples[1]))),
            "sample over parts": ([CLI, *sample_args, str(source)], decoys),
            # dagster's own CLI: the storage resource's defaults come from the same environment variables.
            "dagster env": (
                [DAGSTER, "asset", "materialize", "-m", "laion_assets.definitions", "--select", "subset_6_5plus"],
                env_with(LAION_ASSETS_DATA_ROOT=str(empty_root), DAGSTER_HOME=str(empty_home)),
            ),
        }
    )

    assert "00000  current" in ok(results["stale flags"])
    for name, origin in (("stale flag root", "--data-root"), ("stale env root", "LAION_ASSETS_DATA_ROOT"),
                         ("rescore env root", "LAION_ASSETS_DATA_ROOT")):  # fmt: skip
        wrong = failed(results[name])
        assert f"registered in instance {flag_home} (from DAGSTER_HOME)" in wrong, name
        assert f"has outputs under the data root {empty_root} (from {origin})" in wrong, name
        assert "pass --data-root or set LAION_ASSETS_DATA_ROOT" in wrong, name
    no_shards = failed(results["stale no shards"])
    assert f"no shards are registered in the Dagster instance {empty_home} (from DAGSTER_HOME)" in no_shards

    # The rescore runs record where they read and wrote, in the instance each was pointed at.
    ok(results["rescore flags"])
    ok(results["rescore env"])
    assert rescore_config(flag_home) == {"source": str(source), "data_root": str(flag_root), "safety": ""}
    assert rescore_config(env_home) == {"source": str(source), "data_root": str(env_root), "safety": ""}

    for name in ("kv flags", "kv env"):
        assert ok(results[name]).split("\t")[0] == str(some_hash), name
    ok(results["register flags"])
    ok(results["register env"])
    assert [shards_of(h) for h in register_homes] == [["00000"], ["00000"]]
    assert shards_of(empty_home) == []
    for name in ("verify flags", "verify env"):
        assert "): OK" in ok(results[name]), name

    ok(results["sample flags"])
    ok(results["sample env"])
    for folder in new_samples:
        assert sorted(p.name for p in (folder / "img_emb").iterdir()) == ["img_emb_0.npy"]
    assert not decoy_source.parent.exists()
    refused = failed(results["sample over parts"])
    assert f"{source} (from --source) holds parts" in refused
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == source_files  # untouched

    nothing = failed(results["dagster env"])
    assert "aesthetic_tags is not materialized yet" in nothing and str(empty_root / "tags") in nothing


def cli_error(*argv: str) -> str:
    """The message ``laion-assets ARGV``, run in this process, exits with."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return str(info.value.code)


def test_missing_inputs_name_the_place_and_what_builds_it_for_this_setup(tmp_path: Path, monkeypatch):
    for name in ("LAION_ASSETS_SOURCE", "LAION_ASSETS_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # register exports it: restored after the test
    missing = tmp_path / "nonexistent"
    message = cli_error("register", str(missing))
    assert message.startswith(f"error: {missing}: embeddings folder not found") and "make demo" not in message
    assert "--source DIR" in message and "LAION_ASSETS_SOURCE" in message and not missing.exists()

    # A data root without KV files: the file, the data root and where that came from, and what writes the file.
    root = tmp_path / "out"
    message = cli_error("kv", "lookup", "1", "--data-root", str(root))
    kv = root / "kv" / "aesthetic.kv"
    assert message.startswith(f"error: {kv}: KV file not found under the data root {root} (from --data-root)")
    assert "`aesthetic_kv`" in message and f"--data-root {root}`" in message and "make demo" not in message
    monkeypatch.setenv("LAION_ASSETS_DATA_ROOT", str(root))
    message = cli_error("kv", "lookup", "1", "--safety")
    safety_kv = root / "kv" / "safety.kv"
    assert f"{safety_kv}: KV file not found under the data root {root} (from LAION_ASSETS_DATA_ROOT)" in message
    assert not root.exists()


def activate_script(tmp_path: Path) -> Path:
    venv = tmp_path / "repo" / ".venv"
    (venv / "bin").mkdir(parents=True)
    activate = venv / "bin" / "activate"
    activate.write_text(f'VIRTUAL_ENV="{venv}"\nexport VIRTUAL_ENV\n')
    return activate


def patch(activate: Path) -> None:
    subprocess.run(["bash", str(PROJECT_DIR / "scripts" / "patch-activate.sh"), str(activate)], check=True)


SHOW = 'echo "$DAGSTER_HOME"; echo "${DAGSTER_MODULE_NAME-unset}"; echo "$DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME"'


def test_activate_keeps_a_preset_dagster_home_and_exports_no_module_name(tmp_path: Path):
    activate = activate_script(tmp_path)
    patch(activate)
    patch(activate)
    assert activate.read_text().count("laion-assets: dagster project and instance") == 1  # idempotent

    def activated(script: str, **env: str) -> list[str]:
        done = subprocess.run(["bash", "-c", f". {activate}\n{script}"], env=user_env(**env), capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.splitlines()

    project_home = tmp_path / "repo" / ".dagster"
    assert activated(SHOW) == [str(project_home), "unset", "laion_assets.definitions"]
    assert os.readlink(project_home / "dagster.yaml") == "../dagster.yaml"
    mine = tmp_path / "mine"
    assert activated(SHOW, DAGSTER_HOME=str(mine)) == [str(mine), "unset", "laion_assets.definitions"]
    # Activating again keeps a DAGSTER_HOME set in between, and replaces only the value activation itself set.
    assert activated(f"export DAGSTER_HOME={mine}\n. {activate}\n{SHOW}")[0] == str(mine)
    assert activated(f". {activate}\n{SHOW}")[0] == str(project_home)


MODULE_VARIABLES = ("DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME", "DAGSTER_CLI_ASSET_LIST_MODULE_NAME",
                    "DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME")  # fmt: skip
# Our variables, the venv's, and every variable or function activation left behind.
STATE = (
    f'for n in DAGSTER_HOME {" ".join(MODULE_VARIABLES)} VIRTUAL_ENV; do echo "$n=${{!n-unset}}"; done\n'
    "compgen -v | grep -i laion; compgen -A function | grep -E 'laion|deactivate'; true"
)


def test_deactivate_takes_back_only_what_activation_set(tmp_path: Path):
    venv = tmp_path / "repo" / ".venv"  # a real venv: its own deactivate is the one we wrap
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    activate = venv / "bin" / "activate"
    patch(activate)
    patch(activate)

    def state(script: str, **env: str) -> list[str]:
        done = subprocess.run(["bash", "-c", f"{script}\n{STATE}"], env=user_env(**env), capture_output=True,
                              text=True, check=True)  # fmt: skip
        assert done.stderr == ""
        return done.stdout.splitlines()

    clean = [f"{n}=unset" for n in ("DAGSTER_HOME", *MODULE_VARIABLES, "VIRTUAL_ENV")]
    assert state("") == clean
    active = state(f". {activate}")
    ours = [f"{n}=laion_assets.definitions" for n in MODULE_VARIABLES]
    assert active[:5] == [f"DAGSTER_HOME={venv.parent / '.dagster'}", *ours, f"VIRTUAL_ENV={venv}"]
    assert state(f". {activate}\ndeactivate") == clean
    assert state(f". {activate}\n. {activate}\ndeactivate") == clean  # activating twice: still all taken back
    # What was set before activation comes back; what the user set while active stays theirs.
    mine = {"DAGSTER_HOME": str(tmp_path / "mine"), "DAGSTER_CLI_ASSET_LIST_MODULE_NAME": "other.definitions"}
    before = state("", **mine)
    assert "DAGSTER_CLI_ASSET_LIST_MODULE_NAME=laion_assets.definitions" in state(f". {activate}", **mine)
    assert state(f". {activate}\n. {activate}\ndeactivate", **mine) == before
    changed = state(f". {activate}\nexport DAGSTER_HOME=/later DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME=x\ndeactivate")
    assert changed == ["DAGSTER_HOME=/later", *clean[1:3], "DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME=x", clean[4]]
    # `deactivate nondestructive` (what a venv's activate runs first) restores but keeps the function.
    kept = state(f". {activate}\ndeactivate nondestructive")
    assert kept[:5] == clean and "deactivate" in kept


def test_patching_replaces_an_older_activation_block(tmp_path: Path):
    activate = activate_script(tmp_path)
    venv_part = activate.read_text()
    old = "\n# laion-assets: dagster project and instance\nexport DAGSTER_MODULE_NAME=laion_assets.definitions\n"
    activate.write_text(venv_part + old)
    patch(activate)
    text = activate.read_text()
    assert text.startswith(venv_part) and "DAGSTER_MODULE_NAME=" not in text
    assert "DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME" in text and "_laion_assets_venv_deactivate" in text
