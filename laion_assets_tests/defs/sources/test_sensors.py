"""Acceptance 2 (sensor): new parts are registered and run once whole and settled; half-written parts are not."""

import json
import shutil

import dagster as dg
import pytest

from laion_assets.definitions import ASSETS, URL_ASSETS, default_resources
from laion_assets.defs.jobs import shard_job
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.sensors import new_shards_sensor


def copy_part(src, dst, number, what=("img_emb", "metadata")):
    for folder in what:
        name = f"img_emb_{number}.npy" if folder == "img_emb" else f"metadata_{number}.parquet"
        (dst / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / folder / name, dst / folder / name)


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class Ticker:
    """Evaluates the sensor on a real instance in the daemon's order: cursor carried, partitions added, runs checked."""

    def __init__(self, instance, source, data_root="/nonexistent-not-used"):
        self.instance, self.cursor = instance, None
        self.storage = StorageResource(source=str(source), data_root=str(data_root))
        resources = {**default_resources(), "storage": self.storage, "predictors": PredictorsResource()}
        self.defs = dg.Definitions(
            assets=[*URL_ASSETS, *ASSETS], jobs=[shard_job], sensors=[new_shards_sensor], resources=resources
        )

    def tick(self):
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs, resources={"storage": self.storage}
        )
        result = new_shards_sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            assert request.partitions_def_name == "shards"
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        known = set(self.instance.get_dynamic_partitions("shards"))
        assert all(r.partition_key in known for r in result.run_requests or [])
        return result


def requested(data):
    return sorted(r.partition_key for r in data.run_requests or [])


@pytest.fixture
def watched(tmp_path):
    folder = tmp_path / "watched"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    return folder


def test_complete_part_is_registered_after_it_settles(small_sample_session, watched):
    copy_part(small_sample_session, watched, 0)
    with dg.instance_for_test() as instance:
        ticker = Ticker(instance, watched, watched.parent / "out")
        first = ticker.tick()
        assert requested(first) == [] and "1 part(s) still being written or settling" in first.skip_reason.skip_message
        assert instance.get_dynamic_partitions("shards") == []
        second = ticker.tick()
        assert requested(second) == ["00000"]
        assert second.run_requests[0].run_key == "shard-00000"
        assert new_shards_sensor.job_name == shard_job.name
        assert instance.get_dynamic_partitions("shards") == ["00000"]
        # The requested run indexes and scores the new shard.
        job = ticker.defs.resolve_job_def(shard_job.name)
        run = job.execute_in_process(instance=instance, partition_key="00000")
        assert run.success
        assert (ticker.storage.layout.shard_scores("00000")).exists()
        third = ticker.tick()
        assert requested(third) == [] and third.skip_reason.skip_message.startswith("no new complete parts")


def test_half_written_parts_are_not_picked_up(small_sample_session, watched):
    copy_part(small_sample_session, watched, 0)
    copy_part(small_sample_session, watched, 1)
    copy_part(small_sample_session, watched, 2, what=("img_emb",))  # its metadata is not there yet
    truncate(watched / "img_emb" / "img_emb_1.npy", 0.5)  # embeddings still being copied
    with dg.instance_for_test() as instance:
        ticker = Ticker(instance, watched)
        ticker.tick()
        assert requested(ticker.tick()) == ["00000"]
        for _ in range(2):  # however long we wait, a half-written part is never ready
            data = ticker.tick()
            assert requested(data) == [] and "2 part(s) still being written" in data.skip_reason.skip_message
        # The metadata of part 2 arrives, but only half of its parquet so far (no footer).
        copy_part(small_sample_session, watched, 2, what=("metadata",))
        truncate(watched / "metadata" / "metadata_2.parquet", 0.6)
        assert requested(ticker.tick()) == [] and requested(ticker.tick()) == []
        # Both copies finish; each is picked up one tick after it is seen whole and unchanged.
        copy_part(small_sample_session, watched, 1)
        copy_part(small_sample_session, watched, 2)
        assert requested(ticker.tick()) == []
        assert json.loads(ticker.cursor).keys() == {"00001", "00002"}
        assert requested(ticker.tick()) == ["00001", "00002"]
        assert sorted(instance.get_dynamic_partitions("shards")) == ["00000", "00001", "00002"]


def test_a_part_that_changes_between_ticks_waits(small_sample_session, watched):
    copy_part(small_sample_session, watched, 0)
    with dg.instance_for_test() as instance:
        ticker = Ticker(instance, watched)
        ticker.tick()
        # Rewritten in between (a copy restarted): same content, new mtime, so it must settle again.
        copy_part(small_sample_session, watched, 0, what=("metadata",))
        (watched / "metadata" / "metadata_0.parquet").touch()
        assert requested(ticker.tick()) == []
        assert requested(ticker.tick()) == ["00000"]


def test_sensor_watches_an_fsspec_url(small_sample_session, watched):
    copy_part(small_sample_session, watched, 0)
    with dg.instance_for_test() as instance:
        ticker = Ticker(instance, f"file://{watched}")
        ticker.tick()
        assert requested(ticker.tick()) == ["00000"]


def test_sensor_on_a_missing_folder_skips_naming_it(tmp_path):
    with dg.instance_for_test() as instance:
        data = Ticker(instance, f"file://{tmp_path / 'absent'}").tick()
        assert requested(data) == []
        assert data.skip_reason.skip_message == f"no new complete parts in file://{tmp_path / 'absent'}"
