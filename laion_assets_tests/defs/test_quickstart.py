"""The README's Quick start, run exactly as written on a fresh copy of the project (acceptance 6).

Each command line of the section's code blocks runs in bash, in order, in the copy: ``make demo`` builds the venv
(already there, see ``fresh_copy``) and the graph; after ``. .venv/bin/activate`` every later line runs activated;
``dagster dev`` and ``dg dev`` each run until the UI answers on http://127.0.0.1:3000 with the code location
loaded, then are stopped by process group. ``dg check defs`` and ``dg launch`` run like the other lines. The
activated lines then run again with a ``DAGSTER_HOME`` set beforehand, which must be kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from laion_assets.core.paths import PROJECT_DIR
from laion_assets_tests.fresh_copy import copy_project, failed, make_venv, ok, run_all, section_commands, user_env
from laion_assets_tests.processes import wait_for_group

UI = "http://127.0.0.1:3000"  # the README's port: "exactly as written" means no -p
START_TIMEOUT_S = 180
# Start bash (and so dagster dev) with default SIGINT/SIGTERM handlers: pytest may itself have been started in the
# background by a non-interactive shell, which ignores them, and an ignored signal stays ignored across exec.
RESTORE_SIGNALS = (
    "import signal,os,sys; signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, "
    "signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)
WORKSPACE = """{
  instance { info }
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus locationOrLoadError {
      __typename ... on PythonError { message } } } }
    ... on PythonError { message }
  }
}"""


def quickstart_commands(readme: Path = PROJECT_DIR / "README.md") -> list[str]:
    """The command lines of the code blocks in the README's "Quick start" section, in order."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", readme.read_text(), re.S | re.M)
    assert section, f"{readme}: no '## Quick start' section"
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", section.group(1), re.S | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def is_activation(line: str) -> bool:
    return line.split()[0] in (".", "source")


def is_server(line: str) -> bool:
    return line.split()[:2] in (["dagster", "dev"], ["dg", "dev"])


def materializes(line: str) -> str | None:
    """The asset a command line materializes (``dagster asset materialize --select A``, ``dg launch --assets A``)."""
    match = re.match(r"(?:dagster asset materialize --select|dg launch --assets) (\S+)", line)
    return match.group(1) if match else None


def bash(script: str, cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def graphql(query: str) -> dict:
    request = urllib.request.Request(
        f"{UI}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def port_in_use(port: int = 3000) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def port_3000() -> Iterator[None]:
    """Hold port 3000 against our other test runs (a lock file), and wait for anything else to let it go."""
    with open(Path("/tmp") / "laion-assets-quickstart-port-3000.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deadline = time.monotonic() + 60
        while port_in_use():
            if time.monotonic() > deadline:
                pytest.fail(f"{UI} is taken by another program; the README's `dagster dev` needs that port")
            time.sleep(1)
        yield


def wait_for_ui(process: subprocess.Popen, log: Path, home: Path) -> None:
    """Wait until the UI serves its page and the code location is loaded, from the instance in ``home``."""
    deadline, state = time.monotonic() + START_TIMEOUT_S, "no answer"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(UI, timeout=5) as page:
                html = page.read().decode(errors="replace")
            data = graphql(WORKSPACE)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            state = repr(exc)
            time.sleep(1)
            continue
        workspace = data["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", workspace
        entries = workspace["locationEntries"]
        state = json.dumps(entries)
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            assert "Dagster" in html
            assert [e["name"] for e in entries] == ["laion_assets"]
            assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
            # The server is ours and uses the instance it should (not a stray server on the same port).
            info = yaml.safe_load(data["instance"]["info"])
            assert info["local_artifact_storage"]["config"]["base_dir"] == str(home), info
            return
        time.sleep(1)
    pytest.fail(f"dagster dev: UI not ready in {START_TIMEOUT_S} s ({state}):\n{log.read_text()[-3000:]}")


def run_quickstart(lines: list[str], repo: Path, env: dict[str, str], home: Path, log: Path) -> None:
    """Run ``lines`` in order in ``repo``: ``dagster dev`` / ``dg dev`` until the UI is ready, the rest to success.

    Once the UI is ready, the server gets Ctrl-C (SIGINT to its process group) and the next lines run while it
    shuts down (as from a second shell); it must then be gone, at the latest when the next server starts on the
    same port.
    """
    prefix, server = "", None
    try:
        for line in lines:
            if is_activation(line):
                prefix = f"{line}\n"
            elif is_server(line):
                if server is not None:
                    assert wait_for_group(server), (
                        f"the server before `{line}` did not stop on Ctrl-C:\n{log.read_text()}"
                    )
                    log = log.with_name(f"{log.stem}-{line.split()[0]}{log.suffix}")
                with open(log, "w") as out:
                    server = subprocess.Popen(
                        [sys.executable, "-c", RESTORE_SIGNALS, "bash", "-c", prefix + line],
                        cwd=repo,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                wait_for_ui(server, log, home)
                os.killpg(server.pid, signal.SIGINT)
            else:
                done = bash(prefix + line, repo, env)
                output = (done.stdout + done.stderr)[-4000:]
                assert done.returncode == 0, f"`{line}` failed ({done.returncode}):\n{output}"
        if server is not None:
            assert wait_for_group(server), f"dagster dev did not stop on Ctrl-C:\n{log.read_text()[-3000:]}"
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            wait_for_group(server, timeout=30)


def materializations(home: Path, asset: str) -> int:
    if not (home / "history").exists():  # no instance there yet
        return 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return len(instance.fetch_materializations(dg.AssetKey(asset), limit=100).records)


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the project with its venv (the README's commands run there)."""
    repo = copy_project(tmp_path_factory.mktemp("clone") / "laion-assets")
    make_venv(repo)
    return repo


def test_quickstart_commands_are_the_ones_we_expect():
    """The parser reads the README's blocks (so the test below follows the README, whatever it says)."""
    lines = quickstart_commands()
    assert lines[0].split()[:2] == ["make", "demo"]
    assert any(is_activation(line) for line in lines)
    assert [line.split()[0] for line in lines if is_server(line)] == ["dagster", "dg"]
    assert [line.split()[0] for line in lines if materializes(line) == "subset_6_5plus"] == ["dagster", "dg"]
    assert "dg check defs" in [line.split("#")[0].strip() for line in lines]
    assert not any("DAGSTER_MODULE_NAME" in line or " -m " in line for line in lines)


def test_quickstart_works_as_written(fresh_repo: Path, tmp_path: Path):
    repo, lines = fresh_repo, quickstart_commands()
    python = repo / ".venv" / "bin" / "python"
    # From a neutral folder (not the copy, not this checkout): the venv itself must resolve to the copy.
    where = subprocess.run([str(python), "-c", "import laion_assets; print(laion_assets.__file__)"], cwd=tmp_path,
                           env=user_env(), capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.strip() == str(repo / "laion_assets" / "__init__.py")
    default_home = repo / ".dagster"
    (asset,) = {materializes(line) for line in lines} - {None}
    runs = sum(materializes(line) == asset for line in lines)  # the dagster CLI's and dg's

    initial = materializations(default_home, asset)  # 0 on a fresh copy (unless another test here ran make demo)
    with port_3000():
        run_quickstart(lines, repo, user_env(), default_home, tmp_path / "dev-default.log")
        assert (repo / "data/out/subsets/subset_6_5plus/part-00000.parquet").is_file()
        assert os.readlink(default_home / "dagster.yaml") == "../dagster.yaml"
        assert (repo / ".venv/.activate-patched").is_file()  # make applied the activation patch
        before = materializations(default_home, asset)
        assert before == initial + 1 + runs  # make demo's, then the CLIs'

        # Again with a DAGSTER_HOME of the user's (an existing, empty folder): activation keeps it, runs land there.
        # `dg check defs` reads no instance and `dg dev` is `dagster dev` on a workspace file dg writes (its instance
        # was checked above): they are not run twice; `dg launch` is.
        home = tmp_path / "my dagster home"
        home.mkdir()
        activated = lines[[is_activation(line) for line in lines].index(True) :]
        activated = [line for line in activated if line.split()[:2] not in (["dg", "check"], ["dg", "dev"])]
        run_quickstart(activated, repo, user_env(DAGSTER_HOME=str(home)), home, tmp_path / "dev-user.log")
    assert materializations(home, asset) == sum(materializes(line) == asset for line in activated)
    assert materializations(default_home, asset) == before


@pytest.fixture
def demo_repo(fresh_repo: Path) -> Path:
    """The fresh copy after ``make demo`` (already run by the Quick start test when it ran first)."""
    if not (fresh_repo / "data" / "out" / "tags").is_dir():
        done = bash("make demo", fresh_repo, user_env())
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return fresh_repo


def test_every_subcommand_defaults_to_the_project(demo_repo: Path):
    """No flag, no variable: the sample, data/out and .dagster/ of the project the command belongs to."""
    repo = demo_repo
    cli = str(repo / ".venv" / "bin" / "laion-assets")
    sample, out, home = repo / "data" / "sample", repo / "data" / "out", repo / ".dagster"
    some_hash = pl.read_parquet(out / "tags" / "part-00000.parquet")["hash"][0]
    (release,) = (p.parent for p in (out / "releases").glob("*/manifest.json"))
    sample_before = {p: p.stat().st_mtime_ns for p in sample.rglob("*")}
    results = run_all(
        {
            "stale": ([cli, "stale"], user_env()),
            "rescore": ([cli, "rescore"], user_env()),
            "kv": ([cli, "kv", "lookup", str(some_hash)], user_env()),
            "register": ([cli, "register"], user_env()),
            # The manifest records data/sample (inside the project): it wins over the environment.
            "verify": ([cli, "verify", str(release)], user_env(LAION_ASSETS_SOURCE=str(repo / "nowhere"))),
            "sample": ([cli, "sample"], user_env()),
        },
        cwd=repo,
    )
    stale = ok(results["stale"])
    assert f"shards of instance {home} (from default) in data root {out} (from default)" in stale
    assert [line.split()[:2] for line in stale.splitlines()[1:]] == [[f"{k:05d}", "current"] for k in range(4)]
    ok(results["rescore"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="rescore"))
    assert run.run_config["resources"]["storage"]["config"] == {
        "source": str(sample),
        "data_root": str(out),
        "safety": "",
    }
    assert ok(results["kv"]).split("\t")[0] == str(some_hash)
    assert f"of {sample} (from default) in instance {home} (from default)" in ok(results["register"])
    assert "): OK" in ok(results["verify"])
    assert f"{sample} (from default) holds parts" in failed(results["sample"])
    assert {p: p.stat().st_mtime_ns for p in sample.rglob("*")} == sample_before


def test_the_rescoring_commands_work_as_written(demo_repo: Path):
    """The README's re-scoring block, line by line in an activated shell: a new predictor, then a new version."""
    repo = demo_repo
    lines = section_commands("Re-scoring")
    assert [line.split()[:2] for line in lines] == [
        ["laion-assets", "stale"], ["laion-assets", "activate"], ["laion-assets", "rescore"], ["dagster", "job"],
    ]  # fmt: skip
    releases = repo / "data" / "out" / "releases"
    before = {p.name for p in releases.iterdir()}
    outputs = []
    for line in lines:
        done = bash(f". .venv/bin/activate\n{line}", repo, user_env())
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"`{line}` failed ({done.returncode}):\n{outputs[-1][-4000:]}"
    assert "AESTHETIC_SCORE is now v2-mlp-relu@sha256:" in outputs[1]
    assert "rescore: re-scored 4 shard(s): 00000, 00001, 00002, 00003" in outputs[2]
    (new,) = {p.name for p in releases.iterdir()} - before  # the re-score made a new version, the old one stays
    changelog = json.loads((releases / new / "manifest.json").read_text())["changelog"]
    assert set(changelog["predictors"]) == {"AESTHETIC_SCORE"} and changelog["previous"] in before
    assert "RUN_SUCCESS" in outputs[3]  # dagster's own CLI runs the job too; nothing is stale any more


def test_the_search_commands_work_as_written(demo_repo: Path, tmp_path: Path):
    """The README's search block: `laion-assets serve` (until it answers, as a server), then the lines after it."""
    repo = demo_repo
    lines = section_commands("Search")
    assert [line.split()[:2] for line in lines] == [[".", ".venv/bin/activate"], ["laion-assets", "serve"],
                                                    ["curl", "-s"]]  # fmt: skip
    prefix, log = f"{lines[0]}\n", tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", RESTORE_SIGNALS, "bash", "-c", prefix + lines[1]],
            cwd=repo, env=user_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen("http://127.0.0.1:1234/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"serve did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        done = bash(prefix + lines[2], repo, user_env())
        assert done.returncode == 0 and json.loads(done.stdout) == ["laion-aesthetics-assets"], done
        vector = np.load(repo / "data" / "sample" / "img_emb" / "img_emb_0.npy")[0].astype(np.float32)
        body = json.dumps({"embedding_input": vector.tolist(), "num_images": 3, "modality": "image"}).encode()
        request = urllib.request.Request("http://127.0.0.1:1234/knn-service", data=body)
        with urllib.request.urlopen(request, timeout=30) as response:
            results = json.loads(response.read())
        first_url = pl.read_parquet(repo / "data" / "sample" / "metadata" / "metadata_0.parquet")["URL"][0]
        assert results[0]["id"] == 0 and results[0]["url"] == first_url
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        assert wait_for_group(server), f"serve did not stop on Ctrl-C:\n{log.read_text()[-3000:]}"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            wait_for_group(server, timeout=30)
