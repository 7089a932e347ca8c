"""``release_config.laion_pop``: the release asset carries the LAION-POP table, pulled from a remote data root."""

from pathlib import Path

import dagster as dg

from laion_assets.defs.resources import PredictorsResource, ReleaseResource, StorageResource
from laion_assets.demos.local import run_graph
from laion_assets.release.manifest import check_files, load_manifest
from laion_assets_tests.defs.release.test_release_gating import failures, run
from laion_assets_tests.pop_table import write_pop_table


def test_laion_pop_is_off_by_default_required_when_on_and_pulled_from_a_remote_data_root(
    small_sample_session: Path, tmp_path: Path
) -> None:
    assert ReleaseResource().laion_pop is False
    remote = tmp_path / "remote"
    storage = StorageResource(
        source=str(small_sample_session), data_root=f"local://{remote}", staging=str(tmp_path / "staging")
    )
    instance = dg.DagsterInstance.ephemeral()
    run_graph(instance, storage, PredictorsResource())
    assert not any(p.name == "laion-pop" for p in (remote / "releases").rglob("*"))
    # Asked for, but pop_captions has not written the table: the release stops naming the folder and the asset.
    result = run(["release"], storage, instance, release_config=ReleaseResource(laion_pop=True))
    assert not result.success
    assert f"{storage.layout.pop_table_dir / 'settings.json'} is missing): materialize `pop_captions`" in failures(
        result
    )
    assert sorted(p.name for p in (remote / "releases").iterdir()) == ["v0.1.0"]
    # Written on the remote data root only (another machine ran pop_captions): pulled, then released.
    write_pop_table(remote / "pop" / "table")
    result = run(["release"], storage, instance, release_config=ReleaseResource(laion_pop=True))
    assert result.success, failures(result)
    folder = remote / "releases" / "v0.1.1"
    manifest = load_manifest(folder)
    assert not check_files(folder, manifest) and manifest["tables"][0]["config"] == "laion_pop"
    assert (folder / "data/laion-pop/part-00001.parquet").read_bytes() == (
        remote / "pop/table/part-00001.parquet"
    ).read_bytes()
    rows = instance.get_latest_materialization_event(dg.AssetKey("release")).asset_materialization.metadata["rows"]
    assert rows.value["data/laion-pop/part-00000.parquet"] == 16 and "data/laion-pop/settings.json" not in rows.value
