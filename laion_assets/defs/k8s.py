"""Kubernetes wiring: every step a Kubernetes Job (dagster-k8s's ``k8s_job_executor``), sized by its pool.

A step in the ``gpu`` pool (the pool that already limits GPU steps on one box) asks for one ``nvidia.com/gpu``
through its op's ``dagster-k8s/config`` tag (:func:`k8s_op_tags`, given where the asset is defined); every other step
gets the executor's CPU/memory requests (:data:`CPU_STEP`) and no GPU. The executor merges both (deep merge) into
the step's pod. This module imports no dagster_k8s at import time: the default location imports it for the tags.
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

GPU_POOL = "gpu"
# dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY (a test holds them equal): the op tag k8s_job_executor reads.
K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"

# Every step: reading parquet, scoring stored embeddings with numpy, writing tables; one core and a few GiB. Requests
# only: no memory limit, so a large release step is not killed at a guessed size.
CPU_STEP: dict[str, Any] = {"container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}}
# A GPU step (CLIP embeddings, LLaVA captions): one GPU, cores to decode images, host memory to load the weights
# (LLaVA 1.5 7B is ~14 GB in float16). Tolerates the taint GPU node pools usually carry.
GPU_STEP: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "32Gi", GPU_RESOURCE: "1"},
            "limits": {GPU_RESOURCE: "1"},
        }
    },
    "pod_spec_config": {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]},
}


def step_k8s_config(pool: str | None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` of a step in ``pool``: one GPU for the ``gpu`` pool, nothing extra otherwise."""
    return GPU_STEP if pool == GPU_POOL else {}


def k8s_op_tags(pool: str | None) -> dict[str, str]:
    """Op tags for an asset in ``pool`` (pass the asset's own pool); inert under any executor but dagster-k8s's."""
    config = step_k8s_config(pool)
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True)} if config else {}


def ops_missing_their_pool_tags(ops: Iterable[dg.OpDefinition]) -> list[str]:
    """Names of ops whose ``dagster-k8s/config`` tag is not the one their pool calls for."""
    return sorted({op.name for op in ops if op.tags.get(K8S_CONFIG_TAG) != k8s_op_tags(op.pool).get(K8S_CONFIG_TAG)})


def k8s_executor(step_config: Mapping[str, Any] | None = None) -> dg.ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor`` with :data:`CPU_STEP` (or ``step_config``) under every step.

    The image is not named here: the user code deployment's image (``DAGSTER_CURRENT_IMAGE``, set by Dagster's Helm
    chart) runs the steps; namespace, env, secrets and volumes come from the run launcher's Helm values.
    """
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured({"step_k8s_config": dict(step_config or CPU_STEP)}, name="k8s")
