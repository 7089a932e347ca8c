"""clip-retrieval's on-disk layout: ``img_emb/img_emb_{N}.npy`` beside ``metadata/metadata_{N}.parquet``.

Parts are paired by their number N, never by sort position, so any zero-padding width and gaps in the
numbering work; a file without its partner is an error that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.hints import missing_source_hint
from laion_assets.core.locations import Location, location

_EMB = re.compile(r"^img_emb_(\d+)\.npy$")
_META = re.compile(r"^metadata_(\d+)\.parquet$")
_TEXT = re.compile(r"^text_emb_(\d+)\.npy$")


def part_key(number: int) -> str:
    """Return the partition key of part ``number`` (zero-padded to five digits, sortable)."""
    return f"{number:05d}"


@dataclass(frozen=True)
class Part:
    """One stored part: its number, partition key and the files that make it up."""

    number: int
    embeddings: Location
    metadata: Location
    text_embeddings: Location | None = None

    @property
    def key(self) -> str:
        """The partition key of this part."""
        return part_key(self.number)


def _numbered(folder: Location, pattern: re.Pattern[str]) -> dict[int, Location]:
    found: dict[int, Location] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        match = pattern.match(path.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise BadInputError(f"{path}: part {number} also stored as {found[number].name}")
        found[number] = path
    return found


def discover_parts(root: str | Location) -> list[Part]:
    """List the parts of a clip-retrieval folder (local path or fsspec URL), paired by number, in numeric order."""
    root = location(root) if isinstance(root, str) else root
    if not root.is_dir():
        raise MissingUpstreamError(f"{root}: embeddings folder not found; {missing_source_hint(str(root))}")
    embs = _numbered(root / "img_emb", _EMB)
    metas = _numbered(root / "metadata", _META)
    texts = _numbered(root / "text_emb", _TEXT)
    for number in sorted(set(embs) ^ set(metas)):
        lonely = embs.get(number) or metas.get(number)
        partner = "metadata/metadata" if number in embs else "img_emb/img_emb"
        raise BadInputError(f"{lonely}: unpaired part {number}: no {partner}_{number}.* beside it")
    if not embs:
        raise BadInputError(f"{root}: no img_emb/img_emb_N.npy + metadata/metadata_N.parquet parts found")
    return [Part(n, embs[n], metas[n], texts.get(n)) for n in sorted(embs)]


def find_part(root: str | Location, key: str) -> Part:
    """Return the part whose partition key is ``key``; the error names the folder when it is absent."""
    for part in discover_parts(root):
        if part.key == key:
            return part
    raise MissingUpstreamError(f"{root}: no part with key {key!r} (is the shard still registered?)")
