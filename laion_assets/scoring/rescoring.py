"""Which shards are out of date for the active predictors, and re-scoring them with one loaded model.

A shard is current when its scores file records, for every score column, exactly the identity (kind + sha256
of the weights) of the active predictor of that column. Anything else (another identity, a missing or
unreadable scores file, a different set of columns) makes it stale. Shards whose embeddings were never indexed
cannot be scored yet; they are reported apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import OutputLayout
from laion_assets.scoring.parts import ScoredPart, read_identities, score_part
from laion_assets.scoring.predictors import Predictor, PredictorIdentity
from laion_assets.sources.indexing import read_validation, read_validation_id
from laion_assets.sources.layout import Part

CURRENT = "current"
STALE = "stale"
UNSCORED = "unscored"
UNINDEXED = "unindexed"


@dataclass(frozen=True)
class ShardState:
    """One shard's scoring status against the active predictors."""

    key: str
    status: str
    recorded: dict[str, str]
    reason: str

    @property
    def needs_scores(self) -> bool:
        """True when the shard is indexed but its scores are missing or made by other predictors."""
        return self.status in (STALE, UNSCORED)


def shard_state(key: str, layout: OutputLayout, active: Mapping[str, PredictorIdentity]) -> ShardState:
    """Compare one shard's recorded predictor identities with the active ones."""
    if not layout.shard_metadata(key).exists():
        return ShardState(key, UNINDEXED, {}, f"{layout.shard_metadata(key)} is missing (clip_embeddings not built)")
    scores = layout.shard_scores(key)
    if not scores.exists():
        return ShardState(key, UNSCORED, {}, f"{scores} is missing")
    try:
        recorded = {c: str(i) for c, i in read_identities(scores).items()}
    except (BadInputError, OSError, ValueError) as exc:
        return ShardState(key, STALE, {}, f"cannot read its predictor identities: {exc}")
    wanted = {c: str(i) for c, i in active.items()}
    try:
        validated = read_validation(layout.shard_metadata(key)).id
    except (BadInputError, OSError) as exc:
        return ShardState(key, UNINDEXED, recorded, f"its indexed metadata cannot be read: {exc}")
    if read_validation_id(scores) != validated:
        return ShardState(key, STALE, recorded, "scored before clip_embeddings last validated the part")
    if recorded == wanted:
        return ShardState(key, CURRENT, recorded, "scored by the active predictors")
    changed = sorted(c for c in set(recorded) | set(wanted) if recorded.get(c) != wanted.get(c))
    detail = ", ".join(f"{c}: {recorded.get(c, 'none')} -> {wanted.get(c, 'none')}" for c in changed)
    return ShardState(key, STALE, recorded, f"scored by other predictors ({detail})")


def shard_states(
    keys: Sequence[str], layout: OutputLayout, active: Mapping[str, PredictorIdentity]
) -> list[ShardState]:
    """Return the state of every shard, in the order given."""
    return [shard_state(key, layout, active) for key in keys]


def stale_shards(keys: Sequence[str], layout: OutputLayout, active: Mapping[str, PredictorIdentity]) -> list[str]:
    """Return the keys of the indexed shards whose scores are missing or were made by other predictors."""
    return [s.key for s in shard_states(keys, layout, active) if s.needs_scores]


def rescore(
    keys: Sequence[str],
    layout: OutputLayout,
    parts: Mapping[str, Part],
    predictors: Mapping[str, Predictor],
) -> Iterator[ScoredPart]:
    """Re-score each shard in turn with the same loaded predictors, yielding each result as it is written."""
    for key in keys:
        if key not in parts:
            raise BadInputError(f"shard {key}: no stored part for it in the source (is it still registered?)")
        yield score_part(parts[key], layout.shard_metadata(key), predictors, layout.shard_scores(key))


def summarize(states: Sequence[ShardState]) -> dict[str, int]:
    """Count shards per status."""
    counts = {CURRENT: 0, STALE: 0, UNSCORED: 0, UNINDEXED: 0}
    for state in states:
        counts[state.status] += 1
    return counts


def identity_table(states: Sequence[ShardState], columns: Sequence[str]) -> str:
    """A markdown table: one row per shard with its status and the predictor that made each column."""
    lines = ["| shard | status | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for s in states:
        cells = [_short(s.recorded.get(c)) for c in columns]
        lines.append(f"| {s.key} | {s.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(identity: str | None) -> str:
    if identity is None:
        return "-"
    kind, _, digest = identity.partition("@sha256:")
    return f"{kind} {digest[:12]}"
