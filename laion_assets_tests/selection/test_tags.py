"""Incremental tags: a rebuild rewrites only the parts whose shard changed, atomically, and mixed tables are refused."""

import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.parts import IDENTITY_KEY, score_part
from laion_assets.scoring.predictors import LinearPredictor, PredictorIdentity, load_predictor
from laion_assets.selection.safety_columns import SOURCES, SafetySources
from laion_assets.selection.subsets import write_rule
from laion_assets.selection.tags import (
    TABLE_FILE,
    TAGS_ID_KEY,
    build_tags,
    parquet_data_sha256,
    read_built_from,
    recorded_ids,
    safety_columns_record,
    tag_files,
    tags_table_id,
)
from laion_assets.selection.thresholds import V2_SUBSETS
from laion_assets.sources.indexing import index_part, read_validation
from laion_assets.sources.layout import discover_parts
from laion_assets_tests.release_helpers import tree_hashes


@pytest.fixture(scope="module")
def scored(small_sample_session, tmp_path_factory):
    """Three shards indexed and scored once for the module; each test copies the data root."""
    root = tmp_path_factory.mktemp("tags") / "out"
    layout = OutputLayout(root)
    parts = {p.key: p for p in discover_parts(small_sample_session)}
    predictors = {"aesthetic": load_predictor(V1_WEIGHTS), "AESTHETIC_SCORE": load_predictor(V2_WEIGHTS)}
    for key, part in parts.items():
        index_part(part, layout.shard_metadata(key), 768)
        score_part(part, layout.shard_metadata(key), predictors, layout.shard_scores(key))
    return root, parts, predictors


@pytest.fixture
def layout(scored, tmp_path):
    root, _, _ = scored
    shutil.copytree(root, tmp_path / "out")
    return OutputLayout(tmp_path / "out")


def validations(layout: OutputLayout, keys=("00000", "00001", "00002")):
    return {key: read_validation(layout.shard_metadata(key)) for key in keys}


def snapshot(layout: OutputLayout) -> dict[str, tuple[int, int, bytes]]:
    """Each part's inode, mtime and bytes: what a carried-over part keeps."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in layout.tags_dir.glob("part-*.parquet")
    }


def test_a_rebuild_rewrites_only_the_changed_shard(scored, layout, tmp_path):
    _, parts, predictors = scored
    first = build_tags(validations(layout), layout)
    assert first.rewritten == ("00000", "00001", "00002") and first.kept == ()
    before = snapshot(layout)
    first_id = recorded_ids(tag_files(layout))
    assert (
        first_id
        == first.table_id
        == tags_table_id({k: v.id for k, v in validations(layout).items()}, first.identities, "none")
    )  # the table id is still the digest of the shards' validations, the predictors and the safety table

    again = build_tags(validations(layout), layout)  # nothing changed: nothing is written
    assert again.rewritten == () and again.kept == ("00000", "00001", "00002")
    assert snapshot(layout) == before and recorded_ids(tag_files(layout)) == first_id
    assert again.per_shard == first.per_shard and again.duplicate_rows == first.duplicate_rows

    # Scores written again with the same predictors (same bytes, new file): the content decides, the part is kept.
    score_part(parts["00000"], layout.shard_metadata("00000"), predictors, layout.shard_scores("00000"))
    # Shard 00001 is indexed again with other settings (its metadata and validation change) and re-scored.
    index_part(parts["00001"], layout.shard_metadata("00001"), 768, language="fr")
    score_part(parts["00001"], layout.shard_metadata("00001"), predictors, layout.shard_scores("00001"))
    rebuilt = build_tags(validations(layout), layout)
    assert rebuilt.rewritten == ("00001",) and rebuilt.kept == ("00000", "00002")
    after = snapshot(layout)
    assert after["part-00000.parquet"] == before["part-00000.parquet"]
    assert after["part-00002.parquet"] == before["part-00002.parquet"]
    assert after["part-00001.parquet"][0] != before["part-00001.parquet"][0]
    new_id = recorded_ids(tag_files(layout))
    assert new_id == rebuilt.table_id != first_id

    # A subset cut from the rebuilt table records the table it read, and the release's checks agree with it.
    subset = write_rule(tag_files(layout), V2_SUBSETS[0], tmp_path / "subset")[0]  # its first (only) part
    assert read_built_from(subset.parent) == new_id

    # A removed shard's part disappears; the others stay as they are.
    fewer = build_tags(validations(layout, ("00000", "00001")), layout)
    assert fewer.removed == ("00002",) and fewer.rewritten == () and fewer.kept == ("00000", "00001")
    assert sorted(p.name for p in tag_files(layout)) == ["part-00000.parquet", "part-00001.parquet"]
    assert snapshot(layout)["part-00001.parquet"] == after["part-00001.parquet"]
    assert recorded_ids(tag_files(layout)) == fewer.table_id not in (first_id, new_id)


def test_another_safety_table_changes_every_part(layout):
    build_tags(validations(layout), layout, safety_id="table-a")
    before = snapshot(layout)
    rebuilt = build_tags(validations(layout), layout, safety_id="table-b")
    assert rebuilt.rewritten == ("00000", "00001", "00002") and rebuilt.kept == ()
    assert all(snapshot(layout)[name][0] != ino for name, (ino, _, _) in before.items())
    assert recorded_ids(tag_files(layout), "laion_assets.safety_id") == "table-b"
    assert recorded_ids(tag_files(layout), "laion_assets.predictors") == json.dumps(rebuilt.identities, sort_keys=True)


def test_a_failed_rebuild_leaves_the_previous_table_whole(scored, layout):
    _, parts, predictors = scored
    build_tags(validations(layout), layout)
    before, table_id = tree_hashes(layout.tags_dir), recorded_ids(tag_files(layout))
    inodes = {name: ino for name, (ino, _, _) in snapshot(layout).items()}
    # Shard 00000 changes (its part is written first), then shard 00002's scores are cut short: the rebuild stops.
    index_part(parts["00000"], layout.shard_metadata("00000"), 768, language="de")
    score_part(parts["00000"], layout.shard_metadata("00000"), predictors, layout.shard_scores("00000"))
    scores = layout.shard_scores("00002")

    table = pq.read_table(scores)
    write_parquet(table.slice(0, 10), scores, {k.decode(): v.decode() for k, v in table.schema.metadata.items()})
    with pytest.raises(BadInputError, match=r"scores\.parquet: 10 rows but .* has 400"):
        build_tags(validations(layout), layout)
    assert tree_hashes(layout.tags_dir) == before and recorded_ids(tag_files(layout)) == table_id
    assert {name: ino for name, (ino, _, _) in snapshot(layout).items()} == inodes
    assert not [p for p in layout.root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_a_mixed_table_is_refused(layout, tmp_path):
    build_tags(validations(layout), layout)
    other = OutputLayout(tmp_path / "other")
    shutil.copytree(layout.root / "shards", other.root / "shards")
    build_tags(validations(other), other, safety_id="another-safety-table")
    files = tag_files(layout)
    assert recorded_ids(files)  # whole

    with pytest.raises(BadInputError, match="lists part"):
        recorded_ids(files[:2])  # a part of the table is missing
    shutil.copy(other.tags_part("00001"), layout.tags_part("00001"))  # a part of another table
    with pytest.raises(BadInputError, match=r"part-00001\.parquet: mixed tags table: this file records part "):
        recorded_ids(tag_files(layout))
    (layout.tags_dir / TABLE_FILE).unlink()
    with pytest.raises(BadInputError, match=f"{TABLE_FILE} is missing"):
        recorded_ids(tag_files(layout))

    # A rebuild repairs it: the foreign part's id is not the one wanted, so it is rewritten.
    shutil.copy(other.tags_dir / TABLE_FILE, layout.tags_dir / TABLE_FILE)
    repaired = build_tags(validations(layout), layout)
    assert "00001" in repaired.rewritten and recorded_ids(tag_files(layout)) == repaired.table_id


def test_a_table_from_before_the_record_still_reads_and_is_rebuilt_whole(layout):
    build_tags(validations(layout), layout)
    record = json.loads((layout.tags_dir / TABLE_FILE).read_text())
    # As an older laion-assets wrote it: the table id in every footer, no record.
    (layout.tags_dir / TABLE_FILE).unlink()

    for path in tag_files(layout):
        write_parquet(pq.read_table(path).replace_schema_metadata({}), path, {TAGS_ID_KEY: record["table_id"]})
    assert recorded_ids(tag_files(layout)) == record["table_id"]
    rebuilt = build_tags(validations(layout), layout)
    assert rebuilt.rewritten == ("00000", "00001", "00002") and rebuilt.table_id == record["table_id"]
    assert recorded_ids(tag_files(layout)) == record["table_id"]


def test_an_input_is_known_by_its_rows_not_its_footer(tmp_path):
    table = pa.table({"hash": pa.array([1, 2, 3], pa.int64()), "aesthetic": pa.array([4.0, 5.0, 6.0], pa.float32())})
    a = write_parquet(table, tmp_path / "a.parquet", {"laion_assets.validation": '{"path": "/one/root"}'})
    b = write_parquet(table, tmp_path / "b.parquet", {"laion_assets.validation": '{"path": "/another/root/x"}'})
    c = write_parquet(table.set_column(1, "aesthetic", pa.array([4.0, 5.0, 6.5], pa.float32())), tmp_path / "c.parquet")
    d = write_parquet(
        table.cast(pa.schema([("hash", pa.int64()), ("aesthetic", pa.float64())])), tmp_path / "d.parquet"
    )
    assert a.read_bytes() != b.read_bytes() and parquet_data_sha256(a) == parquet_data_sha256(b)
    assert len({parquet_data_sha256(a), parquet_data_sha256(c), parquet_data_sha256(d)}) == 3
    (tmp_path / "e.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match=r"e\.parquet: not a parquet file"):
        parquet_data_sha256(tmp_path / "e.parquet")


def _with_heads(layout: OutputLayout, scored, keys=("00000", "00001", "00002")) -> None:
    """Give each shard computed punsafe (a head in its scores) and pwatermark (a watermark file), as our heads do."""
    _, parts, predictors = scored
    rng = np.random.default_rng(0)
    nsfw = LinearPredictor(PredictorIdentity("test-nsfw", "1" * 64), rng.normal(0, 0.01, 768).astype(np.float32), 0.3)
    for key in keys:
        score_part(parts[key], layout.shard_metadata(key), {**predictors, "punsafe": nsfw}, layout.shard_scores(key))
        hashes = pl.read_parquet(layout.shard_metadata(key), columns=["hash"])["hash"]
        frame = pl.DataFrame({"hash": hashes, "pwatermark": rng.uniform(0, 1, hashes.len()).astype(np.float32)})
        identity = json.dumps({"pwatermark": f"test-watermark@sha256:{'2' * 64}"})
        write_parquet(frame.to_arrow(), layout.shard_watermark(key), {IDENTITY_KEY: identity})


def _joined(layout: OutputLayout, key: str) -> pl.DataFrame:
    meta = pl.read_parquet(layout.shard_metadata(key))
    scores = pl.read_parquet(layout.shard_scores(key))
    watermark = pl.read_parquet(layout.shard_watermark(key))
    tags = pl.read_parquet(layout.tags_part(key))
    return pl.DataFrame(
        {
            "given_punsafe": meta["punsafe"], "given_pwatermark": meta["pwatermark"],
            "our_punsafe": scores["punsafe"], "our_pwatermark": watermark["pwatermark"],
            "punsafe": tags["punsafe"], "pwatermark": tags["pwatermark"],
            "punsafe_source": tags["punsafe_source"], "pwatermark_source": tags["pwatermark_source"],
        }
    )  # fmt: skip


@pytest.mark.parametrize("source", SOURCES)
def test_safety_columns_come_from_the_configured_source_and_say_so(scored, layout, source):
    _with_heads(layout, scored)
    # Blank LAION's values on some rows of one shard: rows LAION never tagged.
    meta = pl.read_parquet(layout.shard_metadata("00001"))
    untagged = pl.Series(np.arange(meta.height) % 3 == 0)
    meta = meta.with_columns(
        pl.when(untagged).then(None).otherwise(pl.col("punsafe")).alias("punsafe"),
        pl.when(untagged).then(None).otherwise(pl.col("pwatermark")).alias("pwatermark"),
    )
    footer = pq.read_schema(layout.shard_metadata("00001")).metadata
    write_parquet(meta.to_arrow(), layout.shard_metadata("00001"), {k.decode(): v.decode() for k, v in footer.items()})
    summary = build_tags(validations(layout), layout, sources=SafetySources(source, source))
    rows = pl.concat([_joined(layout, key) for key in ("00000", "00001", "00002")])
    for column in ("punsafe", "pwatermark"):
        given, ours = rows[f"given_{column}"], rows[f"our_{column}"]
        expected = {"provided": given, "computed": ours, "provided_else_computed": given.fill_null(ours)}[source]
        assert rows[column].equals(expected.cast(pl.Float32), check_names=False)
        origin = rows[f"{column}_source"]
        provided = (origin == "provided").fill_null(False)
        computed = (origin == "computed").fill_null(False)
        assert provided.sum() == (given.is_not_null().sum() if source != "computed" else 0)
        assert (
            computed.sum()
            == {"provided": 0, "computed": rows.height, "provided_else_computed": given.null_count()}[source]
        )
        assert summary.origins[f"{column}/provided"] == provided.sum()
        assert summary.origins[f"{column}/computed"] == computed.sum()
        assert (rows[column].is_null() == origin.is_null()).all()
    record = safety_columns_record(layout.tags_dir)
    assert record["punsafe"]["from"] == source and record["punsafe"]["head"] == f"test-nsfw@sha256:{'1' * 64}"
    assert record["pwatermark"]["computed_rows"] == summary.origins["pwatermark/computed"]


def test_changing_a_safety_source_rewrites_every_part_and_a_misaligned_head_is_refused(scored, layout):
    _with_heads(layout, scored)
    first = build_tags(validations(layout), layout)
    again = build_tags(validations(layout), layout, sources=SafetySources(punsafe="computed"))
    assert sorted(again.rewritten) == ["00000", "00001", "00002"] and again.table_id != first.table_id
    frame = pl.read_parquet(layout.shard_watermark("00002"))
    write_parquet(frame.reverse().to_arrow(), layout.shard_watermark("00002"), {IDENTITY_KEY: "{}"})
    with pytest.raises(BadInputError, match=r"watermark.parquet: hashes are not row-aligned"):
        build_tags(validations(layout), layout)


def test_an_unknown_safety_source_is_refused():
    with pytest.raises(BadInputError, match=r"punsafe source 'laion' is not one of"):
        SafetySources(punsafe="laion")
