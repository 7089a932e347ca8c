import shutil

from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import V1_WEIGHTS, V2_RELU_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.parts import read_identities, score_part
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.rescoring import (
    CURRENT,
    STALE,
    UNINDEXED,
    UNSCORED,
    identity_table,
    rescore,
    shard_states,
    stale_shards,
    summarize,
)
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import discover_parts


def test_only_shards_scored_by_another_identity_are_stale(small_sample, tmp_path):
    layout = OutputLayout(tmp_path / "out")
    parts = {p.key: p for p in discover_parts(small_sample)}
    released = {"aesthetic": load_predictor(V1_WEIGHTS), "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS)}
    relu = {**released, "AESTHETIC_SCORE": load_predictor(V2_RELU_WEIGHTS)}
    for key, part in parts.items():
        index_part(part, layout.shard_metadata(key), 768)
    score_part(parts["00000"], layout.shard_metadata("00000"), released, layout.shard_scores("00000"))
    score_part(parts["00001"], layout.shard_metadata("00001"), relu, layout.shard_scores("00001"))
    keys = [*parts, "00009"]  # 00002 indexed but never scored; 00009 registered but not indexed
    active = {c: p.identity for c, p in released.items()}
    states = {s.key: s for s in shard_states(keys, layout, active)}
    assert {k: s.status for k, s in states.items()} == {
        "00000": CURRENT,
        "00001": STALE,
        "00002": UNSCORED,
        "00009": UNINDEXED,
    }
    v1_id, relu_id = released["aesthetic"].identity, relu["AESTHETIC_SCORE"].identity
    assert f"AESTHETIC_SCORE: {relu_id} -> {active['AESTHETIC_SCORE']}" in states["00001"].reason
    assert stale_shards(keys, layout, active) == ["00001", "00002"]
    relu_active = {c: p.identity for c, p in relu.items()}
    assert stale_shards(keys, layout, relu_active) == ["00000", "00002"]
    assert summarize(list(states.values())) == {CURRENT: 1, STALE: 1, UNSCORED: 1, UNINDEXED: 1}
    table = identity_table(list(states.values()), ["aesthetic", "AESTHETIC_SCORE"])
    assert f"| 00001 | stale | v1-linear {v1_id.sha256[:12]} | v2-mlp-relu {relu_id.sha256[:12]} |" in table

    done = [s.key for s in rescore(stale_shards(keys, layout, relu_active), layout, parts, relu)]
    assert done == ["00000", "00002"]
    assert stale_shards(keys, layout, relu_active) == []
    assert read_identities(layout.shard_scores("00002")) == relu_active


def test_unreadable_scores_file_is_stale(small_sample, tmp_path):
    layout = OutputLayout(tmp_path / "out")
    part = discover_parts(small_sample)[0]
    index_part(part, layout.shard_metadata(part.key), 768)
    layout.shard_scores(part.key).write_bytes(b"not parquet")
    active = {"aesthetic": load_predictor(V1_WEIGHTS).identity}
    (state,) = shard_states([part.key], layout, active)
    assert state.status == STALE and "cannot read its predictor identities" in state.reason
    shutil.rmtree(layout.root)
