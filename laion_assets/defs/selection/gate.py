"""The gate in front of every release-level step: only validated, scored, unchanged shards that did not just fail.

The file checks live in ``laion_assets.selection.gating``; this module adds what only the orchestrator knows (a
shard whose latest per-shard run failed or is still running) and which registered shards the release leaves out on
purpose.
"""

from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from laion_assets.core.errors import BadInputError, ShardGateError
from laion_assets.defs.resources import ReleaseResource, StorageResource
from laion_assets.defs.sources.partitions import shards, source_keys
from laion_assets.selection.gating import check_tags_current, gate_shards
from laion_assets.sources.indexing import Validation
from laion_assets.sources.layout import Part

SHARD_STEPS = ("clip_embeddings", "aesthetic_scores")
URL_STEPS = ("images", "image_embeddings")


def released_keys(
    instance: dg.DagsterInstance,
    storage: StorageResource,
    release_config: ReleaseResource,
    listed: Mapping[str, Part] | None = None,
) -> list[str]:
    """The registered shards minus the ones ``release_config.exclude_shards`` leaves out.

    Every part of the source must be released or excluded explicitly: a part that is in the source but not
    registered (never registered, or un-registered) stops the run, since the release names the source it came from.
    ``listed`` is the source's listing when the caller has it (stored embeddings), so the source is listed once.
    """
    registered = sorted(instance.get_dynamic_partitions(shards.name))
    in_source = list(listed) if listed is not None and not storage.url_mode else source_keys(storage.shard_source)
    excluded = set(release_config.exclude_shards)
    unknown = sorted(excluded - set(registered) - set(in_source))
    if unknown:
        raise BadInputError(
            f"release_config.exclude_shards names {unknown}, which are neither registered shards nor parts of the "
            f"source ({len(registered)} registered: {', '.join(registered[:10])}{' …' if len(registered) > 10 else ''})"
        )
    unregistered = sorted(set(in_source) - set(registered) - excluded)
    if unregistered:
        shown = ", ".join(f'"{k}"' for k in unregistered[:20])
        raise ShardGateError(
            f"{len(unregistered)} part(s) of the source {storage.shard_source} are not registered shards "
            f"({', '.join(unregistered[:20])}{' …' if len(unregistered) > 20 else ''}): register and materialize them "
            "(`laion-assets register`, or turn on new_shards_sensor), or leave them out of this release explicitly "
            f"with `resources: {{release_config: {{config: {{exclude_shards: [{shown}]}}}}}}`"
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
    files = (layout.shard_metadata, layout.shard_scores, layout.shard_watermark)  # no watermark file: nothing pulled
    storage.pull(*(f(key) for key in keys for f in files))


def gate(
    instance: dg.DagsterInstance, storage: StorageResource, release_config: ReleaseResource, step: str
) -> dict[str, Validation]:
    """The validation of every released shard, or a failure naming each shard that may not be read and why.

    The source is listed once, with each file's size and mtime/etag: every shard is compared with what was
    validated on that listing, without a request per file.
    """
    listed = storage.parts()
    keys = released_keys(instance, storage, release_config, listed)
    known = orchestration_problems(instance, keys, storage.url_mode)
    _pull_shards(storage, keys)
    return gate_shards(keys, storage.layout, listed, storage.shard_settings, step, known)


def gate_tags_parts(
    instance: dg.DagsterInstance, storage: StorageResource, release_config: ReleaseResource, step: str
) -> tuple[dict[str, Validation], dict[str, Part]]:
    """:func:`gate_tags`, and the released parts from the one listing of the source it made."""
    listed = storage.parts()
    keys = released_keys(instance, storage, release_config, listed)
    parts = {key: listed[key] for key in keys if key in listed}
    known = orchestration_problems(instance, keys, storage.url_mode)
    _pull_shards(storage, keys)  # a no-op for a local root; a remote one gives each shard's recorded validation
    if known:  # raises, naming every shard (with what the files say too)
        gate_shards(keys, storage.layout, parts, storage.shard_settings, step, known)
    storage.pull(storage.layout.tags_dir)
    return check_tags_current(storage.layout, keys, parts, step), parts


def gate_tags(
    instance: dg.DagsterInstance, storage: StorageResource, release_config: ReleaseResource, step: str
) -> dict[str, Validation]:
    """For steps after ``aesthetic_tags``: the tags cover exactly the released shards, none failed or changed since."""
    return gate_tags_parts(instance, storage, release_config, step)[0]
