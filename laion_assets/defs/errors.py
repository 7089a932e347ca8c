"""Turning our own errors, and the operating system's, into Dagster failures whose description is one clear sentence."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from laion_assets.core.errors import LaionAssetsError


@contextmanager
def as_failure(step: str = "") -> Iterator[None]:
    """Re-raise our errors and ``OSError`` (disk full, permissions, ...) as ``dg.Failure`` naming ``step``.

    No retry helps either kind, so retries are not allowed.
    """
    prefix = f"{step}: " if step else ""
    try:
        yield
    except LaionAssetsError as exc:
        text = str(exc)
        named = text if step and text.startswith(step.split(" ")[0]) else f"{prefix}{text}"
        raise dg.Failure(description=named, allow_retries=False) from exc
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc) else ""
        raise dg.Failure(description=f"{prefix}{exc}{where}", allow_retries=False) from exc
