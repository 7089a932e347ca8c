"""img2dataset for real against a server on 127.0.0.1: good JPEG/PNG files, a 404, a corrupt file, a slow
response and a flaky URL (503 once, then fine), downloaded twice to check that only the failures are retried."""

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from laion_assets.downloading import (
    DownloadOptions,
    ShardDownload,
    _is_new_source,
    download_shard,
    read_stats,
    row_status,
)
from laion_assets.errors import BadInputError
from laion_assets.url_demo import serve_images, url_frame, write_images
from laion_assets.url_sources import ROW_COLUMN, read_url_shard

OPTIONS = DownloadOptions(processes_count=1, thread_count=8, timeout=5)
GOOD = 6


@dataclass
class Downloads:
    shard_dir: Path
    source: Path
    frame: pl.DataFrame
    first: ShardDownload
    second: ShardDownload
    first_requests: list[str]
    second_requests: list[str]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Downloads:
    root = tmp_path_factory.mktemp("downloads")
    names = write_images(root / "served", GOOD + 4, seed=3)
    with serve_images(root / "served", slow_seconds=1.5) as server:
        urls = [server.url(n) for n in names[:GOOD]]
        urls += [
            server.url(names[GOOD], "missing"),
            server.url(names[GOOD + 1], "corrupt"),
            server.url(names[GOOD + 2], "slow"),
            server.url(names[GOOD + 3], "flaky"),
        ]
        source = root / "part-00000.parquet"
        url_frame(urls).with_columns(pl.lit("carried").alias("note")).write_parquet(source)
        frame = read_url_shard(source)
        shard_dir = root / "images" / "00000"
        first = download_shard(frame, source, shard_dir, OPTIONS)
        first_requests = list(server.requests)
        server.requests.clear()
        second = download_shard(frame, source, shard_dir, OPTIONS)
        second_requests = list(server.requests)
    return Downloads(shard_dir, source, frame, first, second, first_requests, second_requests)


def _tar_samples(tar: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as t:
        for member in t.getmembers():
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = t.extractfile(member).read()
    return samples


def test_first_attempt_stats_count_each_failure_by_reason(downloads: Downloads) -> None:
    stats = downloads.first.last
    assert stats is not None
    assert (stats.count, stats.successes) == (GOOD + 4, GOOD + 1)  # the slow one succeeds within the timeout
    assert stats.failed_to_download == 2 and stats.failed_to_resize == 1
    assert stats.status["success"] == GOOD + 1
    assert stats.status["HTTP Error 404: Not Found"] == 1
    assert stats.status["HTTP Error 503: Service Unavailable"] == 1
    assert stats.duration > 0
    assert downloads.first.failures_by_reason == {
        "HTTP Error 404: Not Found": 1,
        "HTTP Error 503: Service Unavailable": 1,
        "Image decoding error": 1,
    }
    assert sorted(downloads.first_requests) == sorted(f"/{u.split('/', 3)[3]}" for u in downloads.frame["URL"])


def test_tars_hold_the_successes_with_caption_and_carried_columns(downloads: Downloads) -> None:
    (tar,) = downloads.first.tars
    samples = _tar_samples(tar)
    assert len(samples) == GOOD + 1
    rows = set()
    for files in samples.values():
        assert {"jpg", "txt", "json"} <= set(files)  # LAION's settings re-encode nothing but store .jpg names
        meta = json.loads(files["json"])
        assert meta["status"] == "success" and meta["note"] == "carried"
        assert files["txt"].decode() == f"a generated picture number {meta[ROW_COLUMN]}"
        Image.open(io.BytesIO(files["jpg"])).verify()
        rows.add(meta[ROW_COLUMN])
    assert rows == {*range(GOOD), GOOD + 2}


def test_second_attempt_fetches_only_the_failed_urls_and_merges(downloads: Downloads) -> None:
    asked = sorted(p.split("/")[1] for p in downloads.second_requests)
    assert asked == ["corrupt", "flaky", "missing"]
    second = downloads.second
    assert second.downloaded_now == 3 and second.attempts == 2
    assert second.successes == GOOD + 2 and second.failures == 2
    assert second.failures_by_reason == {"HTTP Error 404: Not Found": 1, "Image decoding error": 1}
    assert second.last is not None and (second.last.count, second.last.successes) == (3, 1)
    keys_by_attempt = [{json.loads(f["json"])[ROW_COLUMN] for f in _tar_samples(t).values()} for t in second.tars]
    assert keys_by_attempt[1] == {GOOD + 3}  # only the flaky one is new
    assert keys_by_attempt[0].isdisjoint(keys_by_attempt[1])
    status = row_status(downloads.shard_dir)
    assert status.height == GOOD + 4
    assert status.filter(pl.col("status") != "success")[ROW_COLUMN].to_list() == [GOOD, GOOD + 1]


def test_a_replaced_url_shard_starts_over(downloads: Downloads, tmp_path: Path) -> None:
    assert not _is_new_source(downloads.source, downloads.shard_dir)
    other = tmp_path / "part-00000.parquet"
    url_frame(["http://127.0.0.1:9/a.jpg"]).write_parquet(other)
    assert _is_new_source(other, downloads.shard_dir)
    assert _is_new_source(downloads.source, tmp_path / "nothing-yet")


def test_stats_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no \\*_stats.json"):
        read_stats(tmp_path)
    (tmp_path / "00000_stats.json").write_text('{"count": 3}')
    with pytest.raises(BadInputError, match="not an img2dataset stats file"):
        read_stats(tmp_path)


def test_unknown_distributor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="distributor 'dask'"):
        DownloadOptions(distributor="dask").img2dataset_args(tmp_path / "in.parquet", tmp_path, [])
