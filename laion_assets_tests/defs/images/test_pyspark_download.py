"""The ``images`` asset with img2dataset's pyspark distributor, Spark in local mode, images served from 127.0.0.1.

pyspark is not in the project's default install (its sdist is 455 MB, and Spark needs Java): install it with
``pip install -e '.[spark]'`` and a JRE (Debian: ``apt-get install default-jre-headless``). Without them this file
is skipped with that reason, which ``make test`` prints (``-ra``). Spark's start takes about a minute.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile

import dagster as dg
import pytest

from laion_assets.definitions import URL_ASSETS, default_resources
from laion_assets.defs.resources import DownloaderResource, StorageResource
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.demos.url_server import serve_images, url_frame, write_images
from laion_assets.sources.url_sources import ROW_COLUMN

MISSING = [
    why
    for why, absent in (
        ("pyspark is not installed (pip install -e '.[spark]', 455 MB)", not importlib.util.find_spec("pyspark")),
        ("no Java runtime on PATH (apt-get install default-jre-headless)", shutil.which("java") is None),
    )
    if absent
]
pytestmark = pytest.mark.skipif(bool(MISSING), reason="pyspark download test skipped: " + "; ".join(MISSING))


def test_images_downloads_with_the_pyspark_distributor_in_local_mode(tmp_path):
    names = write_images(tmp_path / "served", 6, seed=2)
    with serve_images(tmp_path / "served") as server:
        urls = [server.url(n) for n in names[:4]] + [server.url(names[4], "missing"), server.url(names[5], "corrupt")]
        (tmp_path / "urls").mkdir()
        url_frame(urls, seed=3).write_parquet(tmp_path / "urls" / "part-00007.parquet")
        storage = StorageResource(urls=str(tmp_path / "urls"), data_root=str(tmp_path / "out"))
        resources = {
            **default_resources(),
            "storage": storage,
            "downloader": DownloaderResource(
                distributor="pyspark", processes_count=1, thread_count=4, timeout=5, min_success_rate=0.5
            ),  # fmt: skip
        }
        instance = dg.DagsterInstance.ephemeral()
        assert register_shards(instance, storage.shard_source) == ["00007"]
        result = dg.materialize(
            URL_ASSETS, selection=["images"], partition_key="00007", instance=instance, resources=resources
        )
        fetched = {p.rsplit("/", 1)[-1] for p in server.requests}
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (metadata["urls"], metadata["successes"], metadata["failures"]) == (6, 4, 2)
    assert json.loads(json.dumps(metadata["failures_by_reason"])) == {
        "HTTP Error 404: Not Found": 1,
        "Image decoding error": 1,
    }
    assert set(names) == fetched  # every URL was asked for, through Spark's python workers
    rows = set()
    for tar in sorted((tmp_path / "out" / "images" / "00007").glob("attempt-*/*.tar")):
        with tarfile.open(tar) as t:
            for member in t.getmembers():
                if member.name.endswith(".json"):
                    rows.add(json.loads(t.extractfile(member).read())[ROW_COLUMN])
    assert rows == {0, 1, 2, 3}
