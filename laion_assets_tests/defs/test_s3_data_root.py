"""The whole graph with ``source`` and ``data_root`` on S3: a real S3 API (moto's server on 127.0.0.1), reached by
s3fs through the environment alone (``AWS_ENDPOINT_URL`` and dummy credentials), as a pod reaches MinIO or S3."""

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.partitions import source_keys
from laion_assets.demos.local import run_graph
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.mirror import Mirror
from laion_assets_tests.moto_s3 import moto_s3

BUCKET = "laion-assets"
SUBSETS = [r.asset_name for r in V2_SUBSETS + V1_SUBSETS]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An S3 server on 127.0.0.1 with one bucket, shared by the module; a boto3 client, an independent view of it."""
    with moto_s3(BUCKET, tmp_path_factory.mktemp("aws")) as client:
        yield client


def keys(client: Any, prefix: str) -> list[str]:
    """Every object key under ``prefix`` in the bucket, listed by boto3."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def leftovers(client: Any, prefix: str) -> list[str]:
    """Keys below a push's temporary sibling folder (``.<name>.<id>.tmp/``)."""
    return [k for k in keys(client, prefix) if any(p.startswith(".") and p.endswith(".tmp") for p in k.split("/"))]


def upload(client: Any, folder: Path, prefix: str) -> None:
    """Put every file below a local folder under ``prefix``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def read_object(client: Any, key: str) -> bytes:
    """The bytes of one object, read by boto3."""
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def source(s3: Any, small_sample_session: Path) -> str:
    """The small sample uploaded as the source, ``s3://…/src``."""
    upload(s3, small_sample_session, "src")
    return f"s3://{BUCKET}/src"


@pytest.fixture(scope="module")
def built(source: str, small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The graph run once with source and data root in the bucket (a pod's staging folder), and once locally."""
    tmp = tmp_path_factory.mktemp("s3-graph")
    remote = StorageResource(source=source, data_root=f"s3://{BUCKET}/out", staging=str(tmp / "staging"))
    counts = run_graph(dg.DagsterInstance.ephemeral(), remote, PredictorsResource())
    local = StorageResource(source=str(small_sample_session), data_root=str(tmp / "local"))
    run_graph(dg.DagsterInstance.ephemeral(), local, PredictorsResource())
    return {"counts": counts, "local": local}


def test_the_graph_writes_its_outputs_into_the_bucket(s3: Any, built: dict[str, Any]) -> None:
    stored = set(keys(s3, "out/"))
    expected = {
        "out/releases/v0.1.0/manifest.json",
        "out/tags/_table.json",
        "out/knn/image.index",
        "out/knn/index.json",
        "out/stats/score_histogram.json",
        *(f"out/shards/{key}/scores.parquet" for key in ("00000", "00001", "00002")),
        *(f"out/tags/part-0000{n}.parquet" for n in range(3)),
        *(f"out/subsets/{name}/part-00000.parquet" for name in SUBSETS),
        *(f"out/releases/v0.1.0/data/{name}/part-00000.parquet" for name in SUBSETS),
    }
    assert expected <= stored, sorted(expected - stored)
    assert leftovers(s3, "") == []
    assert not [k for k in stored if "/.mirror/" in k]  # the staging folder's records stay in the pod


def test_released_subsets_in_the_bucket_equal_a_local_run(s3: Any, built: dict[str, Any]) -> None:
    layout = built["local"].layout
    for name in SUBSETS:
        expected = pl.read_parquet(layout.subset_dir(name) / "part-00000.parquet")
        assert built["counts"][name] == expected.height > 0, name
        for key in (f"out/subsets/{name}/part-00000.parquet", f"out/releases/v0.1.0/data/{name}/part-00000.parquet"):
            assert pl.read_parquet(io.BytesIO(read_object(s3, key))).equals(expected), key
    assert read_object(s3, "out/knn/image.index") == (layout.knn_dir / "image.index").read_bytes()


def test_a_folder_push_replaces_the_remote_folder_and_a_failed_one_leaves_it(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"mirror-{uuid.uuid4().hex}"
    mirror = Mirror(tmp_path / "pod", UPath(f"s3://{BUCKET}/{prefix}"))
    folder = mirror.local / "knn"
    for name, data in {"image.index": b"v1-index", "index.json": b"{}", "metadata/part-00000.arrow": b"v1"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    mirror.push(folder)

    # A re-run rewrites one file, drops one, adds one: the remote folder is exactly the new one, nothing beside it.
    (folder / "image.index").write_bytes(b"v2-index-longer")
    (folder / "metadata" / "part-00000.arrow").unlink()
    (folder / "metadata" / "part-00001.arrow").write_bytes(b"v2")
    mirror.push(folder)
    after = {k.removeprefix(f"{prefix}/"): read_object(s3, k) for k in keys(s3, f"{prefix}/")}
    assert after == {
        "knn/image.index": b"v2-index-longer",
        "knn/index.json": b"{}",
        "knn/metadata/part-00001.arrow": b"v2",
    }

    # The next push dies on its second upload (the network, the pod killed): the remote folder keeps v2 whole.
    (folder / "image.index").write_bytes(b"v3")
    (folder / "index.json").write_bytes(b'{"v": 3}')
    fs = mirror.remote.fs
    real, uploads = fs.put_file, []

    def failing(lpath: str, rpath: str, *args: object, **kwargs: object) -> object:
        uploads.append(rpath)
        if len(uploads) == 2:
            raise ConnectionError("injected: connection reset during upload")
        return real(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", failing)
    with pytest.raises(ConnectionError):
        mirror.push(folder)
    monkeypatch.undo()
    assert ".tmp/" in uploads[0]  # the failed push wrote only to its temporary sibling
    assert {k.removeprefix(f"{prefix}/"): read_object(s3, k) for k in keys(s3, f"{prefix}/")} == after
    assert leftovers(s3, prefix) == []
    # A pull on another machine gets v2, not the half-pushed v3.
    other = Mirror(tmp_path / "other-pod", mirror.remote)
    assert other.pull(other.local / "knn")
    assert (other.local / "knn" / "image.index").read_bytes() == b"v2-index-longer"


def test_a_long_lived_process_sees_what_other_machines_wrote_later(s3: Any, source: str, tmp_path: Path) -> None:
    # The sensor's process lists the source again and again: a part added since (by another writer) is found,
    # although s3fs keeps every listing it made for the life of the process.
    before = source_keys(UPath(source))
    prefix = f"src-{uuid.uuid4().hex}"
    for key in keys(s3, "src/"):
        s3.copy_object(Bucket=BUCKET, Key=f"{prefix}/{key.removeprefix('src/')}", CopySource=f"{BUCKET}/{key}")
    grown = UPath(f"s3://{BUCKET}/{prefix}")
    assert source_keys(grown) == before
    for sub, name in (("img_emb", "img_emb_{}.npy"), ("metadata", "metadata_{}.parquet")):
        s3.copy_object(
            Bucket=BUCKET, Key=f"{prefix}/{sub}/{name.format(7)}", CopySource=f"{BUCKET}/src/{sub}/{name.format(0)}"
        )
    assert len(source_keys(grown)) == len(before) + 1

    # A pull after another machine rewrote a file (same size, so only its etag tells) brings the new bytes.
    mirror = Mirror(tmp_path / "pod", UPath(f"s3://{BUCKET}/{prefix}"))
    target = mirror.local / "stats.json"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/stats.json", Body=b'{"n": 1}')
    assert mirror.pull(target) and target.read_bytes() == b'{"n": 1}'
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/stats.json", Body=b'{"n": 2}')
    assert mirror.pull(target) and target.read_bytes() == b'{"n": 2}'
