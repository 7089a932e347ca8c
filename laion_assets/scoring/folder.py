"""``laion-assets score``: a clip-retrieval folder scored without Dagster, one ``scores_N.parquet`` per part.

Each part's vectors are read once: checked (as ``clip_embeddings`` checks them) and scored by every head in the same
pass (:func:`laion_assets.scoring.parts.score_vectors`, the code ``aesthetic_scores`` runs), so a part's scores here
equal the asset's bit for bit. The output is row-aligned with the part: LAION's ``hash`` of url + caption (int64,
as ``clip_embeddings`` computes it) and one float32 column per head. It records the input files' fingerprints and
the heads' identities, so a second run skips the parts already scored with the same inputs and heads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import stat_fingerprint
from laion_assets.scoring.parallel import parallel_map
from laion_assets.scoring.parts import IDENTITY_KEY, score_vectors
from laion_assets.scoring.predictors import Predictor
from laion_assets.sources.layout import Part
from laion_assets.sources.metadata import read_hashes

# Key under which a scores file records the inputs and heads it was made from (what makes a rerun skip it).
INPUTS_KEY = "laion_assets.score_inputs"


@dataclass(frozen=True)
class FolderResult:
    """What happened to one part: ``scored`` (with its wall seconds) or ``skipped`` (already up to date)."""

    part: Part
    out: Path
    status: str
    rows: int
    seconds: float = 0.0


def scores_file(part: Part, out_dir: Path) -> Path:
    """``out_dir/scores_N.parquet`` with N written as in the part's file name (``img_emb_0007.npy`` -> ``0007``)."""
    number = Path(str(part.embeddings)).name.removeprefix("img_emb_").removesuffix(".npy")
    return out_dir / f"scores_{number}.parquet"


def input_record(part: Part, predictors: Mapping[str, Predictor]) -> str:
    """The inputs a scores file is made from: both files (path, size, mtime/etag) and each head's identity."""
    files = {
        kind: {"path": str(getattr(part, kind)), **stat_fingerprint(getattr(part, kind))}
        for kind in ("embeddings", "metadata")
    }
    heads = {name: str(p.identity) for name, p in predictors.items()}
    return json.dumps({"files": files, "heads": heads}, sort_keys=True)


def recorded_inputs(path: Path) -> str | None:
    """The input record of an existing scores file (None when it is absent, unreadable or records none)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(INPUTS_KEY.encode())
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None
    return raw.decode() if raw is not None else None


def score_folder_part(
    part: Part, predictors: Mapping[str, Predictor], out_dir: Path, force: bool = False
) -> FolderResult:
    """Score one part into ``out_dir/scores_N.parquet`` (atomically), unless it is already there for the same inputs
    and heads (and not ``force``); a bad part raises naming the file and row, and writes nothing."""
    out = scores_file(part, out_dir)
    record = input_record(part, predictors)
    if not force and recorded_inputs(out) == record:
        return FolderResult(part, out, "skipped", pq.read_metadata(out).num_rows)
    started = time.perf_counter()
    hashes = read_hashes(part.metadata)
    scores = score_vectors(part, predictors, hashes.len(), part.metadata)
    if input_record(part, predictors) != record:
        raise BadInputError(f"{part.embeddings}: part {part.number} changed while it was being scored; run again")
    table = pl.DataFrame({"hash": hashes, **{k: pl.Series(k, v, dtype=pl.Float32) for k, v in scores.items()}})
    identities = json.dumps({k: str(p.identity) for k, p in predictors.items()}, sort_keys=True)
    write_parquet(table.to_arrow(), out, {IDENTITY_KEY: identities, INPUTS_KEY: record})
    return FolderResult(part, out, "scored", hashes.len(), time.perf_counter() - started)


def score_folder(
    parts: Sequence[Part],
    predictors: Mapping[str, Predictor],
    out_dir: Path,
    workers: int | None = None,
    threads: int | None = None,
    force: bool = False,
) -> Iterator[tuple[Part, FolderResult | Exception]]:
    """Score parts in parallel (``workers`` at once, ``threads`` BLAS/torch threads each); yields ``(part, result
    or its error)`` as each finishes. A failed part stops no other and leaves no file."""
    work: Callable[[Part], FolderResult] = lambda part: score_folder_part(part, predictors, out_dir, force)  # noqa: E731
    yield from parallel_map(work, parts, workers, threads)


def select_parts(parts: Sequence[Part], spec: str) -> list[Part]:
    """The parts a ``--parts`` spec names, e.g. ``0,3,7-9``: a single number must exist; a range takes the parts
    inside it (numbering may have gaps) and must hold at least one."""
    numbers = {p.number for p in parts}
    wanted: set[int] = set()
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        low, dash, high = item.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise BadInputError(f"--parts: {item!r} is not a part number or range (e.g. 0,3,7-9)") from None
        inside = numbers & set(range(first, last + 1))
        if not inside:
            raise BadInputError(f"--parts: no part numbered {item} in the folder (it has {len(numbers)} parts)")
        wanted |= inside
    return [p for p in parts if p.number in wanted]
