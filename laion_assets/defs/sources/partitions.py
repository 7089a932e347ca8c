"""Shard partitions: one dynamic partition per stored part (about 1M rows, clip-retrieval's part size)."""

import dagster as dg

from laion_assets.core.locations import Location
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.url_sources import discover_url_shards, is_url_folder

shards = dg.DynamicPartitionsDefinition(name="shards")


def source_keys(source: str | Location) -> list[str]:
    """Partition keys of a source folder: its URL shards, or its stored clip-retrieval parts."""
    if is_url_folder(source):
        return [shard.key for shard in discover_url_shards(source)]
    return [part.key for part in discover_parts(source)]


def new_shard_keys(instance: dg.DagsterInstance, source: str | Location) -> list[str]:
    """Partition keys of the source's parts that the instance has not registered yet."""
    known = set(instance.get_dynamic_partitions(shards.name))
    return [key for key in source_keys(source) if key not in known]


def register_shards(instance: dg.DagsterInstance, source: str | Location) -> list[str]:
    """Register every part of ``source`` as a shard partition; returns the keys that were new."""
    new = new_shard_keys(instance, source)
    if new:
        instance.add_dynamic_partitions(shards.name, new)
    return new
