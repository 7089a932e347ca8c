"""Turning our own errors into Dagster failures whose description is the one clear sentence."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from laion_assets.errors import LaionAssetsError


@contextmanager
def as_failure() -> Iterator[None]:
    """Re-raise a :class:`LaionAssetsError` as ``dg.Failure`` carrying its message (no retry helps)."""
    try:
        yield
    except LaionAssetsError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
