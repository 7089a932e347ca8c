"""A green run means a correct release: incomplete subsets and unreleasable shards stop it, and nothing is overwritten.

Acceptance 2 and 3 of issue 9, and the explicit way out (``release_config.exclude_shards``).
"""

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

import laion_assets.defs.selection.subsets as subset_assets
from laion_assets.core.paths import V1_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.release.assets import hf_release
from laion_assets.defs.resources import PredictorsResource, ReleaseResource, StorageResource
from laion_assets.demos.local import run_graph
from laion_assets.release.manifest import load_manifest
from laion_assets.release.verify import verify_release
from laion_assets.selection.subsets import SUBSET_FILE
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.layout import discover_parts
from laion_assets_tests.laion_release import write_laion_release
from laion_assets_tests.release_helpers import tree_hashes

RELEASE_LEVEL = dg.AssetSelection.assets("safety_tags") | dg.AssetSelection.assets("aesthetic_tags").downstream()


def run(selection, storage, instance, key=None, release_config=None, predictors=None):
    resources = {**default_resources(), "storage": storage, "release_config": release_config or ReleaseResource()}
    return dg.materialize(
        [a for a in ASSETS if a is not hf_release] + CHECKS,
        selection=selection,
        partition_key=key,
        instance=instance,
        resources={**resources, "predictors": predictors or PredictorsResource()},
        raise_on_error=False,
    )


def failures(result) -> str:
    steps = [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    checks = [f"{e.check_name}: {e.description}" for e in result.get_asset_check_evaluations() if not e.passed]
    return "\n".join(steps + checks)


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_subset_that_lost_rows_fails_its_completeness_check_and_stops_the_release(
    small_sample, tmp_path, monkeypatch
):
    """A writer that drops rows (a fault injected into the subset writer) is caught by the recount."""
    real_write = subset_assets.write_rule

    def lossy_write(files, rule, folder, part_rows):
        # Parts of 50 rows: the rows go missing from a later part, which the checks must read too.
        parts = real_write(files, rule, folder, 50)
        if rule.asset_name == "subset_5plus":
            assert len(parts) > 2
            frame = pl.read_parquet(parts[1])
            frame.head(frame.height - 7).write_parquet(parts[1], compression="zstd")
        return parts

    monkeypatch.setattr(subset_assets, "write_rule", lossy_write)
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    with pytest.raises(SystemExit) as stopped:
        run_graph(dg.DagsterInstance.ephemeral(), storage, PredictorsResource())
    text = str(stopped.value)
    assert "subset_5plus:complete: subset_5plus has" in text and "7 row(s) meeting the rule are missing" in text
    # Soundness alone would not have seen it: every remaining row still meets the rule.
    assert "subset_5plus:meets_rule" not in text
    assert not storage.layout.releases_dir.exists()


def test_the_release_step_recounts_by_itself_when_run_alone(small_sample, tmp_path):
    """After a good release, a subset file damaged on disk: `release` alone (no checks in the run) refuses too."""
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    before = tree_hashes(storage.layout.releases_dir)
    path = storage.layout.subset_dir("laion_art") / SUBSET_FILE
    frame = pl.read_parquet(path)
    frame.head(frame.height - 1).write_parquet(path)
    result = run(["release"], storage, instance, release_config=ReleaseResource(version="v0.2.0"))
    assert not result.success
    assert "release stopped: laion_art has" in failures(result) and "rebuild the subsets" in failures(result)
    assert tree_hashes(storage.layout.releases_dir) == before  # no v0.2.0, v0.1.0 untouched
    # The right rows with other values in columns the score does not touch (URL, caption, safety) are caught too.
    frame.with_columns(pl.lit(0.97, pl.Float32).alias("punsafe")).write_parquet(path)
    tampered = storage.layout.subset_dir("subset_6_5plus") / SUBSET_FILE
    rows = pl.read_parquet(tampered)
    rows.with_columns(pl.lit("TAMPERED").alias("TEXT")).write_parquet(tampered)
    result = run(["release"], storage, instance)
    text = failures(result)
    assert f"laion_art has {frame.height} rows" in text and f"{frame.height} row(s) differ from the rule's row" in text
    assert f"subset_6_5plus has {rows.height} rows" in text
    assert tree_hashes(storage.layout.releases_dir) == before


def test_a_shard_refused_for_nan_after_a_good_release_stops_the_release_level_run(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    release = storage.layout.release_dir("v0.1.0")
    before = tree_hashes(storage.layout.releases_dir)
    # The source's part 1 is replaced by one with a NaN row; clip_embeddings refuses it.
    part = discover_parts(small_sample)[1]
    vectors = np.load(part.embeddings)
    vectors[5] = np.nan
    np.save(part.embeddings, vectors)
    refused = run(["clip_embeddings"], storage, instance, key=part.key)
    assert not refused.success and "row 5 has NaN or Inf values" in failures(refused)

    result = run(RELEASE_LEVEL, storage, instance)
    assert not result.success
    text = failures(result)
    assert f"aesthetic_tags stopped: 1 registered shard(s) cannot be released ({part.key})" in text
    assert "its latest clip_embeddings run failed" in text and "img_emb_1.npy changed since validation" in text
    assert f'exclude_shards: ["{part.key}"]' in text
    assert materialized(result) <= {"safety_tags"}  # (no separate safety table here) everything else was skipped
    assert tree_hashes(storage.layout.releases_dir) == before  # the earlier release is byte for byte as it was
    for npy in storage.layout.root.rglob("*.npy"):
        assert np.isfinite(np.load(npy)).all(), npy

    # A release-level step run on its own refuses as well (it reads the part's vectors).
    alone = run(["bucket_embeddings"], storage, instance)
    assert (
        not alone.success
        and f"bucket_embeddings stopped: 1 registered shard(s) cannot be released ({part.key})" in failures(alone)
    )

    # Leaving the shard out on purpose releases the rest as a new version that says so.
    leave_out = ReleaseResource(exclude_shards=[part.key])
    result = run(RELEASE_LEVEL, storage, instance, release_config=leave_out)
    assert result.success, failures(result)
    newer = storage.layout.release_dir("v0.1.1")
    manifest = load_manifest(newer)
    assert manifest["inputs"]["excluded_shards"] == [part.key]
    assert [p["key"] for p in manifest["inputs"]["parts"]] == ["00000", "00002"]
    assert manifest["changelog"]["previous"] == "v0.1.0"
    assert manifest["changelog"]["inputs"]["parts_removed"] == [part.key]
    assert f"Shards left out of this release by configuration**: `{part.key}`" in (newer / "README.md").read_text()
    assert tree_hashes(release) == {k.removeprefix("v0.1.0/"): v for k, v in before.items()}
    assert verify_release(newer, small_sample).ok


def test_exclude_shards_must_name_registered_shards(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    result = run(["aesthetic_tags"], storage, instance, release_config=ReleaseResource(exclude_shards=["00009"]))
    assert "release_config.exclude_shards names ['00009'], which are neither registered shards nor parts" in failures(
        result
    )


def test_a_part_of_the_source_that_is_not_registered_is_never_dropped_silently(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    instance.delete_dynamic_partition("shards", "00002")
    result = run(RELEASE_LEVEL, storage, instance)
    assert not result.success
    text = failures(result)
    assert f"1 part(s) of the source {small_sample} are not registered shards (00002)" in text
    assert 'exclude_shards: ["00002"]' in text
    leave_out = run(RELEASE_LEVEL, storage, instance, release_config=ReleaseResource(exclude_shards=["00002"]))
    assert leave_out.success, failures(leave_out)
    assert load_manifest(storage.layout.release_dir("v0.1.1"))["inputs"]["excluded_shards"] == ["00002"]


def test_scores_made_before_a_revalidation_are_not_released(small_sample, tmp_path: Path):
    """Re-validating a replaced part without re-scoring it: the gate names the stale scores."""
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    part = discover_parts(small_sample)[0]
    vectors = np.load(part.embeddings)
    np.save(part.embeddings, vectors[::-1].copy())  # same rows, other order: valid, but not what was scored
    assert run(["clip_embeddings"], storage, instance, key=part.key).success
    result = run(["aesthetic_tags"], storage, instance)
    assert "00000: its scores were made before clip_embeddings last validated it" in failures(result)
    assert run(["aesthetic_scores"], storage, instance, key=part.key).success
    assert run(["aesthetic_tags"], storage, instance).success


def test_a_safety_table_changed_since_it_was_indexed_stops_the_release(tmp_path):
    """Tags joined from an old index are never released with a manifest naming the new table."""
    inputs = write_laion_release(tmp_path / "in", rows_per_part=120)
    storage = StorageResource(source=str(inputs.embeddings), safety=str(inputs.joined), data_root=str(tmp_path / "out"))
    instance = dg.DagsterInstance.ephemeral()
    run_graph(instance, storage, PredictorsResource())
    before = tree_hashes(storage.layout.releases_dir)
    table = sorted(inputs.joined.glob("*.parquet"))[0]
    pl.read_parquet(table).with_columns(pl.col("punsafe") * 0.5).write_parquet(table)

    without_index = run(dg.AssetSelection.assets("aesthetic_tags").downstream(), storage, instance)
    assert not without_index.success
    assert f"the safety table changed since safety_tags indexed it ({table.name} changed (" in failures(without_index)
    alone = run(["release"], storage, instance)
    assert "the safety table changed since safety_tags indexed it" in failures(alone)
    assert tree_hashes(storage.layout.releases_dir) == before

    rebuilt = run(RELEASE_LEVEL, storage, instance)  # safety_tags first, then everything after it
    assert rebuilt.success, failures(rebuilt)
    manifest = load_manifest(storage.layout.release_dir("v0.1.1"))
    recorded = {f["path"]: f["sha256"] for f in manifest["inputs"]["safety"]["files"]}
    assert recorded[table.name] == hashlib.sha256(table.read_bytes()).hexdigest()
    assert manifest["changelog"]["inputs"]["safety"]


def test_outputs_computed_from_an_older_tags_table_stop_the_release(small_sample, tmp_path):
    """Re-scored tags and subsets, but KV, histogram and buckets left from before: the release names them."""
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    before = tree_hashes(storage.layout.releases_dir)
    state = torch.load(V1_WEIGHTS, map_location="cpu", weights_only=True)
    shifted = tmp_path / "v1-shifted.pth"
    torch.save({"weight": state["weight"], "bias": state["bias"] + 0.7}, shifted)
    predictors = PredictorsResource(v1_weights=str(shifted))
    for key in sorted(instance.get_dynamic_partitions("shards")):
        assert run(["aesthetic_scores"], storage, instance, key=key, predictors=predictors).success
    subsets = ["aesthetic_tags", *(r.asset_name for r in (*V2_SUBSETS, *V1_SUBSETS)), "release"]
    result = run(subsets, storage, instance, predictors=predictors)
    assert not result.success
    text = failures(result)
    assert "release stopped: aesthetic_kv (computed from another aesthetic_tags), score_histogram (computed" in text
    assert "bucket_embeddings (computed from another aesthetic_tags) not computed from the current" in text
    assert tree_hashes(storage.layout.releases_dir) == before


def test_the_demo_refuses_an_instance_holding_another_sources_shards(small_sample, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    run_graph(
        instance, StorageResource(source=str(small_sample), data_root=str(tmp_path / "out")), PredictorsResource()
    )
    other = tmp_path / "other"
    (other / "img_emb").mkdir(parents=True)
    (other / "metadata").mkdir()
    part = discover_parts(small_sample)[0]
    shutil.copy(part.embeddings, other / "img_emb" / part.embeddings.name)
    shutil.copy(part.metadata, other / "metadata" / part.metadata.name)
    before = tree_hashes(tmp_path / "out")
    with pytest.raises(SystemExit, match=r"registers shards this source .* does not have: 00001, 00002"):
        run_graph(instance, StorageResource(source=str(other), data_root=str(tmp_path / "out")), PredictorsResource())
    assert tree_hashes(tmp_path / "out") == before
