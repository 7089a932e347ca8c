"""``aesthetic_tags`` on a remote data root: a rebuild writes and uploads only the parts whose shard changed."""

from pathlib import Path

import dagster as dg
import pytest
from fsspec import AbstractFileSystem
from upath import UPath

from laion_assets.definitions import ASSETS, default_resources
from laion_assets.defs.release.config import ReleaseResource
from laion_assets.defs.resources import StorageResource
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.selection.tags import TABLE_FILE, recorded_ids, tag_files


def tags_run(instance: dg.DagsterInstance, storage: StorageResource, **release: object) -> dict:
    """Materialize ``aesthetic_tags`` alone and return its metadata."""
    resources = {**default_resources(), "storage": storage, "release_config": ReleaseResource(**release)}
    result = dg.materialize(ASSETS, selection=["aesthetic_tags"], instance=instance, resources=resources)
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def transfers(fs: AbstractFileSystem, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every upload and download the remote filesystem itself makes (its real ``put_file``/``get_file``, counted)."""
    moved: list[str] = []
    real_put, real_get = fs.put_file, fs.get_file

    def put(lpath: str, rpath: str, **kw: object) -> object:
        moved.append(f"up {rpath.split('/root/', 1)[1]}")
        return real_put(lpath, rpath, **kw)

    def get(rpath: str, lpath: str, **kw: object) -> object:
        moved.append(f"down {rpath.split('/root/', 1)[1]}")
        return real_get(rpath, lpath, **kw)

    monkeypatch.setattr(fs, "put_file", put)
    monkeypatch.setattr(fs, "get_file", get)
    return moved


def test_a_rebuild_uploads_only_what_changed(
    small_sample_session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"local://{tmp_path / 'root'}"
    a = StorageResource(source=str(small_sample_session), data_root=root, staging=str(tmp_path / "staging-a"))
    b = StorageResource(source=str(small_sample_session), data_root=root, staging=str(tmp_path / "staging-b"))
    instance = dg.DagsterInstance.ephemeral()
    resources = {**default_resources(), "storage": a}
    register_shards(instance, a.shard_source)
    for key in ("00000", "00001", "00002"):
        selection = ["clip_embeddings", "aesthetic_scores"]
        assert dg.materialize(ASSETS, selection=selection, partition_key=key, instance=instance, resources=resources)
    first = tags_run(instance, a)
    assert (first["parts_rewritten"], first["parts_kept"]) == (3, 0)
    remote_tags = tmp_path / "root" / "tags"
    assert sorted(p.name for p in remote_tags.iterdir()) == [TABLE_FILE, *(f"part-0000{i}.parquet" for i in range(3))]

    moved = transfers(UPath(root).fs, monkeypatch)

    # Shard 00001's assets materialized again from unchanged inputs: new files, same bytes; no part is rewritten.
    assert dg.materialize(ASSETS, selection=["clip_embeddings", "aesthetic_scores"], partition_key="00001",
                          instance=instance, resources=resources)  # fmt: skip
    moved.clear()
    again = tags_run(instance, a)
    assert (again["parts_rewritten"], again["parts_kept"], again["table_id"]) == (0, 3, first["table_id"])
    assert [m for m in moved if m.startswith("up")] == [f"up tags/{TABLE_FILE}"]

    # Another machine, with an empty working copy: it pulls the record and the parts it keeps, and uploads the record.
    moved.clear()
    on_b = tags_run(instance, b)
    assert (on_b["parts_rewritten"], on_b["parts_kept"]) == (0, 3)
    assert [m for m in moved if "tags" in m] == [
        f"down tags/{TABLE_FILE}",
        *(f"down tags/part-0000{i}.parquet" for i in range(3)),
        f"up tags/{TABLE_FILE}",
    ]

    # A shard left out: its part goes (on the remote too), the others stay as uploaded.
    kept = {p.name: p.stat().st_mtime_ns for p in remote_tags.glob("part-*.parquet")}
    moved.clear()
    fewer = tags_run(instance, a, exclude_shards=["00002"])
    assert (fewer["parts_rewritten"], fewer["parts_kept"], fewer["parts_removed"]) == (0, 2, 1)
    assert [m for m in moved if m.startswith("up")] == [f"up tags/{TABLE_FILE}"]
    assert {p.name: p.stat().st_mtime_ns for p in remote_tags.glob("part-*.parquet")} == {
        k: v for k, v in kept.items() if k != "part-00002.parquet"
    }
    assert recorded_ids(tag_files(b.layout)) != fewer["table_id"]  # b's working copy is the previous table
    b.pull(b.layout.tags_dir)
    assert recorded_ids(tag_files(b.layout)) == fewer["table_id"]
