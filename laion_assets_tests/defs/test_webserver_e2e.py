"""Acceptance 4: a real ``dagster dev`` (webserver + daemon) on 127.0.0.1 runs a backfill launched over GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from laion_assets.core.paths import PROJECT_DIR, V2_WEIGHTS
from laion_assets.demos.sample import SampleSpec, write_sample
from laion_assets.scoring.parts import read_identities
from laion_assets.scoring.predictors import load_predictor

START_TIMEOUT_S = 180
BACKFILL_TIMEOUT_S = 420
# Start dagster with default SIGINT/SIGTERM handlers: a background process from a non-interactive shell ignores them.
RESTORE_SIGNALS = (
    "import signal,os,sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
STATUS = """
query Status($id: String!, $tag: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $tag}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
FAILED = ("COMPLETED_FAILED", "FAILED", "CANCELED", "FAILURE")
MATERIALIZATIONS = """
query Mats($partitions: [String!]) {
  assetOrError(assetKey: {path: ["aesthetic_scores"]}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } }
      }
    }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def wait_for_server(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"dagster dev did not answer on 127.0.0.1:{port} in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_backfill_through_the_webserver(tmp_path):
    source, data_root, home = tmp_path / "sample", tmp_path / "out", tmp_path / "dagster_home"
    write_sample(source, SampleSpec(parts=2, rows_per_part=300, seed=11))
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    keys = ["00000", "00001"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("shards", keys)

    port = free_port()
    bin_dir = Path(sys.executable).parent
    # `make test` exports DAGSTER_MODULE_NAME (the project's location); the server must load only the test one.
    inherited = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_MODULE_NAME", "DAGSTER_PACKAGE_NAME")}
    env = {
        **inherited,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "LAION_ASSETS_E2E_SOURCE": str(source),
        "LAION_ASSETS_E2E_DATA_ROOT": str(data_root),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, "-c", RESTORE_SIGNALS, str(bin_dir / "dagster"), "dev", "-m",
               "laion_assets_tests.defs.e2e_definitions", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = tmp_path / "dagster_dev.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_server(port, process, log)
        params = {
            "partitionNames": keys,
            "assetSelection": [{"path": ["clip_embeddings"]}, {"path": ["aesthetic_scores"]}],
        }
        launched = graphql(port, LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        # Success: the backfill says so, or (sooner: its daemon only looks every 30 s) its run succeeded. The shard
        # assets have a single-run backfill policy: the whole selection is ONE run over the range of partitions.
        deadline, status, runs = time.monotonic() + BACKFILL_TIMEOUT_S, None, []
        while time.monotonic() < deadline:
            answer = graphql(port, STATUS, {"id": backfill_id, "tag": backfill_id})
            status = answer["partitionBackfillOrError"].get("status")
            runs = answer["runsOrError"]["results"]
            assert status not in FAILED and all(r["status"] not in FAILED for r in runs), (
                f"backfill {status}, runs {runs}:\n{log.read_text()[-4000:]}"
            )
            if status in ("COMPLETED", "COMPLETED_SUCCESS") or (runs and all(r["status"] == "SUCCESS" for r in runs)):
                break
            time.sleep(2)
        else:
            pytest.fail(
                f"backfill not done in {BACKFILL_TIMEOUT_S} s: {status}, runs {runs}:\n{log.read_text()[-4000:]}"
            )
        (run,) = runs  # one run for both shards, each with both assets
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == tuple(keys)

        asset = graphql(port, MATERIALIZATIONS, {"partitions": keys})["assetOrError"]
        by_partition = {m["partition"]: m for m in asset["assetMaterializations"]}
        assert sorted(by_partition) == keys
        for key in keys:
            entries = {e["label"]: e.get("text", e.get("intValue")) for e in by_partition[key]["metadataEntries"]}
            assert entries["dagster/row_count"] == 300
            assert entries["predictor/AESTHETIC_SCORE"] == str(load_predictor(V2_WEIGHTS).identity)
            recorded = read_identities(data_root / "shards" / key / "scores.parquet")
            assert str(recorded["AESTHETIC_SCORE"]) == entries["predictor/AESTHETIC_SCORE"]
    finally:
        stop(process)
    assert process.returncode is not None
