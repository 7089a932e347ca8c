"""img2dataset for real against a server on 127.0.0.1: good JPEG/PNG files, a 404, a corrupt file, a slow
response and a flaky URL (503 once, then fine), downloaded twice to check that only the failures are retried;
then hostile servers (a trickle, 2 GiB bodies), URLs that are not downloads (local files, a FIFO, redirects out
of the web, data:) and decompression bombs, a step killed mid-download and an attempt over its time limit."""

import base64
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from laion_assets.core.errors import BadInputError, LaionAssetsError
from laion_assets.demos.url_server import ImageServer, serve_images, url_frame, write_images
from laion_assets.images.downloading import (
    LOG_FILE,
    RUN_FILE,
    DownloadOptions,
    ShardDownload,
    ShardTimeoutError,
    _is_new_source,
    _keep_finished,
    download_shard,
    failure_log,
    read_stats,
    row_status,
    shard_lock,
)
from laion_assets.images.url_fetch import check_img2dataset
from laion_assets.sources.url_sources import ROW_COLUMN, read_url_shard

OPTIONS = DownloadOptions(processes_count=1, thread_count=8, timeout=5)
GOOD = 6
MIB = 1024 * 1024
# A killed step's leftovers, named the way atomic_dir names its temporary folders.
KILLED_LATER_ATTEMPT = ".attempt-001.k1ll3d_x.tmp"
KILLED_FIRST_ATTEMPT = ".00000.x7f3q2ab.tmp"
OTHER_SHARDS_TMP = ".00001.abcdefgh.tmp"


@dataclass
class Downloads:
    shard_dir: Path
    source: Path
    frame: pl.DataFrame
    first: ShardDownload
    second: ShardDownload
    first_requests: list[str]
    second_requests: list[str]
    planted: list[Path]


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
        # What a SIGKILLed step leaves (its finally never ran): half-written attempts of this shard, of another.
        planted = [shard_dir / KILLED_LATER_ATTEMPT, shard_dir.parent / KILLED_FIRST_ATTEMPT]
        for folder in [*planted, shard_dir.parent / OTHER_SHARDS_TMP]:
            (folder / "00000.tar").parent.mkdir(parents=True)
            (folder / "00000.tar").write_bytes(b"half a tar")
        second = download_shard(frame, source, shard_dir, OPTIONS)
        second_requests = list(server.requests)
    return Downloads(shard_dir, source, frame, first, second, first_requests, second_requests, planted)


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


def test_the_next_run_removes_the_temporary_folders_a_killed_run_left(downloads: Downloads) -> None:
    assert sorted(downloads.second.removed_leftovers) == sorted(downloads.planted)
    assert not any(p.exists() for p in downloads.planted)
    assert (downloads.shard_dir.parent / OTHER_SHARDS_TMP / "00000.tar").is_file()  # another shard's: not ours
    assert [p.name for p in downloads.shard_dir.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in downloads.shard_dir.parent.iterdir()) == [".00000.lock", OTHER_SHARDS_TMP, "00000"]
    assert downloads.first.removed_leftovers == []


def test_attempts_record_the_peak_memory_of_img2dataset(downloads: Downloads) -> None:
    run = json.loads((downloads.shard_dir / "attempt-000" / RUN_FILE).read_text())
    assert run["exit_code"] == 0 and not run["timed_out"]
    assert downloads.first.last is not None and downloads.first.last.peak_rss_bytes == run["peak_rss_bytes"]
    assert 20 * MIB < run["peak_rss_bytes"] < 4096 * MIB  # a python process with img2dataset imported


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


def test_download_bounds_are_checked(tmp_path: Path) -> None:
    ours = ("max_url_bytes", "url_deadline", "max_image_pixels", "shard_timeout")
    for field in ours:
        with pytest.raises(BadInputError, match=f"downloader {field} must be a number > 0, got 0"):
            DownloadOptions(**{field: 0}).img2dataset_args(tmp_path / "in.parquet", tmp_path, [])
    args = DownloadOptions().img2dataset_args(tmp_path / "in.parquet", tmp_path, [])
    assert not set(ours) & set(args)  # ours, not img2dataset's


def test_a_shard_being_downloaded_elsewhere_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "part-00000.parquet"
    url_frame(["http://127.0.0.1:9/a.jpg"]).write_parquet(source)
    shard_dir = tmp_path / "images" / "00000"
    with shard_lock(shard_dir):
        with pytest.raises(LaionAssetsError, match="being downloaded by another process right now"):
            download_shard(read_url_shard(source), source, shard_dir, OPTIONS)
    assert not shard_dir.exists()


# Hostile servers, URLs that are not web downloads and images that decode to far more than they weigh, in one
# shard: with these bounds it takes seconds; unbounded, the trickles take hours and the FIFO forever.
BOUNDED = DownloadOptions(
    processes_count=1,
    thread_count=8,
    timeout=5,
    url_deadline=3,
    max_url_bytes=1 * MIB,
    max_image_pixels=4_000_000,
    shard_timeout=120,
)
TRICKLE_SECONDS = 1.0  # under img2dataset's per-operation timeout, so only url_deadline can stop a trickle
HOSTILE = ["trickle", "trickle-head", "huge", "huge-unsized"]
BOMB_SIDE = 10_000  # a ~300 KB PNG of 10000 x 10000 RGB: decoding it takes ~600 MB, 3 bytes a pixel at the least
HDR_SIZE = (2500, 2000)  # over max_image_pixels in a format PIL cannot read: OpenCV's own bound must refuse it
ONLY_WEB = "(only http and https are fetched)"


def _png_bomb(side: int) -> bytes:
    """A black RGB PNG of side x side pixels: the zlib stream of zeros is ~1000 times smaller than the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte, then the row's pixels
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _radiance(width: int, height: int) -> bytes:
    """A flat Radiance .hdr (run-length scanlines), which OpenCV decodes and PIL does not read."""
    runs, left = b"", width
    while left:
        runs += bytes([128 + min(127, left), 128])  # a run of up to 127 equal bytes
        left -= min(127, left)
    line = bytes([2, 2, width >> 8, width & 255]) + runs * 4  # R, G, B and the shared exponent
    return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode() + line * height


@dataclass
class Hostile:
    server: ImageServer
    frame: pl.DataFrame
    result: ShardDownload
    status: dict[str, tuple[str, str | None]]  # by row name: (status, error_message)
    tar_members: list[bytes]
    never_fetched: dict[str, bytes]  # files on this machine that no tar may hold


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    served = root / "served"
    names = write_images(served, 5 + len(HOSTILE), seed=4)
    (served / "bomb.png").write_bytes(_png_bomb(BOMB_SIDE))
    (served / "big.hdr").write_bytes(_radiance(*HDR_SIZE))
    secret = root / "secret"
    write_images(secret, 1, seed=8)  # a JPEG, which LAION's settings would store unchanged if it were read
    local = secret / "00000.jpg"
    os.mkfifo(secret / "fifo")  # opening it for reading blocks until a writer comes: none ever does
    with serve_images(served, trickle_seconds=TRICKLE_SECONDS) as server:
        rows = {f"img{i}": server.url(names[i]) for i in range(3)}
        rows |= {kind: server.url(name, kind) for name, kind in zip(names[3:7], HOSTILE, strict=True)}
        rows |= {
            "local-file": local.as_uri(),
            "local-fifo": (secret / "fifo").as_uri(),
            "wrapped-file": f"<URL:FILE{local.as_uri()[4:]}>",  # urllib unwraps it and lowercases the scheme
            "redirect-to-file": server.url(names[-2], "to-file"),
            "redirect-to-ftp": server.url(names[-1], "to-ftp"),
            "data": "data:image/jpeg;base64," + base64.b64encode(local.read_bytes()).decode(),
            "no-scheme": "127.0.0.1/img/00000.jpg",
            "png-bomb": server.url("bomb.png"),
            "hdr-bomb": server.url("big.hdr"),
        }
        source = root / "part-00000.parquet"
        url_frame(list(rows.values())).write_parquet(source)
        frame = read_url_shard(source)
        result = download_shard(frame, source, root / "images" / "00000", BOUNDED)
    name_of = {url: name for name, url in rows.items()}
    table = row_status(root / "images" / "00000").join(frame.select(ROW_COLUMN, "URL"), on=ROW_COLUMN)
    status = {name_of[url]: (st, err) for url, st, err in table.select("URL", "status", "error_message").rows()}
    members = [data for tar in result.tars for files in _tar_samples(tar).values() for data in files.values()]
    never = {"local-file": local.read_bytes(), "redirect-to-file": (served / names[-2]).read_bytes()}
    return Hostile(server, frame, result, status, members, never)


def test_trickling_urls_fail_at_url_deadline_while_the_others_succeed(hostile: Hostile) -> None:
    assert [hostile.status[f"img{i}"] for i in range(3)] == [("success", None)] * 3
    assert hostile.result.successes == 3 and hostile.result.attempts == 1
    for kind in ("trickle", "trickle-head"):  # body trickled, or the headers themselves
        assert hostile.status[kind] == ("failed_to_download", "took longer than url_deadline=3 s")
        path = next(p for p in hostile.server.requests if p.startswith(f"/{kind}/"))
        # cut after ~3 s, i.e. ~3 bytes at one a second (the file is thousands of bytes)
        assert hostile.server.sent.get(path, 0) <= 3 / TRICKLE_SECONDS + 2
    assert hostile.result.last is not None and hostile.result.last.duration < 20  # not the hours a trickle takes


def test_oversized_urls_fail_at_max_url_bytes_in_small_memory(hostile: Hostile, downloads: Downloads) -> None:
    assert hostile.status["huge"] == ("failed_to_download", f"larger than max_url_bytes={MIB} (Content-Length)")
    assert hostile.status["huge-unsized"] == ("failed_to_download", f"larger than max_url_bytes={MIB} (body)")
    sent = {p.split("/")[1]: n for p, n in hostile.server.sent.items()}
    assert sent["huge-unsized"] < 64 * MIB  # the reader hung up after 1 MiB (the rest is socket buffers), not 2 GiB
    # img2dataset's child and workers peak at about what an ordinary shard costs, far from the 2 GiB served
    peak, ordinary = hostile.result.last.peak_rss_bytes, downloads.first.last.peak_rss_bytes
    assert peak is not None and ordinary is not None
    assert peak - ordinary < 256 * MIB and peak < 2048 * MIB


def test_every_failure_is_counted_by_its_reason(hostile: Hostile) -> None:
    file_scheme = f"unsupported URL scheme 'file' {ONLY_WEB}"
    assert hostile.result.failures_by_reason == {
        "took longer than url_deadline=3 s": 2,
        f"larger than max_url_bytes={MIB} (Content-Length)": 1,
        f"larger than max_url_bytes={MIB} (body)": 1,
        file_scheme: 3,
        f"unsupported URL scheme 'data' {ONLY_WEB}": 1,
        f"URL without a scheme {ONLY_WEB}": 1,
        f"redirected to unsupported URL scheme 'file' {ONLY_WEB}": 1,
        f"redirected to unsupported URL scheme 'ftp' {ONLY_WEB}": 1,
        f"image larger than max_image_pixels={BOUNDED.max_image_pixels} (width x height)": 1,
        hostile.status["hdr-bomb"][1]: 1,  # OpenCV's message (below)
    }


def test_only_http_and_https_urls_are_fetched(hostile: Hostile) -> None:
    file_scheme = ("failed_to_download", f"unsupported URL scheme 'file' {ONLY_WEB}")
    assert hostile.status["local-file"] == hostile.status["local-fifo"] == hostile.status["wrapped-file"] == file_scheme
    assert hostile.status["data"] == ("failed_to_download", f"unsupported URL scheme 'data' {ONLY_WEB}")
    assert hostile.status["no-scheme"] == ("failed_to_download", f"URL without a scheme {ONLY_WEB}")
    for kind in ("file", "ftp"):
        message = f"redirected to unsupported URL scheme '{kind}' {ONLY_WEB}"
        assert hostile.status[f"redirect-to-{kind}"] == ("failed_to_download", message)
    assert sum(1 for p in hostile.server.requests if p.startswith(("/to-file/", "/to-ftp/"))) == 2  # asked once each
    # no local file reached a tar: the tars hold the three good rows only
    assert len(hostile.tar_members) == 3 * 3  # each its .jpg, .txt and .json
    for name, data in hostile.never_fetched.items():
        assert not any(data in member for member in hostile.tar_members), name
    # the FIFO was never opened (that blocks until shard_timeout): the attempt ended in seconds
    assert hostile.result.last is not None and hostile.result.last.duration < 20 < BOUNDED.shard_timeout


def test_an_image_over_max_image_pixels_is_refused_before_it_is_decoded(hostile: Hostile, downloads: Downloads) -> None:
    limit = BOUNDED.max_image_pixels
    message = f"image larger than max_image_pixels={limit} (width x height)"
    assert hostile.status["png-bomb"] == ("failed_to_download", message)
    # a format PIL cannot read: OpenCV, bounded to the same limit in img2dataset's workers, refuses to decode it
    status, error = hostile.status["hdr-bomb"]
    assert status == "failed_to_resize" and error is not None and "CV_IO_MAX_IMAGE_PIXELS" in error
    assert HDR_SIZE[0] * HDR_SIZE[1] > limit
    # decoding the PNG would take 3 bytes a pixel at the least (300 MB); the attempt costs what an ordinary one does
    peak, ordinary = hostile.result.last.peak_rss_bytes, downloads.first.last.peak_rss_bytes
    assert peak is not None and ordinary is not None
    assert peak - ordinary < 100 * MIB < 3 * BOMB_SIDE**2


def test_a_stopped_attempt_keeps_only_the_sub_shards_img2dataset_finished(downloads: Downloads, tmp_path: Path) -> None:
    attempt = tmp_path / "attempt"
    shutil.copytree(downloads.shard_dir / "attempt-000", attempt)
    (attempt / RUN_FILE).unlink()  # written after img2dataset, so never there when it was stopped
    (attempt / "00001.tar").write_bytes(b"half a tar")  # sub-shard 1 was being written
    (attempt / "00001.parquet").write_bytes(b"PAR1")
    (attempt / "00002_stats.json").write_text('{"count": 1')  # cut while being written
    (attempt / "_tmp").mkdir()  # img2dataset's sharded input
    (attempt / "_tmp" / "2.feather").write_bytes(b"rows")
    (attempt / "_input.parquet").write_bytes(b"PAR1")
    assert _keep_finished(attempt) == GOOD + 4
    assert sorted(p.name for p in attempt.iterdir()) == ["00000.parquet", "00000.tar", "00000_stats.json", LOG_FILE]
    assert read_stats(attempt).count == GOOD + 4


def _live_members(group: int) -> list[str]:
    """Processes of process group ``group`` that are not zombies (read from /proc, independently of the code)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            members.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
    return members


def _img2dataset_child(marker: str) -> int:
    """Pid of the img2dataset child whose command line names ``marker`` (a test's own folder)."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "laion_assets.images.url_fetch" in cmdline and marker in cmdline:
            return int(entry.name)
    raise AssertionError(f"no img2dataset child for {marker}")


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


STEP = """import sys
from pathlib import Path
from laion_assets.images.downloading import DownloadOptions, download_shard
from laion_assets.sources.url_sources import read_url_shard
source, shard_dir = Path(sys.argv[1]), Path(sys.argv[2])
options = DownloadOptions(processes_count=1, thread_count=4, timeout=5, url_deadline=600)
download_shard(read_url_shard(source), source, shard_dir, options)
"""


@dataclass
class Stopped:
    images: Path
    group_of_killed: int
    left_by_kill: list[str]
    members_after_kill: list[str]
    error: ShardTimeoutError
    members_after_timeout: list[str]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Stopped:
    """A step SIGKILLed while img2dataset's workers fetch a trickle, then a run of the shard over its time limit."""
    root = tmp_path_factory.mktemp("stopped")
    names = write_images(root / "served", 2, seed=6)
    images = root / "images"
    with serve_images(root / "served", trickle_seconds=TRICKLE_SECONDS) as server:
        source = root / "part-00000.parquet"
        url_frame([server.url(names[0]), server.url(names[1], "trickle")]).write_parquet(source)
        step = subprocess.Popen([sys.executable, "-c", STEP, str(source), str(images / "00000")])
        try:
            assert _wait_for(lambda: any(p.startswith("/trickle/") for p in server.requests), 120)
            group = os.getpgid(_img2dataset_child(str(root)))  # its workers are fetching now
            step.send_signal(signal.SIGKILL)  # no finally, no atomic_dir cleanup: the way a step dies
        finally:
            step.kill()
            step.wait()
        _wait_for(lambda: not _live_members(group), 10)
        members_after_kill = _live_members(group)
        left_by_kill = sorted(p.name for p in images.iterdir())
        with pytest.raises(ShardTimeoutError) as caught:
            download_shard(
                read_url_shard(source),
                source,
                images / "00000",
                DownloadOptions(processes_count=1, thread_count=4, shard_timeout=3),
            )
    return Stopped(
        images, group, left_by_kill, members_after_kill, caught.value, _live_members(caught.value.process_group)
    )


def test_a_killed_step_leaves_no_process_behind(stopped: Stopped) -> None:
    assert stopped.members_after_kill == []  # img2dataset saw its parent die and killed its whole group
    assert [n for n in stopped.left_by_kill if n.endswith(".tmp")] != []  # its temporary folder, for now


def test_shard_timeout_stops_the_attempt_with_a_clear_error_and_nothing_left(stopped: Stopped) -> None:
    message = str(stopped.error)
    source = stopped.images.parent / "part-00000.parquet"
    log = failure_log(stopped.images / "00000")
    assert message.startswith(f"downloading URL shard {source} took longer than shard_timeout=3 s;")
    assert "stopped img2dataset and all its processes" in message and message.endswith(f"; log {log}")
    assert log.is_file()
    assert stopped.members_after_timeout == []
    # the killed step's temporary folder is gone, and so is this attempt's own (it had finished nothing)
    assert sorted(p.name for p in stopped.images.iterdir()) == [".00000.lock", "00000.failed.log"]


@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")  # img2dataset's own import
def test_an_img2dataset_that_no_longer_fetches_through_download_image_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import img2dataset.downloader as downloader

    check_img2dataset()  # the pinned version: its threads call download_image_with_retry -> download_image

    def fetch_some_other_way(row: tuple[int, str], *args: object) -> tuple[int, None, str]:
        return row[0], None, "fetched without download_image"

    monkeypatch.setattr(downloader, "download_image_with_retry", fetch_some_other_way)
    with pytest.raises(LaionAssetsError) as caught:
        check_img2dataset()
    assert "download_image_with_retry no longer calls download_image" in str(caught.value)
    assert "max_url_bytes, url_deadline" in str(caught.value) and "img2dataset==1.47.0" in str(caught.value)


_IGNORED_IN_A_SPAWNED_WORKER = """
import multiprocessing, signal, sys
from laion_assets.images.url_fetch import default_stop_signals

def ignored():
    mask = next(line for line in open("/proc/self/status") if line.startswith("SigIgn:")).split()[1]
    return [s for s in (signal.SIGTERM, signal.SIGINT) if int(mask, 16) >> (s - 1) & 1]

if __name__ == "__main__":
    if sys.argv[1] == "reset":
        default_stop_signals()
    pool = multiprocessing.get_context("spawn").Pool(1)  # as img2dataset starts its workers
    print(len(pool.apply(ignored)))
    pool.close()  # not terminate(): with SIGTERM ignored that is the very hang this guards against
    pool.join()
"""


@pytest.mark.parametrize(("mode", "expected"), [("keep", "2"), ("reset", "0")])
def test_the_downloader_lets_its_pool_workers_be_terminated(tmp_path: Path, mode: str, expected: str) -> None:
    """Started with SIGTERM and SIGINT ignored, the downloader's spawned workers get them back (or terminate hangs)."""
    script = tmp_path / "probe.py"
    script.write_text(_IGNORED_IN_A_SPAWNED_WORKER)
    ignore = lambda: [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)]  # noqa: E731
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, str(script), mode], preexec_fn=ignore, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected  # "keep" shows the inheritance is real; "reset" is what main() does
