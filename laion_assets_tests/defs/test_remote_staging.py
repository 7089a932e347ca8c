"""One remote data root worked on from two machines (two staging folders): what one machine rebuilds, the other's
``release`` pulls, even where a rebuilt file kept its size (score arrays, KV stores, JSON)."""

from pathlib import Path

import dagster as dg
import pytest
import torch
from upath import UPath

from laion_assets.core.paths import V1_WEIGHTS
from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.partitions import register_shards

# What a release is built from: the tags and everything on the way to ``release`` (galleries and the Hub left out).
TAGS_AND_DOWNSTREAM = dg.AssetSelection.assets("safety_tags") | dg.AssetSelection.assets("aesthetic_tags").downstream()
RELEASE_INPUTS = TAGS_AND_DOWNSTREAM - dg.AssetSelection.assets("aesthetic_viz", "hf_release")


def build(instance: dg.DagsterInstance, storage: StorageResource, predictors: PredictorsResource) -> None:
    """Score every shard, then build the release-level outputs and the release, on one machine."""
    resources = {**default_resources(), "storage": storage, "predictors": predictors}
    register_shards(instance, storage.shard_source)
    for key in sorted(instance.get_dynamic_partitions("shards")):
        selection = ["clip_embeddings", "aesthetic_scores"]
        assert dg.materialize(ASSETS, selection=selection, partition_key=key, instance=instance, resources=resources)
    assert dg.materialize([*ASSETS, *CHECKS], selection=RELEASE_INPUTS, instance=instance, resources=resources)


def release_on(instance: dg.DagsterInstance, storage: StorageResource, predictors: PredictorsResource) -> dict:
    """Materialize ``release`` alone (with its checks) and return its metadata."""
    resources = {**default_resources(), "storage": storage, "predictors": predictors}
    result = dg.materialize([*ASSETS, *CHECKS], selection=["release"], instance=instance, resources=resources)
    assert result.success
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("release"))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def released_outputs(storage: StorageResource) -> dict[str, bytes]:
    """The release-level outputs in a working copy: KV files, rating buckets and the score histogram."""
    layout = storage.layout
    files = [*layout.kv_dir.glob("*.kv"), *layout.buckets_dir.glob("rating*.npy"), layout.histogram_path]
    return {path.relative_to(layout.root).as_posix(): path.read_bytes() for path in sorted(files)}


def test_release_on_another_machine_pulls_a_rescored_build(
    small_sample_session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"local://{tmp_path / 'root'}"
    a = StorageResource(source=str(small_sample_session), data_root=root, staging=str(tmp_path / "staging-a"))
    b = StorageResource(source=str(small_sample_session), data_root=root, staging=str(tmp_path / "staging-b"))
    v1 = PredictorsResource()
    instance = dg.DagsterInstance.ephemeral()
    build(instance, a, v1)
    assert release_on(instance, b, v1)["unchanged"] is True  # B now holds v0.1.0's files
    before = released_outputs(b)

    # A switches to another V1 head, re-scores every shard and rebuilds everything: v0.1.1.
    head = torch.load(V1_WEIGHTS, map_location="cpu")
    v1b_path = tmp_path / "v1b.pth"
    torch.save({"weight": head["weight"] * 0.9, "bias": head["bias"] + 0.3}, v1b_path)
    v1b = PredictorsResource(v1_weights=str(v1b_path))
    build(instance, a, v1b)
    rebuilt = released_outputs(a)
    changed_same_size = [k for k in rebuilt if rebuilt[k] != before[k] and len(rebuilt[k]) == len(before[k])]
    assert "kv/aesthetic.kv" in changed_same_size  # what a size comparison would have kept

    # B, with the same new predictor, builds the release: it finds A's v0.1.1, built from the same bytes.
    metadata = release_on(instance, b, v1b)
    assert (metadata["version"], metadata["unchanged"]) == ("v0.1.1", True)
    assert released_outputs(b) == rebuilt
    assert sorted(p.name for p in (tmp_path / "root" / "releases").iterdir()) == ["v0.1.0", "v0.1.1"]

    # Nothing changed since: the same release on B transfers nothing (the filesystem's own get_file, counted).
    fs = UPath(root).fs
    downloads: list[str] = []
    real = fs.get_file
    monkeypatch.setattr(fs, "get_file", lambda rpath, lpath, **kw: downloads.append(rpath) or real(rpath, lpath, **kw))
    assert release_on(instance, b, v1b)["unchanged"] is True
    assert downloads == []
