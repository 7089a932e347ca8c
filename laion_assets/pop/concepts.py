"""LAION-POP's concept collection: CLIP embeddings of the concept images, read from a clip-retrieval folder.

LAION embedded 4.25 M Midjourney images with CLIP ViT-L/14 (blog post "LAION POP", Nov 2023). Ours come from any
clip-retrieval folder: ``img_emb/img_emb_{N}.npy`` (float16 or float32, L2-normalised rows), as our URL chain
(``image_embeddings``) or clip-retrieval's ``clip_inference`` writes them; ``metadata/`` is not needed. The record
names every file with its rows and sha256, so a changed collection is seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.locations import Location, list_folder, location
from laion_assets.sources.embeddings import iter_chunks, open_embeddings, validate_embeddings

_EMB = re.compile(r"^img_emb_(\d+)\.npy$")
FORMAT = 1


@dataclass(frozen=True)
class ConceptFile:
    """One embeddings file of the collection."""

    path: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Concepts:
    """The concept collection: its files in part order, total rows and width."""

    source: str
    files: tuple[ConceptFile, ...]
    dim: int

    @property
    def rows(self) -> int:
        """Concept vectors in all files."""
        return sum(f.rows for f in self.files)

    def to_dict(self) -> dict[str, object]:
        """The JSON record pop_concepts writes."""
        return {
            "format": FORMAT,
            "source": self.source,
            "dim": self.dim,
            "rows": self.rows,
            "files": [{"path": f.path, "rows": f.rows, "sha256": f.sha256} for f in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], where: str = "the concepts record") -> Concepts:
        """Read a record written by :meth:`to_dict`; another format is an error naming ``where``."""
        if data.get("format") != FORMAT:
            raise BadInputError(f"{where}: format {data.get('format')!r}, expected {FORMAT}: materialize pop_concepts")
        files = tuple(ConceptFile(str(f["path"]), int(f["rows"]), str(f["sha256"])) for f in data["files"])  # type: ignore[index, union-attr]
        return cls(str(data["source"]), files, int(data["dim"]))  # type: ignore[arg-type]


def embedding_files(folder: str | Location) -> list[Location]:
    """``img_emb/img_emb_{N}.npy`` of a clip-retrieval folder, by part number; none is an error naming the folder."""
    root = location(folder) if isinstance(folder, str) else folder
    listed = list_folder(root / "img_emb")
    numbered = sorted((int(m.group(1)), entry.path) for name, entry in listed.items() if (m := _EMB.match(name)))
    if not numbered:
        state = "does not exist" if not listed and not _exists(root) else "holds no img_emb/img_emb_{N}.npy"
        raise MissingUpstreamError(
            f"{root}: {state}: the concept collection is a clip-retrieval folder of CLIP embeddings "
            "(img_emb/img_emb_{N}.npy); embed the concept images with clip-retrieval or our URL chain, and set the "
            "pop resource's `concepts` (or $LAION_ASSETS_POP_CONCEPTS) to that folder"
        )
    return [path for _, path in numbered]


def _exists(root: Location) -> bool:
    try:
        return root.exists()
    except OSError:
        return False


def read_concepts(folder: str | Location, dim: int) -> Concepts:
    """Validate every embeddings file of ``folder`` (width ``dim``, finite, unit rows) and record it."""
    files = []
    for path in embedding_files(folder):
        stats = validate_embeddings(path, dim)
        if stats.rows == 0:
            raise BadInputError(f"{path}: no concept vectors (0 rows)")
        files.append(ConceptFile(str(path), stats.rows, stats.sha256))
    return Concepts(str(folder), tuple(files), dim)


def iter_vectors(concepts: Concepts, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, float32 chunk)`` over the whole collection, file after file."""
    offset = 0
    for f in concepts.files:
        array = open_embeddings(location(f.path))
        if array.shape != (f.rows, concepts.dim):
            raise BadInputError(
                f"{f.path}: now {tuple(array.shape)}, pop_concepts recorded ({f.rows}, {concepts.dim}): "
                "materialize pop_concepts again"
            )
        for start, chunk in iter_chunks(array, rows):
            yield offset + start, chunk
        offset += f.rows


def sample_vectors(concepts: Concepts, count: int, seed: int) -> np.ndarray:
    """``count`` rows of the collection drawn without replacement (seeded; all rows when there are fewer), float32."""
    total = concepts.rows
    if count >= total:
        return np.concatenate([chunk for _, chunk in iter_vectors(concepts)])
    wanted = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    out, offset = [], 0
    for f in concepts.files:
        mine = wanted[(wanted >= offset) & (wanted < offset + f.rows)] - offset
        if len(mine):
            out.append(np.asarray(open_embeddings(location(f.path))[mine], dtype=np.float32))
        offset += f.rows
    return np.concatenate(out)
