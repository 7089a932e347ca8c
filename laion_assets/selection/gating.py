"""Which registered shards a release-level step may read, and one message naming every shard it may not.

A shard may be read when ``clip_embeddings`` validated it (its indexed metadata records the validation),
``aesthetic_scores`` scored that very validation, its source files are still the ones validated (size and mtime or
etag), and it was indexed with the settings now in force (declared language, WIDTH/HEIGHT swap). Anything else stops
the release-level run with one message naming the shards, unless the user leaves them out of the release explicitly
(``release_config.exclude_shards``), which the manifest and the dataset card then record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from laion_assets.core.errors import BadInputError, LaionAssetsError, ShardGateError
from laion_assets.core.locations import Location, changed_fields
from laion_assets.core.outputs import OutputLayout
from laion_assets.scoring.predictors import PredictorIdentity
from laion_assets.scoring.rescoring import CURRENT, shard_state
from laion_assets.sources.indexing import Validation, read_validation, read_validation_id
from laion_assets.sources.layout import Part

# Shown at the end of every gate message: the two ways out.
EXCLUDE_HINT = (
    "re-materialize them with the storage settings of this run (`dagster asset materialize --select "
    "clip_embeddings,aesthetic_scores --partition FIRST` for each, or a backfill in the UI), or leave them out of "
    'this release explicitly with `resources: {release_config: {config: {exclude_shards: ["KEY", ...]}}}`'
)


@dataclass(frozen=True)
class ShardSettings:
    """The storage settings that shape a shard's indexed metadata."""

    language: str
    swap_width_height: bool


def part_changes(validation: Validation, part: Part) -> list[str]:
    """How the part's files differ from what was validated (empty when unchanged); paths are compared too.

    What ``Validation.source_changes`` says, judged on the fingerprints the part's listing recorded when it has them
    (:func:`~laion_assets.sources.layout.discover_parts`), so checking every shard of a source costs one listing,
    not a stat (a HEAD request on an object store) per file; the same fields are compared (size and mtime/ctime, or
    the etag/version), so a changed file is noticed as before.
    """
    changes = []
    for kind, recorded in (("embeddings", validation.embeddings), ("metadata", validation.metadata)):
        path: Location = getattr(part, kind)
        if str(path) != recorded["path"]:
            changes.append(f"{kind} is now {path}, validated {recorded['path']}")
            continue
        fields = changed_fields(recorded, path, part.listed_fingerprint(kind))
        if fields:
            changes.append(f"{Path(str(path)).name} changed since validation ({', '.join(fields)})")
    return changes


def index_problems(indexed: Path, part: Part, settings: ShardSettings) -> tuple[Validation | None, list[str]]:
    """The validation recorded for ``part`` in its indexed metadata, and why it no longer holds (empty if it does)."""
    if not indexed.exists():
        return None, ["clip_embeddings is not materialized"]
    try:
        validation = read_validation(indexed)
    except (BadInputError, OSError) as exc:
        return None, [str(exc)]
    problems = part_changes(validation, part)
    if validation.language != settings.language:
        problems.append(f"indexed with language={validation.language!r}, storage.language is {settings.language!r}")
    if validation.swap_width_height != settings.swap_width_height:
        problems.append(
            f"indexed with swap_width_height={validation.swap_width_height}, now {settings.swap_width_height}"
        )
    return validation, problems


def indexed_current(indexed: Path, part: Part, settings: ShardSettings) -> Validation | None:
    """The recorded validation when it still holds for ``part`` (same files, same settings): nothing to redo."""
    validation, problems = index_problems(indexed, part, settings)
    return None if problems else validation


def scores_current(
    key: str,
    layout: OutputLayout,
    part: Part,
    settings: ShardSettings,
    active: Mapping[str, PredictorIdentity],
) -> bool:
    """True when the shard's scores were made by ``active`` from a validation that still holds: nothing to redo."""
    if indexed_current(layout.shard_metadata(key), part, settings) is None:
        return False
    return shard_state(key, layout, active).status == CURRENT


def shard_problems(key: str, layout: OutputLayout, part: Part | None, settings: ShardSettings) -> list[str]:
    """Why one registered shard may not be read by a release-level step (empty when it may)."""
    if part is None:
        return [f"the source has no part {key} (removed, or registered from another source?)"]
    validation, problems = index_problems(layout.shard_metadata(key), part, settings)
    if validation is None:
        return problems
    scores = layout.shard_scores(key)
    if not scores.exists():
        problems.append("aesthetic_scores is not materialized")
    elif read_validation_id(scores) != validation.id:
        problems.append("its scores were made before clip_embeddings last validated it")
    return problems


def gate_message(problems: Mapping[str, Sequence[str]], step: str) -> str:
    """One sentence naming every shard that stops ``step`` and why, and how to go on."""
    listed = "; ".join(f"{key}: {', '.join(why)}" for key, why in sorted(problems.items()))
    keys = ", ".join(sorted(problems))
    hint = EXCLUDE_HINT.replace('"KEY", ...', ", ".join(f'"{k}"' for k in sorted(problems)))
    hint = hint.replace("FIRST` for each", f"{min(problems)}`" + (" for each" if len(problems) > 1 else ""))
    return f"{step} stopped: {len(problems)} registered shard(s) cannot be released ({keys}). {listed}. {hint}"


def gate_shards(
    keys: Sequence[str],
    layout: OutputLayout,
    parts: Mapping[str, Part],
    settings: ShardSettings,
    step: str,
    known_problems: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Validation]:
    """Return each shard's validation, or raise :class:`ShardGateError` naming every shard that may not be read.

    ``known_problems`` adds what the caller knows beyond the files (e.g. the orchestrator's record of a failed run).
    """
    if not keys:
        raise BadInputError("no shards are registered (or all are excluded): register the source's parts first")
    problems: dict[str, list[str]] = {k: list(v) for k, v in (known_problems or {}).items() if v and k in keys}
    for key in keys:
        found = shard_problems(key, layout, parts.get(key), settings)
        if found:
            problems.setdefault(key, []).extend(found)
    if problems:
        raise ShardGateError(gate_message(problems, step))
    return {key: read_validation(layout.shard_metadata(key)) for key in keys}


def tags_validation_ids(layout: OutputLayout) -> dict[str, str]:
    """The validation id each tags part was built from, by shard key."""
    found: dict[str, str] = {}
    for path in sorted(layout.tags_dir.glob("part-*.parquet")):
        recorded = read_validation_id(path)
        if recorded is None:
            raise BadInputError(f"{path}: records no validation (built by an older laion-assets); re-materialize it")
        found[path.stem.removeprefix("part-")] = recorded
    return found


def tags_validations(layout: OutputLayout) -> dict[str, Validation]:
    """The validation behind each tags part, read from its shard's indexed metadata (which must still match)."""
    found: dict[str, Validation] = {}
    for key, recorded in tags_validation_ids(layout).items():
        validation = read_validation(layout.require(layout.shard_metadata(key), f"clip_embeddings for shard {key}"))
        if validation.id != recorded:
            raise BadInputError(
                f"shard {key} was validated again after aesthetic_tags was built; re-materialize aesthetic_tags"
            )
        found[key] = validation
    return found


def check_tags_current(
    layout: OutputLayout, keys: Sequence[str], parts: Mapping[str, Part], step: str
) -> dict[str, Validation]:
    """Check the tags table covers exactly ``keys``, built from each shard's current validation, sources unchanged.

    Returns the validations; raises :class:`ShardGateError` naming every shard that differs, or
    :class:`BadInputError` when the tags table was built from another set of shards.
    """
    recorded = tags_validation_ids(layout)
    if sorted(recorded) != sorted(keys):
        missing, extra = sorted(set(keys) - set(recorded)), sorted(set(recorded) - set(keys))
        raise BadInputError(
            f"{layout.tags_dir}: aesthetic_tags was built from another set of shards (missing {missing}, not "
            f"registered or excluded now {extra}); re-materialize aesthetic_tags first"
        )
    problems: dict[str, list[str]] = {}
    validations: dict[str, Validation] = {}
    for key, validation_id in recorded.items():
        part = parts.get(key)
        if part is None:
            problems[key] = [f"the source has no part {key} (removed, or registered from another source?)"]
            continue
        try:
            validation = read_validation(layout.require(layout.shard_metadata(key), f"clip_embeddings for {key}"))
        except LaionAssetsError as exc:
            problems[key] = [str(exc)]
            continue
        changes = part_changes(validation, part)
        if validation.id != validation_id:
            changes.append("validated again after aesthetic_tags was built (re-materialize aesthetic_tags)")
        if changes:
            problems[key] = changes
        validations[key] = validation
    if problems:
        raise ShardGateError(gate_message(problems, step))
    return validations
