import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from laion_assets.definitions import ASSETS, CHECKS, defs
from laion_assets.defs.resources import (
    HfResource,
    PredictorsResource,
    ReleaseResource,
    StorageResource,
    WatermarkResource,
)
from laion_assets.demos.local import run_graph
from laion_assets.release.kv import OnDiskKV
from laion_assets.release.manifest import check_files, load_manifest
from laion_assets.release.verify import verify_release
from laion_assets_tests.hub_server import FakeHub
from laion_assets_tests.release_helpers import build, tree_hashes

TOKEN = "hf_dagster_test_token"


@pytest.fixture(scope="module")
def graph(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole local graph materialized once on an ephemeral instance."""
    root = tmp_path_factory.mktemp("graph")
    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(source=str(small_sample_session), data_root=str(root / "out"))
    counts = run_graph(instance, storage, PredictorsResource())
    return instance, storage, counts


def _metadata(instance: dg.DagsterInstance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None, key
    return event.asset_materialization.metadata


def test_graph_builds_kv_viz_and_release(graph, small_sample_session: Path, tmp_path: Path) -> None:
    instance, storage, counts = graph
    assert {"aesthetic_kv", "aesthetic_viz", "release"} <= set(counts) and "hf_release" not in counts
    layout = storage.layout
    folder = layout.release_dir("v0.1.0")
    meta = _metadata(instance, "release")
    assert meta["path"].value == str(folder) and meta["version"].value == "v0.1.0"
    assert meta["files"].value == 23
    viz = _metadata(instance, "aesthetic_viz")
    assert viz["index"].value == (layout.viz_dir / "index.html").as_uri() and (layout.viz_dir / "index.html").is_file()
    kv_meta = _metadata(instance, "aesthetic_kv")
    assert kv_meta["aesthetic.kv/records"].value == len(OnDiskKV(layout.kv_dir / "aesthetic.kv"))
    # The assets write exactly what the Dagster-free rebuild writes, and the release verifies.
    _, pure = build(small_sample_session, tmp_path / "pure")
    assert tree_hashes(folder) == tree_hashes(pure.path)
    assert verify_release(folder, small_sample_session).ok


def test_release_check_catches_tampering(graph) -> None:
    instance, storage, _ = graph
    folder = storage.layout.release_dir("v0.1.0")
    resources = {"storage": storage, "release_config": ReleaseResource(), "watermark": WatermarkResource()}
    checks = [c for c in CHECKS if "release_matches_manifest" in str(c.check_keys)]
    result = dg.materialize(
        [*checks], instance=instance, resources=resources, selection=dg.AssetSelection.all_asset_checks()
    )
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.passed
    card = folder / "README.md"
    original = card.read_bytes()
    try:
        card.write_bytes(original + b"\n")
        result = dg.materialize(
            [*checks],
            instance=instance,
            resources=resources,
            selection=dg.AssetSelection.all_asset_checks(),
            raise_on_error=False,
        )
        evaluation = result.get_asset_check_evaluations()[0]
        assert not evaluation.passed and "README.md" in evaluation.metadata["problems"].value
        assert not result.success  # the check is blocking: hf_release downstream would not run
    finally:
        card.write_bytes(original)


def test_hf_release_pushes_once(graph, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", f"{TOKEN}\n")  # bound as hf.token below; sent stripped
    instance, storage, _ = graph
    folder = storage.layout.release_dir("v0.1.0")
    with FakeHub() as hub:

        def push(**config: object) -> dict:
            hf = HfResource(repo_id="laion/demo", token=dg.EnvVar("HF_TOKEN"), endpoint=hub.endpoint, **config)
            resources = {
                "storage": storage,
                "predictors": PredictorsResource(),
                "release_config": ReleaseResource(),
                "watermark": WatermarkResource(),
                "hf": hf,
            }
            dg.materialize([*ASSETS], selection=["hf_release"], instance=instance, resources=resources)
            return _metadata(instance, "hf_release")

        dry = push(dry_run=True)
        assert dry["dry_run"].value and not dry["committed"].value and "laion/demo" not in hub.repos
        first = push()
        repo = hub.repos["laion/demo"]
        assert first["committed"].value and first["tagged"].value and len(repo.commits) == 1
        manifest = load_manifest(folder)
        assert sorted(repo.files) == sorted([*manifest["files"], "manifest.json"])
        assert all(repo.files[rel] == (folder / rel).read_bytes() for rel in repo.files)
        assert set(hub.tokens) == {TOKEN}
        # The card pushed (and the one in the release folder, which the manifest records) names the repo.
        assert b'load_dataset("laion/demo", "improved_aesthetics_6.5plus"' in repo.files["README.md"]
        assert manifest["hub_repo"] == "laion/demo" and not check_files(folder, manifest)
        second = push()
        assert not second["committed"].value and second["files_unchanged"].value == 23 and len(repo.commits) == 1
        assert TOKEN not in json.dumps({k: str(v.value) for k, v in second.items()})


def test_hf_release_sends_the_renamed_card_to_a_remote_data_root(
    graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a remote data root, the card and manifest a push rewrote to name the repo go up to the data root too."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _, local, _ = graph
    remote = tmp_path / "remote"
    shutil.copytree(local.layout.releases_dir, remote / "releases")
    storage = StorageResource(source=local.source, data_root=f"local://{remote}", staging=str(tmp_path / "staging"))
    with FakeHub() as hub, dg.instance_for_test() as instance:
        hf = HfResource(repo_id="laion/remote", endpoint=hub.endpoint)
        resources = {
            "storage": storage,
            "predictors": PredictorsResource(),
            "release_config": ReleaseResource(),
            "watermark": WatermarkResource(),
        }
        dg.materialize([*ASSETS], selection=["hf_release"], instance=instance, resources={**resources, "hf": hf})
        pushed = hub.repos["laion/remote"].files
    folder = remote / "releases" / "v0.1.0"
    assert load_manifest(folder)["hub_repo"] == "laion/remote" and not check_files(folder, load_manifest(folder))
    assert (folder / "README.md").read_bytes() == pushed["README.md"] and b'"laion/remote"' in pushed["README.md"]


def test_hf_release_without_repo_fails_clearly(graph) -> None:
    instance, storage, _ = graph
    resources = {
        "storage": storage,
        "predictors": PredictorsResource(),
        "release_config": ReleaseResource(),
        "watermark": WatermarkResource(),
        "hf": HfResource(),
    }
    with pytest.raises(dg.Failure, match="hf.repo_id is not set"):
        dg.materialize([*ASSETS], selection=["hf_release"], instance=instance, resources=resources)


def test_definitions_load_with_publish_job() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert "hf_release" not in {
        k.to_user_string() for k in repo.get_job("release_job").asset_layer.executable_asset_keys
    }
    assert {k.to_user_string() for k in repo.get_job("publish_job").asset_layer.executable_asset_keys} == {"hf_release"}
