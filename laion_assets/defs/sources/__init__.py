"""Wiring of the sources stage: the storage resource, shard partitions, the new-shards sensor, clip_embeddings."""
