"""The HF token as a user passes it: ``HF_TOKEN`` with launch-time ``hf`` config pushes, and leaves no trace.

The commands run as a user runs them (subprocesses, a persistent ``DAGSTER_HOME`` with sqlite run and event
storage and compute logs) against the fake Hub on 127.0.0.1; afterwards every byte the instance wrote and every
line the commands printed is searched for the token in any form the Hub echoed it, and for any 10-character piece.
``HF_TOKEN`` holds the token as a secret mounted from a file does (a newline at the end): it is sent stripped.
"""

import json
import os
import secrets
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.definitions import ASSETS
from laion_assets.defs.resources import (
    HfResource,
    PredictorsResource,
    ReleaseResource,
    StorageResource,
    WatermarkResource,
)
from laion_assets.demos.local import run_graph
from laion_assets.release.manifest import load_manifest
from laion_assets_tests.hub_server import FakeHub, token_found

BIN = Path(sys.executable).parent
REPO = "org/name"


@pytest.fixture(scope="module")
def built(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample's release v0.1.0, built once with the demo's graph run: (source, data root)."""
    data_root = tmp_path_factory.mktemp("hub_token") / "out"
    storage = StorageResource(source=str(small_sample_session), data_root=str(data_root))
    run_graph(dg.DagsterInstance.ephemeral(), storage, PredictorsResource())
    return small_sample_session, data_root


def new_token() -> str:
    """A fresh secret shaped like a Hugging Face token."""
    return "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


def _env(token: str, home: Path | None = None, built: tuple[Path, Path] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_TOKEN": token, "PYTHONPATH": str(PROJECT_DIR)}
    env.pop("HF_HUB_OFFLINE", None)  # the commands talk to the fake Hub on 127.0.0.1 only
    env.pop("DAGSTER_MODULE_NAME", None)  # -m names the code location
    if home is not None:
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env["DAGSTER_HOME"] = str(home)
    if built is not None:
        env["LAION_ASSETS_SOURCE"], env["LAION_ASSETS_DATA_ROOT"] = map(str, built)
    return env


@dataclass
class Push:
    """One run of the README's ``dagster asset materialize --select hf_release`` command and what it left."""

    token: str
    sent: str  # what HF_TOKEN held: the token with whitespace around it
    home: Path
    hub: FakeHub
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None


@pytest.fixture(scope="module")
def pushes(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Push]:
    """The command run twice, each with its own token and instance: against a Hub whose commit answers 500 echoing
    the Authorization header and mangled forms of the token ("failed"), and against a healthy one ("healthy"). Both
    run at once: each spends its time starting Dagster's processes, not pushing.
    """
    root = tmp_path_factory.mktemp("pushes")
    failed, healthy = new_token(), new_token()
    runs = {
        "failed": Push(failed, f"{failed}\n", root / "failed", FakeHub(fail={"commit"}, echo_authorization=True)),
        "healthy": Push(healthy, f" {healthy}\r\n", root / "healthy", FakeHub()),
    }
    args = [str(BIN / "dagster"), "asset", "materialize", "-m", "laion_assets.definitions", "--select", "hf_release"]
    with runs["failed"].hub, runs["healthy"].hub:
        procs = {}
        for name, push in runs.items():
            # Only repo_id (and the fake Hub's endpoint) in launch-time config, as the README shows.
            config = {"resources": {"hf": {"config": {"repo_id": REPO, "endpoint": push.hub.endpoint}}}}
            procs[name] = subprocess.Popen(
                [*args, "--config-json", json.dumps(config)], env=_env(push.sent, push.home, built),
                cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        try:
            for name, proc in procs.items():
                runs[name].stdout, runs[name].stderr = proc.communicate(timeout=300)
                runs[name].returncode = proc.returncode
        finally:
            for proc in procs.values():
                if proc.poll() is None:  # a command that hung: stop it rather than leave it running
                    proc.kill()
                    proc.communicate()
    return runs


def _leaks(token: str, home: Path, *outputs: str) -> list[str]:
    """Where any form or piece of the token appears: files under ``home`` (read as bytes) or the commands' output."""
    found = [f"{p}: {token_found(token, p.read_bytes())}" for p in sorted(home.rglob("*")) if p.is_file()]
    found += [f"output {i}: {token_found(token, text)}" for i, text in enumerate(outputs)]
    return [where for where in found if not where.endswith(": []")]


def test_failed_push_leaves_the_token_nowhere(pushes: dict[str, Push]) -> None:
    push = pushes["failed"]
    # HF_TOKEN ended in a newline: every call carried the stripped token, which the Hub echoed in its 500 answer.
    assert set(push.hub.tokens) == {push.token} and push.hub.fail_commits
    output = push.stdout + push.stderr
    assert push.returncode != 0, output[-3000:]
    assert f"pushing release v0.1.0 to {REPO} failed while committing the release files" in output
    assert "Authorization: ***" in output and "still holds its previous release" in output
    with dg.DagsterInstance.from_config(str(push.home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = failure.dagster_event.step_failure_data.error
        # Dagster records the Failure and our error beneath it, and nothing beneath that.
        assert error.cls_name == "Failure" and error.cause.cls_name == "PublishError"
        assert error.cause.cause is None and error.cause.context is None
        assert "Authorization: ***" in error.message
    logs = [p for p in push.home.rglob("compute_logs/*.err") if p.stat().st_size]
    # The step's stderr holds huggingface_hub's warning that repeated the server's echo, scrubbed.
    assert logs and any("seen ***" in p.read_text() for p in logs)
    assert not _leaks(push.token, push.home, push.stdout, push.stderr)


def test_materialize_with_launch_config_pushes_with_hf_token(pushes: dict[str, Push], built: tuple[Path, Path]) -> None:
    """Launch-time ``hf`` config replaces the resource's bound values; the token still comes from HF_TOKEN."""
    push = pushes["healthy"]
    assert push.returncode == 0, (push.stdout + push.stderr)[-3000:]
    repo = push.hub.repos[REPO]
    assert set(push.hub.tokens) == {push.token}  # every call carried `Bearer <token>`, stripped of " " and "\r\n"
    folder = built[1] / "releases" / "v0.1.0"
    assert len(repo.commits) == 1 and repo.tags == {"v0.1.0": repo.commits[0]["oid"]}
    assert sorted(repo.files) == sorted([*load_manifest(folder)["files"], "manifest.json"])
    assert not _leaks(push.token, push.home, push.stdout, push.stderr)


def test_cli_push_strips_the_token_scrubs_failures_and_refuses_control_characters(built: tuple[Path, Path]) -> None:
    """``laion-assets push``: a newline-terminated HF_TOKEN is sent stripped and a Hub error echoing it is scrubbed;
    a token with a control character inside is refused before anything is sent, without being shown."""
    token = new_token()
    folder = built[1] / "releases" / "v0.1.0"
    args = [sys.executable, "-m", "laion_assets.cli", "push", str(folder), "--repo-id", REPO]
    with FakeHub(fail={"create"}, echo_authorization=True) as hub:
        done = subprocess.run(
            [*args, "--endpoint", hub.endpoint],
            env=_env(f"{token}\n"), cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert set(hub.tokens) == {token}
        seen = len(hub.requests)
        refused = subprocess.run(
            [*args, "--endpoint", hub.endpoint],
            env=_env(f"{token[:9]}\x07{token[9:]}\n"), cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert len(hub.requests) == seen  # nothing was sent with the refused token
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"error: pushing release v0.1.0 to {REPO} failed while creating the repo")
    assert "Authorization: ***" in done.stderr and "seen ***" in done.stderr  # message and Hub warning, scrubbed
    assert "Traceback" not in done.stderr
    assert refused.returncode == 1 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: HF_TOKEN cannot be sent: character 10 of 38 is a control character")
    assert not token_found(token, done.stdout + done.stderr) and not token_found(token, refused.stderr)


def test_hf_release_refuses_a_token_with_a_control_character(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the resource: the step fails naming HF_TOKEN and the position; the instance holds no piece of it."""
    token = new_token()
    monkeypatch.setenv("HF_TOKEN", f"{token[:20]}\x1b{token[20:]}\r\n")
    source, data_root = built
    resources = {
        "storage": StorageResource(source=str(source), data_root=str(data_root)),
        "predictors": PredictorsResource(),
        "release_config": ReleaseResource(),
        "watermark": WatermarkResource(),
        "hf": HfResource(repo_id=REPO, endpoint="http://127.0.0.1:9"),  # never reached
    }
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            [*ASSETS], selection=["hf_release"], instance=instance, resources=resources, raise_on_error=False
        )
        assert not result.success
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        message = failure.dagster_event.step_failure_data.error.message
    assert "HF_TOKEN cannot be sent: character 21 of 38 is a control character" in message
    # The run database on disk holds the refusal (so the search below reads what the instance wrote), no token.
    assert any(b"HF_TOKEN cannot be sent" in db.read_bytes() for db in tmp_path.rglob("history/runs/*.db"))
    assert not _leaks(token, tmp_path)
