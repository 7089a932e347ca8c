import os
import shutil

import pytest

from laion_assets.core.errors import BadInputError, ShardGateError
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.parts import score_part
from laion_assets.scoring.predictors import load_predictor
from laion_assets.selection.gating import ShardSettings, check_tags_current, gate_shards, shard_problems
from laion_assets.selection.tags import build_tags
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import discover_parts

EN = ShardSettings("en", False)


def small_sample_of(embeddings):
    """The source folder of a part's embeddings file (``<source>/img_emb/img_emb_N.npy``)."""
    return embeddings.parent.parent


@pytest.fixture
def shards(small_sample, tmp_path):
    layout = OutputLayout(tmp_path / "out")
    parts = {p.key: p for p in discover_parts(small_sample)}
    predictors = {"aesthetic": load_predictor(V1_WEIGHTS), "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS)}
    for key, part in parts.items():
        index_part(part, layout.shard_metadata(key), 768)
        score_part(part, layout.shard_metadata(key), predictors, layout.shard_scores(key))
    return layout, parts, predictors


def test_a_validated_scored_unchanged_shard_passes(shards):
    layout, parts, _ = shards
    validations = gate_shards(list(parts), layout, parts, EN, "aesthetic_tags")
    assert sorted(validations) == sorted(parts) and all(v.language == "en" for v in validations.values())


def test_each_reason_a_shard_cannot_be_released_is_named(shards, tmp_path):
    layout, parts, predictors = shards
    shutil.rmtree(layout.shard_dir("00000"))
    assert shard_problems("00000", layout, parts["00000"], EN) == ["clip_embeddings is not materialized"]
    layout.shard_scores("00001").unlink()
    assert shard_problems("00001", layout, parts["00001"], EN) == ["aesthetic_scores is not materialized"]
    assert shard_problems("00002", layout, None, EN) == [
        "the source has no part 00002 (removed, or registered from another source?)"
    ]
    assert shard_problems("00002", layout, parts["00002"], ShardSettings("de", False)) == [
        "indexed with language='en', storage.language is 'de'"
    ]
    emb = parts["00002"].embeddings
    stat = emb.stat()
    os.utime(emb, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place, same size
    # The gate judges on the source's listing (one per step, with each file's size and times): a listing taken
    # after the change sees it, one from before does not.
    assert shard_problems("00002", layout, parts["00002"], EN) == []
    parts = {p.key: p for p in discover_parts(small_sample_of(emb))}
    (problem,) = shard_problems("00002", layout, parts["00002"], EN)
    assert problem.startswith(f"{emb.name} changed since validation (mtime_ns {stat.st_mtime_ns} -> ")
    moved = tmp_path / "moved"
    shutil.copytree(parts["00002"].embeddings.parent.parent, moved)
    elsewhere = discover_parts(moved)[2]
    assert shard_problems("00002", layout, elsewhere, EN)[0].startswith(f"embeddings is now {elsewhere.embeddings}")
    with pytest.raises(ShardGateError) as stopped:
        gate_shards(
            list(parts), layout, parts, EN, "aesthetic_tags", {"00002": ["its latest clip_embeddings run failed"]}
        )
    text = str(stopped.value)
    assert text.startswith("aesthetic_tags stopped: 3 registered shard(s) cannot be released (00000, 00001, 00002).")
    assert "00002: its latest clip_embeddings run failed, img_emb_2.npy changed since validation" in text
    assert 'exclude_shards: ["00000", "00001", "00002"]' in text


def test_tags_must_be_built_from_the_current_validations(shards):
    layout, parts, predictors = shards
    validations = gate_shards(list(parts), layout, parts, EN, "aesthetic_tags")
    build_tags(validations, layout)
    assert check_tags_current(layout, list(parts), parts, "release") == validations
    with pytest.raises(BadInputError, match=r"built from another set of shards \(missing \[\], not registered or "
                       r"excluded now \['00002'\]\)"):  # fmt: skip
        check_tags_current(layout, ["00000", "00001"], parts, "release")
    index_part(parts["00001"], layout.shard_metadata("00001"), 768, language="fr")  # validated again, other settings
    with pytest.raises(ShardGateError, match="00001: validated again after aesthetic_tags was built"):
        check_tags_current(layout, list(parts), parts, "release")


def test_a_data_root_holds_one_source(shards, tmp_path):
    layout, parts, _ = shards
    other = tmp_path / "other-source"
    shutil.copytree(parts["00000"].embeddings.parent.parent, other)
    foreign = discover_parts(other)[0]
    before = layout.shard_metadata("00000").read_bytes()
    with pytest.raises(BadInputError, match=r"shard 00000 of this data root was indexed from .*, not .*other-source"):
        index_part(foreign, layout.shard_metadata("00000"), 768)
    assert layout.shard_metadata("00000").read_bytes() == before  # nothing was overwritten
