"""Downloading one URL shard with img2dataset, keeping what succeeded and retrying only what failed.

A shard's image folder holds ``source.parquet`` (the URL shard with its ``laion_row`` numbers and a fingerprint
of the file it came from) and one ``attempt-NNN/`` folder per img2dataset run, each in img2dataset's webdataset
layout (``00000.tar``, ``00000.parquet``, ``00000_stats.json``). The first attempt downloads every row; a later
one downloads only the rows that no attempt has fetched yet, so the union of the attempts' tars holds every
success exactly once. A shard with nothing left to fetch is not downloaded again. Attempts are written to a
temporary folder and renamed when img2dataset has finished, so a killed run leaves nothing half-written, and the
next run of that shard removes the temporary folders a killed run could not.

Every download is bounded: each URL by bytes (``max_url_bytes``), by time for the whole transfer
(``url_deadline``), to http and https, and its image by pixels before it is decoded (``max_image_pixels``),
enforced inside img2dataset's own worker threads (:mod:`laion_assets.images.url_fetch`), and each attempt by
``shard_timeout``: img2dataset runs in a process group of its own, which is stopped as a whole when the time is up
(the sub-shards img2dataset had finished are kept, so the next run goes on from there).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.core.atomic import atomic_dir, write_parquet
from laion_assets.core.errors import BadInputError, LaionAssetsError
from laion_assets.images.url_fetch import UrlLimits
from laion_assets.sources.url_sources import ROW_COLUMN

SOURCE_FILE = "source.parquet"
FINGERPRINT_KEY = "laion_assets.url_source"
DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
LOG_FILE = "img2dataset.log"
RUN_FILE = "run.json"
# Run img2dataset in a child process: it installs a SIGINT handler (main thread only) and starts a spawn pool; in a
# process group of its own, so that a timeout stops the child, its pool workers and its logger process together.
_RUNNER = "from laion_assets.images.url_fetch import main; main()"
_KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for a child that overran shard_timeout
_SWEEP_GRACE = 2.0  # seconds the rest of the group gets to exit after the child (multiprocessing's resource tracker)
_BOUNDS = ("max_url_bytes", "url_deadline", "max_image_pixels", "shard_timeout")  # ours, not img2dataset's
_TMP_NAME = r"\.[A-Za-z0-9_]+\.tmp"  # atomic_dir's temporary folders: .NAME.XXXXXXXX.tmp


class ShardTimeoutError(LaionAssetsError):
    """A shard's download attempt overran ``shard_timeout`` and was stopped."""

    def __init__(self, message: str, process_group: int) -> None:
        super().__init__(message)
        self.process_group = process_group


@dataclass(frozen=True)
class DownloadOptions:
    """img2dataset settings (LAION's by default: keep-ratio resize to 384, no re-encode) and our download bounds.

    ``timeout`` is img2dataset's: seconds one socket operation may wait. ``max_url_bytes`` caps one response (32 MiB
    keeps practically every web image; worst case a process holds 2 x ``thread_count`` of them), ``url_deadline``
    bounds one URL's whole transfer, ``max_image_pixels`` the width x height of one image, read from its header
    before img2dataset decodes it (a 650 KB PNG can declare 15000 x 15000): 100 MP keeps 50 MP camera photos and
    10000 x 10000 scans; img2dataset's resizer decodes one image at a time per process, at about 6 bytes a pixel
    for 8-bit RGB (~600 MB at the limit) but ~75 for an image with an alpha channel, which it blends in float64.
    ``shard_timeout`` bounds one attempt of a shard: img2dataset's README reports
    100M URLs in 20 h on one 16-process machine (~90 URLs/s per process), so a 1M-row shard (this project's
    partition) takes ~1.5 h with the default 2 processes and 6 h leaves room for slow links; a timed-out attempt
    keeps its finished sub-shards, so a rerun goes on from there.
    """

    image_size: int = 384
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    skip_reencode: bool = True
    encode_format: str = "jpg"
    processes_count: int = 2
    thread_count: int = 64
    timeout: int = 10
    retries: int = 0
    number_sample_per_shard: int = 10000
    distributor: str = "multiprocessing"
    min_image_size: int = 0
    user_agent_token: str | None = None
    max_url_bytes: int = 32 * 1024 * 1024
    url_deadline: float = 60.0
    max_image_pixels: int = 100_000_000
    shard_timeout: float = 6 * 3600.0

    def validate(self) -> None:
        """Refuse settings img2dataset or the bounds cannot work with."""
        if self.distributor not in DISTRIBUTORS:
            raise BadInputError(f"distributor {self.distributor!r} is not one of {DISTRIBUTORS}")
        for name in _BOUNDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise BadInputError(f"downloader {name} must be a number > 0, got {value!r}")

    def url_limits(self) -> UrlLimits:
        """The per-URL bounds that img2dataset's workers enforce."""
        return UrlLimits(
            max_bytes=int(self.max_url_bytes),
            deadline=float(self.url_deadline),
            max_pixels=int(self.max_image_pixels),
        )

    def img2dataset_args(self, url_list: Path, output: Path, carried: list[str]) -> dict:
        """Keyword arguments of ``img2dataset.download`` for one attempt."""
        self.validate()
        args = {k: v for k, v in asdict(self).items() if k not in _BOUNDS}
        return {
            **args,
            "url_list": str(url_list),
            "output_folder": str(output),
            "input_format": "parquet",
            "output_format": "webdataset",
            "url_col": "URL",
            "caption_col": "TEXT",
            "save_additional_columns": carried,
            "enable_wandb": False,
            "incremental_mode": "incremental",
        }


@dataclass(frozen=True)
class AttemptStats:
    """The figures of img2dataset's ``*_stats.json`` files of one attempt, summed."""

    count: int = 0
    successes: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    duration: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    peak_rss_bytes: int | None = None  # of the img2dataset child and its workers (None for older attempts)

    @property
    def failures(self) -> int:
        """Rows of this attempt that did not succeed."""
        return self.count - self.successes


@dataclass(frozen=True)
class ShardDownload:
    """Where a shard's downloads stand after one materialization."""

    rows: int
    successes: int
    attempts: int
    downloaded_now: int
    last: AttemptStats | None
    failures_by_reason: dict[str, int]
    tars: list[Path]
    removed_leftovers: list[Path] = field(default_factory=list)  # temporary folders of killed runs, removed now

    @property
    def failures(self) -> int:
        """Rows that no attempt has fetched."""
        return self.rows - self.successes

    @property
    def success_rate(self) -> float:
        """Fraction of the shard's rows fetched so far."""
        return self.successes / self.rows if self.rows else 1.0


def fingerprint(path: Path) -> str:
    """sha256 of a URL shard file, to notice when a shard was replaced by another."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_stats(folder: Path) -> AttemptStats:
    """Sum the ``*_stats.json`` files img2dataset wrote in ``folder``."""
    totals: Counter[str] = Counter()
    status: Counter[str] = Counter()
    starts, ends = [], []
    files = sorted(folder.glob("*_stats.json"))
    if not files:
        raise BadInputError(f"{folder}: img2dataset wrote no *_stats.json; see {folder / 'img2dataset.log'}")
    for path in files:
        try:
            stats = json.loads(path.read_text())
            for name in ("count", "successes", "failed_to_download", "failed_to_resize"):
                totals[name] += int(stats[name])
            starts.append(float(stats["start_time"]))
            ends.append(float(stats["end_time"]))
            status.update({str(k): int(v) for k, v in stats.get("status_dict", {}).items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"{path}: not an img2dataset stats file: {exc}") from exc
    run = folder / RUN_FILE
    peak = json.loads(run.read_text()).get("peak_rss_bytes") if run.is_file() else None
    return AttemptStats(
        count=totals["count"],
        successes=totals["successes"],
        failed_to_download=totals["failed_to_download"],
        failed_to_resize=totals["failed_to_resize"],
        duration=max(ends) - min(starts),
        status=dict(status.most_common()),
        peak_rss_bytes=peak,
    )


def attempt_dirs(shard_dir: Path) -> list[Path]:
    """The finished attempt folders of a shard, oldest first."""
    return sorted(p for p in shard_dir.glob("attempt-[0-9][0-9][0-9]") if p.is_dir())


def row_status(shard_dir: Path) -> pl.DataFrame:
    """Latest ``status`` and ``error_message`` of every row some attempt has tried, by ``laion_row``."""
    frames = []
    for number, attempt in enumerate(attempt_dirs(shard_dir)):
        files = sorted(attempt.glob("[0-9]*.parquet"))
        for path in files:
            frame = pl.read_parquet(path, columns=[ROW_COLUMN, "status", "error_message"])
            frames.append(frame.with_columns(pl.lit(number).alias("attempt")))
    if not frames:
        return pl.DataFrame(
            schema={ROW_COLUMN: pl.Int64, "status": pl.String, "error_message": pl.String, "attempt": pl.Int32}
        )
    table = pl.concat(frames, how="vertical_relaxed").with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
    return table.sort("attempt").unique(ROW_COLUMN, keep="last").sort(ROW_COLUMN)


def _is_new_source(source: Path, shard_dir: Path) -> bool:
    """True when ``shard_dir`` holds no attempts for this very URL shard file (none yet, or for another file)."""
    recorded = shard_dir / SOURCE_FILE
    current = fingerprint(source)
    if recorded.exists():
        meta = pq.read_schema(recorded).metadata or {}
        if meta.get(FINGERPRINT_KEY.encode(), b"").decode() == current:
            return False
    return True


@dataclass(frozen=True)
class ChildRun:
    """How the img2dataset child process of one attempt ended."""

    exit_code: int
    seconds: float
    peak_rss_bytes: int  # the child's and its workers' peak resident memory, from wait4
    timed_out: bool
    process_group: int


def _reap(pid: int, deadline: float) -> tuple[int, os.struct_rusage] | None:
    """Wait for child ``pid`` until ``deadline`` (monotonic); its wait status and resource usage, or None."""
    pause = 0.01
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


def _group_alive(group: int) -> bool:
    """Whether a process of process group ``group`` is still running (a zombie waiting for init is not)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():  # no procfs: ask the kernel, zombies included
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        try:  # fields after "(comm)": state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rpartition(")")[2].split() if entry.name.isdigit() else []
        except OSError:
            continue
        if fields and int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _clear_group(group: int) -> None:
    """Give the rest of the child's process group a moment to exit on its own, then kill what is left."""
    end = time.monotonic() + _SWEEP_GRACE
    killed = False
    while _group_alive(group):
        if time.monotonic() >= end:
            if killed:
                return  # stuck in the kernel; nothing more a signal can do
            _signal_group(group, signal.SIGKILL)
            killed, end = True, time.monotonic() + _SWEEP_GRACE
        time.sleep(0.02)


def _run_img2dataset(spec: dict, log: Path, limit: float) -> ChildRun:
    """Run img2dataset in a process group of its own for at most ``limit`` seconds; never leaves a process behind."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, json.dumps(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    group = proc.pid  # start_new_session: the child leads a new session and process group
    ended = None
    timed_out = False
    try:
        ended = _reap(proc.pid, start + limit)
        if ended is None:
            timed_out = True
            _signal_group(group, signal.SIGTERM)
            ended = _reap(proc.pid, time.monotonic() + _KILL_GRACE)
    finally:
        if ended is None:  # deaf to SIGTERM, or this step itself was interrupted: nothing may outlive it
            _signal_group(group, signal.SIGKILL)
            ended = os.wait4(proc.pid, 0)[1:]
        _clear_group(group)
    status, usage = ended
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it again
    return ChildRun(
        exit_code=proc.returncode,
        seconds=time.monotonic() - start,
        peak_rss_bytes=usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024),  # bytes on macOS, KiB on Linux
        timed_out=timed_out,
        process_group=group,
    )


def _keep_finished(folder: Path) -> int:
    """Delete what a stopped img2dataset left unfinished in ``folder``; returns the rows of the sub-shards kept."""
    finished: dict[str, int] = {}
    for stats in folder.glob("*_stats.json"):
        try:  # img2dataset writes a sub-shard's stats after closing its tar and parquet: stats mean finished
            finished[stats.name.partition("_")[0]] = int(json.loads(stats.read_text())["count"])
        except (ValueError, KeyError, TypeError):
            stats.unlink()  # cut while being written
    for path in folder.iterdir():
        if path.name == LOG_FILE or path.name.partition("_")[0].partition(".")[0] in finished:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return sum(finished.values())


def failure_log(shard_dir: Path) -> Path:
    """Where the img2dataset log of a shard's last failed attempt is kept (its attempt folder is gone)."""
    return shard_dir.parent / f"{shard_dir.name}.failed.log"


def _attempt(
    pending: pl.DataFrame, carried: list[str], options: DownloadOptions, target: Path, source: Path, kept_log: Path
) -> ShardTimeoutError | None:
    """Download ``pending`` into ``target``; returns the timeout to raise once a partly finished attempt is kept."""
    with atomic_dir(target) as tmp:
        url_list = tmp / "_input.parquet"
        write_parquet(pending.to_arrow(), url_list)
        log = tmp / LOG_FILE
        spec = {
            "img2dataset": options.img2dataset_args(url_list, tmp, carried),
            "limits": asdict(options.url_limits()),
        }
        run = _run_img2dataset(spec, log, options.shard_timeout)
        timed_out = None
        try:
            if run.timed_out:
                kept = _keep_finished(tmp)
                outcome = (
                    f"kept the {kept} rows of the sub-shards it had finished, the next run downloads the rest"
                    if kept
                    else "it had finished no sub-shard, nothing is kept"
                )
                timed_out = ShardTimeoutError(
                    f"downloading URL shard {source} took longer than shard_timeout={options.shard_timeout:g} s; "
                    f"stopped img2dataset and all its processes; {outcome}; log {kept_log}",
                    process_group=run.process_group,
                )
                if not kept:
                    raise timed_out
            elif run.exit_code != 0:
                tail = log.read_text(errors="replace")[-2000:]
                raise LaionAssetsError(
                    f"img2dataset failed (exit {run.exit_code}) for URL shard {source}; log {kept_log}:\n{tail}"
                )
            else:
                url_list.unlink()
            (tmp / RUN_FILE).write_text(json.dumps(asdict(run)) + "\n")
            try:
                read_stats(tmp)  # an attempt without stats did not finish: do not keep it
            except BadInputError as exc:
                raise LaionAssetsError(f"img2dataset did not finish URL shard {source}: {exc}; log {kept_log}") from exc
        except BaseException:
            if log.is_file():
                shutil.copyfile(log, kept_log)  # the attempt folder is about to go
            raise
        if timed_out is not None:
            shutil.copyfile(log, kept_log)
    return timed_out


@contextmanager
def shard_lock(shard_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a shard's downloads; a second download of the same shard fails at once."""
    lock = shard_dir.parent / f".{shard_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaionAssetsError(
                f"{shard_dir} is being downloaded by another process right now (lock {lock}); wait for it to end"
            ) from None
        yield  # closing the file releases the lock, also when this process is killed


def remove_leftovers(shard_dir: Path) -> list[Path]:
    """Remove the temporary folders that a killed download of this shard left behind (atomic_dir's); returns them.

    Only this shard's: ``.<shard>.*.tmp`` beside its folder and ``.attempt-NNN.*.tmp`` inside it (plus atomic_dir's
    ``.<shard>.old-PID`` when the folder itself is in place). Call it holding :func:`shard_lock`.
    """
    name = re.escape(shard_dir.name)
    places = [
        (shard_dir.parent, re.compile(rf"\.{name}{_TMP_NAME}")),
        (shard_dir, re.compile(rf"\.attempt-\d{{3}}{_TMP_NAME}")),
    ]
    if shard_dir.is_dir():
        places.append((shard_dir.parent, re.compile(rf"\.{name}\.old-\d+")))
    removed = []
    for folder, pattern in places:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if pattern.fullmatch(path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def download_shard(
    frame: pl.DataFrame, source: Path, shard_dir: Path, options: DownloadOptions | None = None
) -> ShardDownload:
    """Download the rows of a URL shard (from :func:`read_url_shard`) not fetched yet into ``shard_dir``."""
    options = options or DownloadOptions()
    options.validate()
    carried = [c for c in frame.columns if c not in ("URL", "TEXT")]
    kept_log = failure_log(shard_dir)
    with shard_lock(shard_dir):
        removed = remove_leftovers(shard_dir)
        timed_out = None
        if _is_new_source(source, shard_dir):
            # A new or replaced URL shard: start over in a fresh folder, swapped in only when the attempt finished.
            with atomic_dir(shard_dir) as tmp:
                write_parquet(frame.to_arrow(), tmp / SOURCE_FILE, {FINGERPRINT_KEY: fingerprint(source)})
                timed_out = _attempt(frame, carried, options, tmp / "attempt-000", source, kept_log)
            downloaded_now = frame.height
        else:
            done = row_status(shard_dir).filter(pl.col("status") == "success")[ROW_COLUMN]
            pending = frame.filter(~pl.col(ROW_COLUMN).is_in(done.implode()))
            downloaded_now = pending.height
            if pending.height:
                target = shard_dir / f"attempt-{len(attempt_dirs(shard_dir)):03d}"
                timed_out = _attempt(pending, carried, options, target, source, kept_log)
        if timed_out is not None:
            raise timed_out
        if downloaded_now:
            kept_log.unlink(missing_ok=True)  # the log of an earlier failure no longer describes this shard
        return replace(summarize(shard_dir, frame.height, downloaded_now), removed_leftovers=removed)


def summarize(shard_dir: Path, rows: int, downloaded_now: int = 0) -> ShardDownload:
    """Describe a shard's image folder: rows fetched, attempts, failures by reason, tars."""
    attempts = attempt_dirs(shard_dir)
    status = row_status(shard_dir)
    failed = status.filter(pl.col("status") != "success")
    reasons = failed.group_by("error_message").len().sort("len", descending=True)
    return ShardDownload(
        rows=rows,
        successes=int((status["status"] == "success").sum()),
        attempts=len(attempts),
        downloaded_now=downloaded_now,
        last=read_stats(attempts[-1]) if attempts and downloaded_now else None,
        failures_by_reason={str(r): int(n) for r, n in reasons.iter_rows()},
        tars=[t for a in attempts for t in sorted(a.glob("*.tar"))],
    )
