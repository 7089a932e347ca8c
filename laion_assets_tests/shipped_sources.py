"""The sha256 values written in ``data/*/SOURCES.md``, parsed, so tests can check the shipped files against them."""

from __future__ import annotations

import re
from pathlib import Path

# A table row whose first cell is a `file` and whose last cell is a bare sha256, or a "sha256  path" line.
_ROW = re.compile(r"^\| `([^`]+)` \|.*\| ([0-9a-f]{64}) \|$")
_LINE = re.compile(r"^([0-9a-f]{64})\s+(\S+)$")
# A row of the identities table: | `file` | `kind@sha256:hex` |
_IDENTITY = re.compile(r"^\| `([^`]+)` \| `([a-z0-9-]+@sha256:[0-9a-f]{64})` \|$")


def listed_sha256(sources_md: Path) -> dict[str, str]:
    """``{path relative to the SOURCES.md folder: sha256}`` of every file the document lists with a hash."""
    listed: dict[str, str] = {}
    for line in sources_md.read_text().splitlines():
        if row := _ROW.match(line.strip()):
            listed[row.group(1)] = row.group(2)
        elif hashed := _LINE.match(line.strip()):
            listed[hashed.group(2)] = hashed.group(1)
    return listed


def listed_identities(sources_md: Path) -> dict[str, str]:
    """``{file: kind@sha256:hex}`` from the identities table of ``data/models/SOURCES.md``."""
    return {m.group(1): m.group(2) for line in sources_md.read_text().splitlines() if (m := _IDENTITY.match(line))}
