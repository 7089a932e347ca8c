"""Validating and indexing one stored part (its embeddings and metadata), and noticing when it changed since.

Indexing records what it validated (each file's size, mtime or etag, and sha256, plus the settings that shaped the
metadata) in the indexed metadata file; scoring (``laion_assets.scoring.parts``) records which validation its scores
were made from. Release-level steps then read only what was validated, and notice a source file that changed since
(``laion_assets.selection.gating``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError, SourceChangedError
from laion_assets.core.locations import Location, changed_fields, file_sha256, stat_fingerprint
from laion_assets.sources.embeddings import EmbeddingStats, validate_embeddings
from laion_assets.sources.layout import Part
from laion_assets.sources.metadata import ENGLISH, missing_url, read_metadata

# Key under which indexed metadata records what was validated, and a scores or tags file which validation it used.
VALIDATION_KEY = "laion_assets.validation"
VALIDATION_ID_KEY = "laion_assets.validation_id"


@dataclass(frozen=True)
class Validation:
    """What ``clip_embeddings`` validated for one part: each file's fingerprint and sha256, and the settings used."""

    key: str
    embeddings: dict[str, object]
    metadata: dict[str, object]
    rows: int
    language: str
    swap_width_height: bool

    @property
    def id(self) -> str:
        """A short digest naming exactly this validated content and these settings."""
        content = [self.embeddings["sha256"], self.metadata["sha256"], self.language, self.swap_width_height]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """Serialise for a parquet key-value entry."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Validation:
        """Parse what :meth:`to_json` wrote."""
        return cls(**json.loads(text))

    def source_changes(self, part: Part) -> list[str]:
        """How the part's files differ from what was validated (empty when unchanged); paths are compared too."""
        changes = []
        for kind, recorded in (("embeddings", self.embeddings), ("metadata", self.metadata)):
            path: Location = getattr(part, kind)
            if str(path) != recorded["path"]:
                changes.append(f"{kind} is now {path}, validated {recorded['path']}")
                continue
            fields = changed_fields(recorded, path)
            if fields:
                changes.append(f"{Path(str(path)).name} changed since validation ({', '.join(fields)})")
        return changes


def _file_record(path: Location, fingerprint: dict[str, object], sha256: str) -> dict[str, object]:
    return {"path": str(path), **fingerprint, "sha256": sha256}


def read_validation(indexed_metadata: Path) -> Validation:
    """The validation recorded in an indexed metadata file; raises naming it when it has none."""
    raw = (pq.read_schema(indexed_metadata).metadata or {}).get(VALIDATION_KEY.encode())
    if raw is None:
        raise BadInputError(
            f"{indexed_metadata}: records no validation (indexed by an older laion-assets); re-materialize "
            "clip_embeddings for this shard"
        )
    return Validation.from_json(raw)


def read_validation_id(path: Path) -> str | None:
    """The validation a scores or tags file was made from (None when it records none)."""
    raw = (pq.read_schema(path).metadata or {}).get(VALIDATION_ID_KEY.encode())
    return raw.decode() if raw is not None else None


@dataclass(frozen=True)
class IndexedPart:
    """What indexing one part found."""

    key: str
    rows: int
    stats: EmbeddingStats
    duplicate_hashes: int
    languages: dict[str, int] = field(default_factory=dict)
    rows_without_url: int = 0
    rows_without_caption: int = 0
    validation: Validation | None = None


def index_part(
    part: Part, out: Path, dim: int, swap_width_height: bool = False, language: str = ENGLISH
) -> IndexedPart:
    """Validate a part (width, dtype, rows, norms, finite values) and write its metadata with LAION hashes.

    The files' fingerprints are taken before and after reading; a part that changes meanwhile (still being written)
    is refused rather than recorded with a mix of two versions.
    """
    _refuse_another_source(part, out)
    before = {kind: stat_fingerprint(getattr(part, kind)) for kind in ("embeddings", "metadata")}
    meta = read_metadata(part.metadata, swap_width_height=swap_width_height, language=language)
    stats = validate_embeddings(part.embeddings, dim, meta.height, rows_from=part.metadata)
    meta_sha = file_sha256(part.metadata)
    for kind, fingerprint in before.items():
        if stat_fingerprint(getattr(part, kind)) != fingerprint:
            raise BadInputError(f"{getattr(part, kind)}: changed while it was being validated; run again once complete")
    validation = Validation(
        key=part.key,
        embeddings=_file_record(part.embeddings, before["embeddings"], stats.sha256),
        metadata=_file_record(part.metadata, before["metadata"], meta_sha),
        rows=meta.height,
        language=language,
        swap_width_height=swap_width_height,
    )
    write_parquet(meta.to_arrow(), out, {VALIDATION_KEY: validation.to_json()})
    languages = meta["LANGUAGE"].fill_null("").value_counts(sort=True).head(10)
    return IndexedPart(
        key=part.key,
        rows=meta.height,
        stats=stats,
        duplicate_hashes=meta.height - meta["hash"].n_unique(),
        languages={str(k): int(v) for k, v in languages.iter_rows()},
        rows_without_url=int(meta.select(missing_url().sum()).item()),
        rows_without_caption=int(meta["TEXT"].null_count()),
        validation=validation,
    )


def _source_folder(embeddings: str | Location) -> str:
    return str(embeddings).rsplit("/", 2)[0]  # <source>/img_emb/img_emb_N.npy


def _refuse_another_source(part: Part, out: Path) -> None:
    """A data root holds one source: indexing shard N of another source over it would mix two datasets."""
    if not out.exists():
        return
    try:
        previous = read_validation(out)
    except (BadInputError, OSError):
        return  # an older or unreadable record: indexing replaces it
    before, now = _source_folder(str(previous.embeddings["path"])), _source_folder(part.embeddings)
    if before != now:
        raise BadInputError(
            f"{out}: shard {part.key} of this data root was indexed from {before}, not {now}: a data root (and its "
            "Dagster instance) holds one source; use another data root (--data-root / LAION_ASSETS_DATA_ROOT) and "
            f"instance (--dagster-home / DAGSTER_HOME) for another source, or delete {out.parent} to index this "
            "shard again from the new one"
        )


def check_source_unchanged(part: Part, validation: Validation) -> None:
    """Raise :class:`SourceChangedError` naming the shard and files when the part differs from what was validated."""
    changes = validation.source_changes(part)
    if changes:
        raise SourceChangedError(
            f"shard {part.key}: {'; '.join(changes)}; re-materialize clip_embeddings for shard {part.key}"
        )
