"""The gate in front of every release-level step: only validated, scored, unchanged shards that did not just fail.

The file checks live in ``laion_assets.gating``; this module adds what only the orchestrator knows (a shard whose
latest per-shard run failed or is still running) and which registered shards the release leaves out on purpose.
"""

from collections.abc import Sequence

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from laion_assets.defs.partitions import shards
from laion_assets.defs.resources import ReleaseResource, StorageResource
from laion_assets.errors import BadInputError
from laion_assets.gating import check_tags_current, gate_shards
from laion_assets.shards import Validation

SHARD_STEPS = ("clip_embeddings", "aesthetic_scores")
URL_STEPS = ("images", "image_embeddings")


def released_keys(instance: dg.DagsterInstance, release_config: ReleaseResource) -> list[str]:
    """The registered shards minus the ones ``release_config.exclude_shards`` leaves out (which must be registered)."""
    registered = sorted(instance.get_dynamic_partitions(shards.name))
    excluded = set(release_config.exclude_shards)
    unknown = sorted(excluded - set(registered))
    if unknown:
        raise BadInputError(
            f"release_config.exclude_shards names {unknown}, which are not registered shards "
            f"({len(registered)} registered: {', '.join(registered[:10])}{' …' if len(registered) > 10 else ''})"
        )
    return [key for key in registered if key not in excluded]


def orchestration_problems(instance: dg.DagsterInstance, keys: Sequence[str], url_mode: bool) -> dict[str, list[str]]:
    """Shards whose latest per-shard run failed or is still running, by key."""
    problems: dict[str, list[str]] = {}
    for step in (*URL_STEPS, *SHARD_STEPS) if url_mode else SHARD_STEPS:
        status = instance.get_status_by_partition(dg.AssetKey(step), list(keys), shards) or {}
        for key, state in status.items():
            if state == AssetPartitionStatus.FAILED:
                problems.setdefault(key, []).append(f"its latest {step} run failed")
            elif state == AssetPartitionStatus.IN_PROGRESS:
                problems.setdefault(key, []).append(f"{step} is still running")
    return problems


def _pull_shards(storage: StorageResource, keys: Sequence[str]) -> None:
    layout = storage.layout
    storage.pull(*(p for key in keys for p in (layout.shard_metadata(key), layout.shard_scores(key))))


def gate(
    instance: dg.DagsterInstance, storage: StorageResource, release_config: ReleaseResource, step: str
) -> dict[str, Validation]:
    """The validation of every released shard, or a failure naming each shard that may not be read and why."""
    keys = released_keys(instance, release_config)
    known = orchestration_problems(instance, keys, storage.url_mode)
    _pull_shards(storage, keys)
    return gate_shards(keys, storage.layout, storage.parts(keys), storage.shard_settings, step, known)


def gate_tags(
    instance: dg.DagsterInstance, storage: StorageResource, release_config: ReleaseResource, step: str
) -> dict[str, Validation]:
    """For steps after ``aesthetic_tags``: the tags cover exactly the released shards, none failed or changed since."""
    keys = released_keys(instance, release_config)
    parts = storage.parts(keys)
    known = orchestration_problems(instance, keys, storage.url_mode)
    _pull_shards(storage, keys)  # a no-op for a local root; a remote one gives each shard's recorded validation
    if known:  # raises, naming every shard (with what the files say too)
        gate_shards(keys, storage.layout, parts, storage.shard_settings, step, known)
    storage.pull(storage.layout.tags_dir)
    return check_tags_current(storage.layout, keys, parts, step)
