"""The Kubernetes code location: the default one's assets, jobs and resources, each step a Kubernetes Job.

The assets, checks, jobs, schedules, sensors and resources are those of :mod:`laion_assets.definitions`; only the
executor differs: dagster-k8s's ``k8s_job_executor`` runs every step of every job in its own pod.

Dagster's Helm chart serves it (``dagster api grpc -m laion_assets.definitions_k8s``, see ``deploy/helm/values.yaml``).
GPU-pool steps (``image_embeddings``, ``pop_captions``) ask for one ``nvidia.com/gpu``, the others for CPU and
memory only (``laion_assets/defs/k8s.py``). Importing it imports no torch and needs no cluster.
"""

import dagster as dg

from laion_assets.definitions import ASSETS, CHECKS, POP_ASSETS, POP_CHECKS, URL_ASSETS, build_defs
from laion_assets.defs.k8s import k8s_executor, ops_missing_their_pool_tags

__all__ = ["build_k8s_defs", "defs"]


def build_k8s_defs() -> dg.Definitions:
    """The default location's definitions with the k8s executor; fails naming a GPU-pool op that asks for no GPU."""
    ops = [a.node_def for a in [*URL_ASSETS, *ASSETS, *POP_ASSETS, *CHECKS, *POP_CHECKS]]
    wrong = ops_missing_their_pool_tags(op for op in ops if isinstance(op, dg.OpDefinition))
    if wrong:
        raise dg.DagsterInvalidDefinitionError(
            f"ops without the dagster-k8s/config tag their pool calls for: {', '.join(wrong)}; add "
            "op_tags=k8s_op_tags(<the pool>) (laion_assets/defs/k8s.py) where the asset is defined"
        )
    return build_defs(executor=k8s_executor())


defs = build_k8s_defs()
