"""clip-retrieval's on-disk layout: ``img_emb/img_emb_{N}.npy`` beside ``metadata/metadata_{N}.parquet``.

Parts are paired by their number N, never by sort position, so any zero-padding width and gaps in the
numbering work; a file without its partner is an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.hints import missing_source_hint
from laion_assets.core.locations import Listed, Location, is_local, list_folder, location

_EMB = re.compile(r"^img_emb_(\d+)\.npy$")
_META = re.compile(r"^metadata_(\d+)\.parquet$")
_TEXT = re.compile(r"^text_emb_(\d+)\.npy$")


def part_key(number: int) -> str:
    """Return the partition key of part ``number`` (zero-padded to five digits, sortable)."""
    return f"{number:05d}"


@dataclass(frozen=True)
class Part:
    """One stored part: its number, partition key and the files that make it up.

    ``listed`` holds the fingerprints (:func:`~laion_assets.core.locations.stat_fingerprint`'s fields) of
    ``embeddings`` and ``metadata`` as the listing that found the part saw them, so that comparing many parts with
    what was validated needs no request per file; empty for a part made by hand.
    """

    number: int
    embeddings: Location
    metadata: Location
    text_embeddings: Location | None = None
    listed: Mapping[str, Mapping[str, object]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The partition key of this part."""
        return part_key(self.number)

    def listed_fingerprint(self, kind: str) -> Mapping[str, object] | None:
        """The listing's fingerprint of the ``embeddings`` or ``metadata`` file (None when not listed)."""
        return self.listed.get(kind)


def _numbered(folder: Location, pattern: re.Pattern[str]) -> dict[int, Listed]:
    found: dict[int, Listed] = {}
    for name, entry in sorted(list_folder(folder).items()):
        match = pattern.match(name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise BadInputError(f"{entry.path}: part {number} also stored as {found[number].path.name}")
        found[number] = entry
    return found


def _exists(root: Location) -> bool:
    # Locally a stat; behind a URL the listings below tell (an object store has no folders to ask about).
    return root.is_dir() if is_local(root) else True


def discover_parts(root: str | Location) -> list[Part]:
    """List the parts of a clip-retrieval folder (local path or fsspec URL), paired by number, in numeric order.

    Each of ``img_emb/``, ``metadata/`` and ``text_emb/`` is listed once, with every file's size and mtime/etag
    (:func:`~laion_assets.core.locations.list_folder`): the cost does not depend on how often parts are looked up.
    """
    root = location(root) if isinstance(root, str) else root
    if not _exists(root):
        raise MissingUpstreamError(f"{root}: embeddings folder not found; {missing_source_hint(str(root))}")
    embs = _numbered(root / "img_emb", _EMB)
    metas = _numbered(root / "metadata", _META)
    if not embs and not metas and not is_local(root) and not root.exists():
        raise MissingUpstreamError(f"{root}: embeddings folder not found; {missing_source_hint(str(root))}")
    texts = _numbered(root / "text_emb", _TEXT)
    for number in sorted(set(embs) ^ set(metas)):
        lonely = (embs.get(number) or metas[number]).path
        partner = "metadata/metadata" if number in embs else "img_emb/img_emb"
        raise BadInputError(f"{lonely}: unpaired part {number}: no {partner}_{number}.* beside it")
    if not embs:
        raise BadInputError(f"{root}: no img_emb/img_emb_N.npy + metadata/metadata_N.parquet parts found")
    return [
        Part(
            n,
            embs[n].path,
            metas[n].path,
            texts[n].path if n in texts else None,
            {"embeddings": embs[n].fingerprint, "metadata": metas[n].fingerprint},
        )
        for n in sorted(embs)
    ]


def parts_by_key(root: str | Location) -> dict[str, Part]:
    """Every part of a clip-retrieval folder by partition key, from one listing."""
    return {part.key: part for part in discover_parts(root)}


def find_part(root: str | Location, key: str) -> Part:
    """Return the part whose partition key is ``key``; the error names the folder when it is absent."""
    for part in discover_parts(root):
        if part.key == key:
            return part
    raise MissingUpstreamError(f"{root}: no part with key {key!r} (is the shard still registered?)")
