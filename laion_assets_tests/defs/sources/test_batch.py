"""Many shard partitions in one run: per-partition materializations, a failed shard that costs no other, resume.

The runs are in process (``shard_job`` over a partition range, as a single-run backfill launches it) on a tiny
generated source; ``test_cli_range.py`` runs the README's ``--partition-range`` command itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from laion_assets.definitions import PredictorsResource, StorageResource, build_defs, register_shards, shard_job
from laion_assets.defs.sources.partitions import shard_backfill_policy
from laion_assets.demos.sample import SampleSpec, write_sample

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
STEPS = ("clip_embeddings", "aesthetic_scores")
PARTS = 6


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source of 6 parts x 4 rows (768-d, LAION's real heads score it), built once; copied by each test."""
    out = tmp_path_factory.mktemp("batch") / "source"
    write_sample(out, SampleSpec(parts=PARTS, rows_per_part=4, seed=3))
    return out


@pytest.fixture
def setup(tiny_source: Path, tmp_path: Path) -> tuple[Path, StorageResource, dg.DagsterInstance]:
    source = tmp_path / "source"
    shutil.copytree(tiny_source, source)
    storage = StorageResource(source=str(source), data_root=str(tmp_path / "out"), workers=3)
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, storage.shard_source)
    return source, storage, instance


def run_range(
    storage: StorageResource, instance: dg.DagsterInstance, first: str, last: str, config: dict | None = None
) -> dg.ExecuteInProcessResult:
    """One run of the shard steps over ``first...last``, as a single-run backfill (or the CLI's range) launches it."""
    job = build_defs({"storage": storage, "predictors": PredictorsResource()}).resolve_job_def(shard_job.name)
    return job.execute_in_process(
        instance=instance,
        tags={RANGE_START: first, RANGE_END: last},
        asset_selection=[dg.AssetKey(step) for step in STEPS],
        raise_on_error=False,
        run_config=config or {},
    )


def materializations(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, step: str
) -> dict[str, dg.AssetMaterialization]:
    """The run's materializations of ``step`` by partition, as its event log (the UI) holds them."""
    found = {}
    for entry in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.dagster_event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey(step):
            assert mat.partition not in found, f"{step} {mat.partition} materialized twice in one run"
            found[mat.partition] = mat
    return found


def mtimes(storage: StorageResource, name: str) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted(storage.layout.root.glob(f"shards/*/{name}"))}


def test_the_backfill_policy_is_one_run_unless_configured():
    assert shard_backfill_policy("") == dg.BackfillPolicy.single_run() == shard_backfill_policy("0")
    assert shard_backfill_policy(" 25 ") == dg.BackfillPolicy.multi_run(25)
    with pytest.raises(ValueError, match=r"LAION_ASSETS_SHARDS_PER_RUN='many': expected a number"):
        shard_backfill_policy("many")
    defs = build_defs()
    for name in ("images", "image_embeddings", *STEPS):
        assert defs.resolve_assets_def(name).backfill_policy == dg.BackfillPolicy.single_run()


def test_one_run_materializes_each_partition_with_its_own_metadata(setup):
    _, storage, instance = setup
    result = run_range(storage, instance, "00000", f"{PARTS - 1:05d}")
    assert result.success
    assert len(instance.get_runs()) == 1
    keys = [f"{k:05d}" for k in range(PARTS)]
    for step in STEPS:
        found = materializations(instance, result, step)
        assert sorted(found) == keys
        for key, mat in found.items():
            assert mat.metadata["dagster/row_count"].value == 4
            assert mat.metadata["path"].value.endswith(
                f"shards/{key}/{'scores' if step == 'aesthetic_scores' else 'metadata'}.parquet"
            )
            assert mat.metadata["shards_in_run"].value == PARTS
            # The run's first shard shows the written table's schema and first rows; the others do not repeat them.
            shown = {"dagster/column_schema", "preview"} & set(mat.metadata)
            assert shown == ({"dagster/column_schema", "preview"} if key == keys[0] else set()), (step, key)
    scores = materializations(instance, result, "aesthetic_scores")
    # Each partition carries its own scores' summary and, as data version, the predictors that made them.
    assert len({m.metadata["aesthetic/mean"].value for m in scores.values()}) == PARTS
    versions = {m.tags["dagster/data_version"] for m in scores.values()}
    assert len(versions) == 1 and next(iter(versions)).startswith("AESTHETIC_SCORE=v2-mlp-linear@")
    assert all(m.metadata["predictor/aesthetic"].value.startswith("v1-linear@sha256:") for m in scores.values())
    status = instance.get_status_by_partition(
        dg.AssetKey("aesthetic_scores"), keys, build_defs().resolve_assets_def("aesthetic_scores").partitions_def
    )
    assert set(status.values()) == {AssetPartitionStatus.MATERIALIZED}


def test_a_failed_shard_costs_no_other_and_a_rerun_redoes_only_what_is_not_done(setup):
    source, storage, instance = setup
    bad = source / "img_emb" / "img_emb_3.npy"
    np.save(bad, np.full((4, 768), np.nan, dtype=np.float16))
    last = f"{PARTS - 1:05d}"
    failed = run_range(storage, instance, "00000", last)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "clip_embeddings: 1 of 6 shard(s) failed (00003). 00003: " in message and str(bad) in message
    assert "The 5 other shard(s) are written and recorded" in message
    recorded = materializations(instance, failed, "clip_embeddings")
    assert sorted(recorded) == ["00000", "00001", "00002", "00004", "00005"]
    assert recorded["00001"].metadata["dagster/row_count"].value == 4
    assert not materializations(instance, failed, "aesthetic_scores")  # its upstream step failed: not run
    definition = build_defs().resolve_assets_def("clip_embeddings").partitions_def
    status = instance.get_status_by_partition(
        dg.AssetKey("clip_embeddings"), [f"{k:05d}" for k in range(PARTS)], definition
    )
    assert status["00003"] == AssetPartitionStatus.FAILED
    assert {status[k] for k in status if k != "00003"} == {AssetPartitionStatus.MATERIALIZED}

    # Fixed, the same range again: only shard 00003 is validated again; the others' files are kept as they were.
    write_sample(source.parent / "fresh", SampleSpec(parts=PARTS, rows_per_part=4, seed=3))
    shutil.copy(source.parent / "fresh" / "img_emb" / "img_emb_3.npy", bad)
    indexed = mtimes(storage, "metadata.parquet")
    resumed = run_range(storage, instance, "00000", last)
    assert resumed.success
    after = mtimes(storage, "metadata.parquet")
    assert [k for k in after if after[k] != indexed.get(k)] == ["00003"]
    up_to_date = {
        k for k, m in materializations(instance, resumed, "clip_embeddings").items() if "up_to_date" in m.metadata
    }
    assert up_to_date == {"00000", "00001", "00002", "00004", "00005"}
    assert len(materializations(instance, resumed, "aesthetic_scores")) == PARTS  # none had scores yet

    # Everything done: a third run rewrites nothing; `redo: true` does every shard again.
    scored = mtimes(storage, "scores.parquet")
    again = run_range(storage, instance, "00000", last)
    assert (
        again.success and mtimes(storage, "scores.parquet") == scored and mtimes(storage, "metadata.parquet") == after
    )
    assert all("up_to_date" in m.metadata for m in materializations(instance, again, "aesthetic_scores").values())
    redo = {"ops": {step: {"config": {"redo": True}} for step in STEPS}}
    assert run_range(storage, instance, "00001", "00002", redo).success
    redone = mtimes(storage, "scores.parquet")
    assert sorted(k for k in redone if redone[k] != scored[k]) == ["00001", "00002"]


def test_a_changed_part_is_validated_again_and_its_scores_redone(setup):
    source, storage, instance = setup
    assert run_range(storage, instance, "00000", "00002").success
    scored = mtimes(storage, "scores.parquet")
    meta = source / "metadata" / "metadata_1.parquet"
    meta.write_bytes(meta.read_bytes())  # rewritten with the same bytes: new mtime/ctime, same content
    result = run_range(storage, instance, "00000", "00002")
    assert result.success
    fresh = {
        k for k, m in materializations(instance, result, "clip_embeddings").items() if "up_to_date" not in m.metadata
    }
    assert fresh == {"00001"}
    # Same content, so the same validation id: the scores still hold and are kept.
    assert mtimes(storage, "scores.parquet") == scored
