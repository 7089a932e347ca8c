"""Errors raised on bad input; every message names the file, shard or row at fault."""

from __future__ import annotations


class LaionAssetsError(Exception):
    """Base class of every error this package raises on purpose."""


class BadInputError(LaionAssetsError, ValueError):
    """An input file (embeddings, metadata, weights) is malformed; the message names it and says how."""


class MissingUpstreamError(LaionAssetsError, FileNotFoundError):
    """An asset's input has not been built yet; the message names it and the command that builds it."""


class SourceChangedError(LaionAssetsError):
    """A source file differs from what ``clip_embeddings`` validated; the message names the shard and the file."""


class ShardGateError(LaionAssetsError):
    """A release-level step found registered shards it may not read; the message names each shard and why."""


class OutputWriteError(LaionAssetsError):
    """Writing an output failed at the operating-system level (disk full, permissions, ...); names the file."""
