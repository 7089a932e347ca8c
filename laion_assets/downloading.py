"""Downloading one URL shard with img2dataset, keeping what succeeded and retrying only what failed.

A shard's image folder holds ``source.parquet`` (the URL shard with its ``laion_row`` numbers and a fingerprint
of the file it came from) and one ``attempt-NNN/`` folder per img2dataset run, each in img2dataset's webdataset
layout (``00000.tar``, ``00000.parquet``, ``00000_stats.json``). The first attempt downloads every row; a later
one downloads only the rows that no attempt has fetched yet, so the union of the attempts' tars holds every
success exactly once. A shard with nothing left to fetch is not downloaded again. Attempts are written to a
temporary folder and renamed when img2dataset has finished, so a killed run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laion_assets.atomic import atomic_dir, write_parquet
from laion_assets.errors import BadInputError, LaionAssetsError
from laion_assets.url_sources import ROW_COLUMN

SOURCE_FILE = "source.parquet"
FINGERPRINT_KEY = "laion_assets.url_source"
DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
# Run img2dataset in a child process: it installs a SIGINT handler (main thread only) and starts a spawn pool.
_RUNNER = "import json, sys; from img2dataset import download; download(**json.loads(sys.argv[1]))"


@dataclass(frozen=True)
class DownloadOptions:
    """img2dataset settings; the defaults are LAION's (keep-ratio resize to 384, no re-encode when smaller)."""

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

    def img2dataset_args(self, url_list: Path, output: Path, carried: list[str]) -> dict:
        """Keyword arguments of ``img2dataset.download`` for one attempt."""
        if self.distributor not in DISTRIBUTORS:
            raise BadInputError(f"distributor {self.distributor!r} is not one of {DISTRIBUTORS}")
        args = asdict(self)
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
    return AttemptStats(
        count=totals["count"],
        successes=totals["successes"],
        failed_to_download=totals["failed_to_download"],
        failed_to_resize=totals["failed_to_resize"],
        duration=max(ends) - min(starts),
        status=dict(status.most_common()),
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


def _run_img2dataset(args: dict, log: Path) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, json.dumps(args)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise LaionAssetsError(
            f"img2dataset failed (exit {proc.returncode}) for {args['url_list']}; log {log}:\n{tail}"
        )


def _attempt(pending: pl.DataFrame, carried: list[str], options: DownloadOptions, target: Path) -> None:
    with atomic_dir(target) as tmp:
        url_list = tmp / "_input.parquet"
        write_parquet(pending.to_arrow(), url_list)
        _run_img2dataset(options.img2dataset_args(url_list, tmp, carried), tmp / "img2dataset.log")
        url_list.unlink()
        read_stats(tmp)  # an attempt without stats did not finish: do not keep it


def download_shard(
    frame: pl.DataFrame, source: Path, shard_dir: Path, options: DownloadOptions | None = None
) -> ShardDownload:
    """Download the rows of a URL shard (from :func:`read_url_shard`) not fetched yet into ``shard_dir``."""
    options = options or DownloadOptions()
    carried = [c for c in frame.columns if c not in ("URL", "TEXT")]
    if _is_new_source(source, shard_dir):
        # A new or replaced URL shard: start over in a fresh folder, swapped in only when the attempt finished.
        with atomic_dir(shard_dir) as tmp:
            write_parquet(frame.to_arrow(), tmp / SOURCE_FILE, {FINGERPRINT_KEY: fingerprint(source)})
            _attempt(frame, carried, options, tmp / "attempt-000")
        downloaded_now = frame.height
    else:
        done = row_status(shard_dir).filter(pl.col("status") == "success")[ROW_COLUMN]
        pending = frame.filter(~pl.col(ROW_COLUMN).is_in(done.implode()))
        downloaded_now = pending.height
        if pending.height:
            _attempt(pending, carried, options, shard_dir / f"attempt-{len(attempt_dirs(shard_dir)):03d}")
    return summarize(shard_dir, frame.height, downloaded_now)


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
