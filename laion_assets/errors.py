"""Errors raised on bad input; every message names the file, shard or row at fault."""

from __future__ import annotations


class LaionAssetsError(Exception):
    """Base class of every error this package raises on purpose."""


class BadInputError(LaionAssetsError, ValueError):
    """An input file (embeddings, metadata, weights) is malformed; the message names it and says how."""


class MissingUpstreamError(LaionAssetsError, FileNotFoundError):
    """An asset's input has not been built yet; the message names it and the command that builds it."""
