"""deploy/helm/values.yaml and the Dockerfile: the keys and pins we rely on (no chart schema, no docker here)."""

import re
import tomllib

import pytest
import yaml

from laion_assets.core.paths import PROJECT_DIR


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((PROJECT_DIR / "deploy/helm/values.yaml").read_text())


def test_the_user_deployment_serves_the_k8s_location(values):
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "laion_assets.definitions_k8s"]
    assert set(deployment["image"]) == {"repository", "tag", "pullPolicy"}
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["LAION_ASSETS_SOURCE"].startswith("s3://") and env["LAION_ASSETS_DATA_ROOT"].startswith("s3://")
    assert env["HF_HOME"].startswith("/models/")
    assert not any("AWS" in name for name in env), "AWS credentials come from a secret"
    assert deployment["envSecrets"] == [{"name": "laion-assets-aws"}]
    (mount,) = deployment["volumeMounts"]
    assert {v["name"] for v in deployment["volumes"]} == {mount["name"]} and mount["mountPath"] == "/models"
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_runs_are_k8s_jobs_queued_with_run_and_pool_limits(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    concurrency = values["concurrency"]
    assert concurrency["enabled"] and concurrency["runs"]["maxConcurrentRuns"] >= 1
    assert concurrency["pools"]["defaultLimit"] >= 1


def test_postgres_is_external_with_the_psycopg2_scheme_and_no_password(values):
    postgres = values["postgresql"]
    assert postgres["enabled"] is False and postgres["postgresqlScheme"] == "postgresql+psycopg2"
    assert postgres["postgresqlPassword"] == "" and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_the_dockerfile_installs_extras_that_exist_and_bakes_no_weights():
    text = (PROJECT_DIR / "Dockerfile").read_text()
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    (extras,) = re.findall(r"pip install [^\n]*'\.\[([a-z,]+)\]'", text)
    assert set(extras.split(",")) == {"images", "hub", "captions", "cluster"} <= set(project["optional-dependencies"])
    (python,) = re.findall(r"python3\.(\d+)-venv", text)
    assert f">=3.{python}" in project["requires-python"]
    assert "torch==" in " ".join(project["dependencies"]) and "HF_HOME=/models/hf" in text
    assert re.search(r"^USER (?!root|0\b)", text, re.M) and "nvidia/cuda:" in text and "-runtime-" in text
    assert "huggingface-cli download" not in text and "hf download" not in text
    ignored = (PROJECT_DIR / ".dockerignore").read_text().split()
    assert {".venv", ".dagster", "data/out"} <= set(ignored)
