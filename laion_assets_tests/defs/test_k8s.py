"""The Kubernetes code location: each step's pod resolved by dagster-k8s's own code, without a cluster."""

import json
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.execution.api import create_execution_plan
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    USER_DEFINED_K8S_CONFIG_KEY,
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.definitions_k8s import defs
from laion_assets.defs.k8s import GPU_POOL, K8S_CONFIG_TAG, ops_missing_their_pool_tags

GPU = "nvidia.com/gpu"
JOBS = ("shard_job", "release_job", "rescore", "publish_job", "pop_job")


def step_pod(job: dg.JobDefinition, step) -> dict:
    """The step's container and pod spec as K8sStepHandler builds them: executor config, then the op's tag."""
    executor_config = job.executor_def.apply_config_mapping({}).value["config"]
    context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config["step_k8s_config"])
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
    k8s_job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="laion-assets:test", dagster_home="/opt/dagster/dagster_home"),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step.key.replace('_', '-')}"[:63],
        user_defined_k8s_config=context.run_k8s_config,
    )
    pod = k8s_job.spec.template.spec
    (container,) = pod.containers
    return {"resources": container.resources, "tolerations": pod.tolerations or []}


@pytest.fixture(scope="module")
def pods() -> dict[tuple[str, str], tuple[str | None, dict]]:
    """(job, step key) -> (the step's pool, its resolved pod) for every step of every job."""
    found = {}
    for name in JOBS:
        job = defs.resolve_job_def(name)
        for step in create_execution_plan(job).steps:
            pool = job.graph.node_named(step.node_handle.name).definition.pool
            found[(name, step.key)] = (pool, step_pod(job, step))
    return found


def test_gpu_steps_request_exactly_one_gpu(pods):
    gpu_steps = {key: pod for key, (pool, pod) in pods.items() if pool == GPU_POOL}
    assert {step for _, step in gpu_steps} == {"image_embeddings", "pop_captions"}
    for key, pod in gpu_steps.items():
        resources = pod["resources"]
        assert resources.limits[GPU] == "1" and resources.requests[GPU] == "1", key
        assert resources.requests["cpu"] and resources.requests["memory"], key
        assert any(t.key == GPU for t in pod["tolerations"]), key


def test_every_other_step_requests_cpu_and_memory_and_no_gpu(pods):
    others = {key: pod for key, (pool, pod) in pods.items() if pool != GPU_POOL}
    assert len(others) > 20 and ("release_job", "aesthetic_tags") in others
    for key, pod in others.items():
        resources = pod["resources"]
        assert GPU not in (resources.requests or {}) and GPU not in (resources.limits or {}), key
        assert resources.requests == {"cpu": "1", "memory": "4Gi"}, key
        assert pod["tolerations"] == [], key


def test_every_job_runs_on_the_k8s_executor():
    for name in JOBS:
        executor = defs.resolve_job_def(name).executor_def
        assert executor.executor_creation_fn is k8s_job_executor.executor_creation_fn, name


def test_a_gpu_pool_op_without_its_tag_is_named():
    @dg.asset(pool=GPU_POOL)
    def new_gpu_step() -> None: ...

    @dg.asset
    def cpu_step() -> None: ...

    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY
    assert ops_missing_their_pool_tags([new_gpu_step.op, cpu_step.op]) == ["new_gpu_step"]
    tagged = defs.resolve_job_def("shard_job").graph.node_named("image_embeddings").definition
    assert json.loads(tagged.tags[K8S_CONFIG_TAG])["container_config"]["resources"]["limits"] == {GPU: "1"}


def test_the_default_location_keeps_its_executor():
    from laion_assets.definitions import defs as default_defs

    assert default_defs.resolve_job_def("shard_job").executor_def.name == "multi_or_in_process_executor"


def test_dagster_loads_the_k8s_location():
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "laion_assets.definitions_k8s"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "image_embeddings" in out.stdout.split() and "pop_captions" in out.stdout.split()
