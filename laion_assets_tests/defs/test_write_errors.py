"""A disk that fills up (or any OS error while writing) names the asset and the file, and replaces nothing."""

import errno
import shutil
import subprocess

import dagster as dg
import pyarrow.parquet as pq
import pytest

from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.demos.local import run_graph
from laion_assets.selection.tags import TABLE_FILE
from laion_assets_tests.release_helpers import tree_hashes


def failure(result) -> str:
    return "\n".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_an_os_error_while_writing_names_the_asset_and_the_file(small_sample, tmp_path, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample), data_root=str(tmp_path / "out"))
    run_graph(instance, storage, PredictorsResource())
    # Unchanged parts are carried over, not written: without its record (as an older laion-assets left a table) the
    # table is rebuilt whole, so the rebuild writes every part.
    (storage.layout.tags_dir / TABLE_FILE).unlink()
    before = tree_hashes(storage.layout.tags_dir)
    real = pq.write_table

    def disk_full(table, where, **kwargs):
        if "part-00001" in str(where):  # the second part: the first is already in the temporary folder
            real(table.slice(0, 10), where, **kwargs)  # a partial file, as a full disk leaves it
            raise OSError(errno.ENOSPC, "Error writing bytes to file")  # pyarrow's words, without a file name
        return real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", disk_full)
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=["aesthetic_tags"],
        instance=instance,
        resources={**default_resources(), "storage": storage},
        raise_on_error=False,
    )
    assert not result.success
    text = failure(result)
    expected = (
        f"aesthetic_tags: {storage.layout.tags_dir / 'part-00001.parquet'}: writing failed: No space left on device"
    )
    assert expected in text and "nothing was replaced" in text
    assert tree_hashes(storage.layout.tags_dir) == before  # the previous table is whole
    assert not [p for p in storage.layout.root.rglob("*") if p.name.endswith(".tmp")]


def _mount_tmpfs(target, size: str) -> bool:
    target.mkdir()
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def test_a_full_tmpfs_names_the_step_and_the_file(small_sample, tmp_path):
    """The real thing where the machine allows mounting a small tmpfs (root in a container); skipped elsewhere."""
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected error above covers the same path")
    try:
        storage = StorageResource(source=str(small_sample), data_root=str(disk / "out"))
        with pytest.raises(SystemExit) as stopped:
            run_graph(dg.DagsterInstance.ephemeral(), storage, PredictorsResource())
        text = str(stopped.value)
        assert "writing failed: No space left on device" in text, text
        assert f"{disk / 'out'}/" in text  # the file is named
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
    finally:
        # Lazy: a thread of the failed run may still hold a file there; a busy plain umount would leave it mounted.
        subprocess.run(["umount", "-l", str(disk)], check=False)
