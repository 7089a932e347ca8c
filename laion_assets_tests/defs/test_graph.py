"""The whole graph materialized on a small generated sample, checked against an independent computation."""

import hashlib
import json
import re

import dagster as dg
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, POP_CHECKS, default_resources, defs
from laion_assets.defs.metadata import PREVIEW_ROWS, round_float
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.demos.local import run_graph, run_sample_pop
from laion_assets.scoring.predictors import load_predictor
from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.hashing import laion_hash
from laion_assets.sources.layout import discover_parts

ALL_ASSETS = {
    "clip_embeddings", "aesthetic_scores", "safety_tags", "aesthetic_tags", "subset_4_5plus", "subset_4_75plus",
    "subset_5plus", "subset_6plus", "subset_6_25plus", "subset_6_5plus", "laion_aesthetic", "laion_art",
    "bucket_embeddings", "score_histogram", "aesthetic_kv", "aesthetic_viz", "release", "hf_release", "images",
    "image_embeddings", "rescored_shards", "aesthetic_predictor_trained", "knn_index", "pop_concepts", "pop_centroids",
    "laion_pop", "pop_images", "pop_captions",
}  # fmt: skip
# Pushing to the Hub needs a repo and a token; the URL front only runs when a URL source is configured; re-scoring
# and training are operations of their own (the rescore job, a ratings table); LAION-POP's downloads and captions
# need the sample's URLs (the internet): the demo runs its selection only.
NOT_IN_DEMO = {"hf_release", "images", "image_embeddings", "rescored_shards", "aesthetic_predictor_trained",
               "pop_images", "pop_captions"}  # fmt: skip


def independent_rows(source) -> list[dict]:
    """Every sample row with LAION's hash and both scores, computed with plain torch modules and mmh3."""
    v1 = torch.nn.Linear(768, 1)
    v1.load_state_dict(torch.load(V1_WEIGHTS, map_location="cpu", weights_only=True))
    state = torch.load(V2_WEIGHTS, map_location="cpu", weights_only=True)
    layers = [torch.nn.Linear(a, b) for a, b in ((768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))]
    v2 = torch.nn.Sequential(*layers)
    v2.load_state_dict({f"{j}.{p}": state[f"layers.{i}.{p}"] for j, i in enumerate((0, 2, 4, 6, 7)) for p in
                        ("weight", "bias")})  # fmt: skip
    rows = []
    for part in discover_parts(source):
        emb = torch.from_numpy(np.load(part.embeddings).astype(np.float32))
        with torch.no_grad():
            s1, s2 = v1(emb)[:, 0].numpy(), v2(emb)[:, 0].numpy()
        for i, row in enumerate(pl.read_parquet(part.metadata).iter_rows(named=True)):
            rows.append({**row, "hash": laion_hash(row["URL"], row["TEXT"]), "aesthetic": s1[i],
                         "AESTHETIC_SCORE": s2[i], "emb": emb[i].numpy()})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_sample_session):
    out = tmp_path_factory.mktemp("out")
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample_session), data_root=str(out))
    counts = run_graph(instance, storage, PredictorsResource())
    counts |= run_sample_pop(instance, storage)  # as `make demo`: LAION-POP's selection on the sample
    return instance, storage, counts, independent_rows(small_sample_session)


def test_every_asset_is_materialized_and_loads_in_definitions(built):
    instance, storage, counts, rows = built
    assert set(counts) == ALL_ASSETS - {"clip_embeddings", "aesthetic_scores"} - NOT_IN_DEMO
    assert counts["aesthetic_tags"] == len(rows)
    for key in ALL_ASSETS - NOT_IN_DEMO:
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == ALL_ASSETS


def test_the_demo_runs_the_code_locations_named_jobs(built):
    """The UI lists the demo's runs by job (one shard_job per shard, release_job, pop_job), never as ephemeral runs."""
    instance, _, _, _ = built
    runs = instance.get_runs()
    assert sorted(r.job_name for r in runs) == ["pop_job", "release_job"] + ["shard_job"] * 3
    shard_runs = [r for r in runs if r.job_name == "shard_job"]
    assert sorted(r.tags["dagster/partition"] for r in shard_runs) == ["00000", "00001", "00002"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_scores_match_an_independent_torch_computation(built):
    _, storage, _, rows = built
    tags = pl.read_parquet(sorted(storage.layout.tags_dir.glob("part-*.parquet")))
    assert tags["hash"].to_list() == [r["hash"] for r in rows]
    np.testing.assert_allclose(tags["aesthetic"].to_numpy(), [r["aesthetic"] for r in rows], atol=1e-5, rtol=0)
    np.testing.assert_allclose(tags["AESTHETIC_SCORE"].to_numpy(), [r["AESTHETIC_SCORE"] for r in rows], atol=1e-5)


def test_subsets_follow_laion_rules(built):
    _, storage, counts, rows = built
    # Scores near a threshold could flip with 1e-5 float noise; the sample draws continuous scores so none sit there.
    for name, t in (("subset_4_5plus", 4.5), ("subset_4_75plus", 4.75), ("subset_5plus", 5.0), ("subset_6plus", 6.0),
                    ("subset_6_25plus", 6.25), ("subset_6_5plus", 6.5)):  # fmt: skip
        got = pl.read_parquet(storage.layout.subset_dir(name) / "part-00000.parquet")
        expected = [r["hash"] for r in rows if r["LANGUAGE"] == "en" and r["AESTHETIC_SCORE"] >= t]
        assert got["hash"].to_list() == expected, name
        assert counts[name] == len(expected) > 0
    seen, safe = set(), []
    for r in rows:
        if r["punsafe"] < 0.5 and r["pwatermark"] < 0.8 and r["hash"] not in seen:
            seen.add(r["hash"])
            safe.append(r)
    for name, t in (("laion_aesthetic", 7.0), ("laion_art", 8.0)):
        got = pl.read_parquet(storage.layout.subset_dir(name) / "part-00000.parquet")
        assert got["hash"].to_list() == [r["hash"] for r in safe if r["aesthetic"] > t], name
        assert got.height > 0


def test_buckets_and_histogram_follow_laion_rules(built):
    _, storage, _, rows = built
    emb = np.stack([r["emb"] for r in rows]).astype(np.float64)
    s1 = np.array([r["aesthetic"] for r in rows])
    for k in range(10):
        total = emb[(s1 >= k) & (s1 <= k + 1)].sum(axis=0)
        got = np.load(storage.layout.buckets_dir / f"rating{k}.npy")
        assert got.shape == (1, 768) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], total / np.linalg.norm(total), atol=1e-5)
    hist = json.loads(storage.layout.histogram_path.read_text())
    expected = np.bincount(np.clip(np.floor(s1), 0, 9).astype(int), minlength=10)
    assert list(hist["counts"]["aesthetic"].values()) == expected.tolist()
    assert hist["laion"]["aesthetic"].startswith("{'0-1': '")


def test_checks_pass_and_record_predictor_identity(built):
    instance, _, _, _ = built
    for check in [*CHECKS, *POP_CHECKS]:
        for key in check.check_keys:
            if key.asset_key.to_user_string() in NOT_IN_DEMO:
                continue
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
            assert record is not None and record.event.dagster_event.asset_check_evaluation_data.passed, key
    scores = instance.get_latest_materialization_event(dg.AssetKey("aesthetic_scores"))
    identity = scores.asset_materialization.metadata["predictor/AESTHETIC_SCORE"].value
    assert identity == str(load_predictor(V2_WEIGHTS).identity)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def materialize(selection, storage, instance, key=None, predictors=None):
    return dg.materialize(
        [*ASSETS, *CHECKS],
        selection=selection,
        partition_key=key,
        instance=instance,
        resources={**default_resources(), "storage": storage, "predictors": predictors or PredictorsResource()},
        raise_on_error=False,
    )


def failure_text(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


@pytest.fixture
def good_run(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    return instance, storage, small_sample


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan", r"img_emb_1\.npy: row 5 has NaN or Inf values"),
        ("zero", r"img_emb_1\.npy: row 5 is a zero vector"),
        ("width", r"img_emb_1\.npy: embedding width is 512, expected 768"),
        ("rows", r"img_emb_1\.npy: 399 embedding rows but .*metadata_1\.parquet has 400 rows"),
        ("column", r"metadata_1\.parquet: missing column\(s\) \['similarity'\]"),
    ],
)
def test_bad_part_fails_with_its_name_and_damages_nothing(good_run, damage, message):
    instance, storage, source = good_run
    part = discover_parts(source)[1]
    emb = np.load(part.embeddings)
    if damage == "nan":
        emb[5, 0] = np.nan
    elif damage == "zero":
        emb[5] = 0
    elif damage == "width":
        emb = emb[:, :512]
    elif damage == "rows":
        emb = emb[:-1]
    np.save(part.embeddings, emb)
    if damage == "column":
        pl.read_parquet(part.metadata).drop("similarity").write_parquet(part.metadata)
    before = {p: sha(p) for p in storage.layout.root.rglob("*") if p.is_file()}
    result = materialize(["clip_embeddings", "aesthetic_scores"], storage, instance, key=part.key)
    assert not result.success
    text = failure_text(result)
    assert re.search(message, text), text
    assert {p: sha(p) for p in storage.layout.root.rglob("*") if p.is_file()} == before


def test_wrong_weights_fail_by_name_and_keep_scores(good_run, tmp_path):
    instance, storage, _ = good_run
    bad = tmp_path / "b32_linear.pth"
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, bad)
    scores = storage.layout.shard_scores("00000")
    before = sha(scores)
    result = materialize(["aesthetic_scores"], storage, instance, key="00000",
                         predictors=PredictorsResource(v1_weights=str(bad)))  # fmt: skip
    assert not result.success
    assert "b32_linear.pth: weight has shape (1, 512), expected (1, 768)" in failure_text(result)
    assert sha(scores) == before


def test_missing_upstream_says_what_to_run(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "empty"))
    result = materialize(["subset_6_5plus"], storage, instance)
    assert not result.success
    assert "aesthetic_tags is not materialized yet" in failure_text(result)
    # A custom data root: the hint is the command for this setup, not `make demo` (which builds data/out).
    assert "make demo" not in failure_text(result)
    assert f"laion-assets demo --source {small_sample} --data-root {tmp_path / 'empty'}" in failure_text(result)
    register_shards(instance, small_sample)
    result = materialize(["aesthetic_tags"], storage, instance)
    text = failure_text(result)
    assert "aesthetic_tags stopped: 3 registered shard(s) cannot be released (00000, 00001, 00002)" in text
    assert "00000: clip_embeddings is not materialized" in text
    assert "--partition 00000` for each" in text and 'exclude_shards: ["00000", "00001", "00002"]' in text


# pyarrow's names for the parquet types, read apart from the polars schema the assets publish.
ARROW_TYPES = {"string": "String", "large_string": "String", "int64": "Int64", "float": "Float32", "double": "Float64"}


def latest_metadata(instance, asset, partition=None) -> dict:
    """The metadata of the latest materialization of ``asset`` (of one partition when given)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return dict(records[0].asset_materialization.metadata)


def assert_schema_and_preview(meta: dict, files: list) -> None:
    """``dagster/column_schema`` names every column of each file with its type; ``preview`` is the first rows."""
    published = [(c.name, c.type) for c in meta["dagster/column_schema"].schema.columns]
    for path in files:
        written = pq.read_schema(path)
        assert published == [(f.name, ARROW_TYPES[str(f.type)]) for f in written], path
    preview = meta["preview"]
    assert [c.name for c in preview.schema.columns] == [name for name, _ in published]
    first = pl.read_parquet(files[0])
    assert 0 < len(preview.records) == min(PREVIEW_ROWS, first.height)
    for record, row in zip(preview.records, first.iter_rows(named=True), strict=False):
        for name, value in row.items():
            cell = record.data[name]
            if isinstance(value, str):
                assert value.startswith(cell.removesuffix("…")) and len(cell) <= 80, (name, cell)
            elif isinstance(value, float):
                assert cell == pytest.approx(value, abs=5e-5), name
            else:
                assert cell in (value, str(value)), name


def test_parquet_assets_publish_the_written_column_schema_and_a_preview(built):
    instance, storage, _, _ = built
    layout = storage.layout
    for key in ("00000", "00002"):
        assert_schema_and_preview(latest_metadata(instance, "clip_embeddings", key), [layout.shard_metadata(key)])
        assert_schema_and_preview(latest_metadata(instance, "aesthetic_scores", key), [layout.shard_scores(key)])
    tags = sorted(layout.tags_dir.glob("part-*.parquet"))
    assert len(tags) == 3
    assert_schema_and_preview(latest_metadata(instance, "aesthetic_tags"), tags)
    for name in [rule.asset_name for rule in (*V2_SUBSETS, *V1_SUBSETS)]:
        meta = latest_metadata(instance, name)
        assert_schema_and_preview(meta, [layout.subset_dir(name) / "part-00000.parquet"])
        expected = V2_SUBSET_COLUMNS if name.startswith("subset_") else V1_SUBSET_COLUMNS
        assert [c.name for c in meta["dagster/column_schema"].schema.columns] == list(expected)
        assert 0 < len(meta["top_rows"].records) <= 10


def _floats(value):
    if isinstance(value, dg.FloatMetadataValue):
        yield value.value
    elif isinstance(value, dg.JsonMetadataValue):
        yield from _floats(value.data)
    elif isinstance(value, dg.TableMetadataValue):
        for record in value.records:
            yield from _floats(record.data)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)
    elif isinstance(value, float):
        yield value


def test_metadata_floats_are_rounded(built):
    instance, storage, _, _ = built
    seen = 0
    for asset in ALL_ASSETS - NOT_IN_DEMO:
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            for key, value in record.asset_materialization.metadata.items():
                for number in _floats(value):
                    assert number == round_float(number), (asset, key, number)
                    seen += 1
    assert seen > 100
    # The shard's mean V1 score has many digits; the UI shows four decimals of it.
    exact = pl.read_parquet(storage.layout.shard_scores("00001"))["aesthetic"].cast(pl.Float64).mean()
    shown = latest_metadata(instance, "aesthetic_scores", "00001")["aesthetic/mean"].value
    assert shown != exact and shown == pytest.approx(exact, abs=5e-5) and shown == round(shown, 4)
