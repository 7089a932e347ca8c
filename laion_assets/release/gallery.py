"""Static HTML galleries LAION-style and PNG score histograms, from the aesthetic-tags table.

Bucket pages have one section per score bucket, headed ``In bucket a - b there is P.PP% (N.NNM) samples:``
then sample images (10 integer buckets and 40 quarter-point buckets). Top/bottom pages show the rows with the
highest and lowest aesthetic, punsafe, pwatermark and similarity. Images are linked by URL, never downloaded.
Samples are chosen by hash order (mmh3 hashes are effectively random), so pages are reproducible.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_dir
from laion_assets.release.plots import binned_histogram
from laion_assets.selection.histogram import bucket_sentence

SCORE_RANGE = (0.0, 10.0)
PROB_RANGE = (0.0, 1.0)
# Columns with a PNG histogram and the range their bins cover.
HISTOGRAM_COLUMNS: dict[str, tuple[tuple[float, float], int]] = {
    "aesthetic": (SCORE_RANGE, 40),
    "AESTHETIC_SCORE": (SCORE_RANGE, 40),
    "punsafe": (PROB_RANGE, 20),
    "pwatermark": (PROB_RANGE, 20),
}
EXTREME_COLUMNS = ("aesthetic", "punsafe", "pwatermark", "similarity")
BUCKET_COLUMNS = ("aesthetic", "AESTHETIC_SCORE")
STEPS = {"10": 1.0, "40": 0.25}

_STYLE = (
    "body{font-family:sans-serif;margin:1em}h2{font-size:1.1em;margin-top:2em}"
    ".grid{display:flex;flex-wrap:wrap;gap:8px}figure{width:200px;margin:0}"
    "img{max-width:200px;max-height:200px}figcaption{font-size:.75em;overflow-wrap:anywhere}"
)


@dataclass(frozen=True)
class Bucket:
    """A half-open score interval ``[low, high)`` (the last one also takes everything above)."""

    index: int
    low: float
    high: float


def buckets(step: float, low: float = 0.0, high: float = 10.0) -> list[Bucket]:
    """Equal-width buckets from ``low`` to ``high``."""
    n = int(round((high - low) / step))
    return [Bucket(k, low + k * step, low + (k + 1) * step) for k in range(n)]


def bucket_expr(column: str, step: float, n: int, low: float = 0.0) -> pl.Expr:
    """Bucket index ``clip(floor((s - low) / step), 0, n - 1)``: the score histogram's rule, any width."""
    return ((pl.col(column).cast(pl.Float64) - low) / step).floor().clip(0, n - 1).cast(pl.Int64)


def _safe_url(url: str | None) -> str | None:
    if url is None or not url.lower().startswith(("http://", "https://")):
        return None
    return url


def _figure(row: dict, column: str) -> str:
    url = _safe_url(row.get("URL"))
    caption = html.escape(str(row.get("TEXT") or ""))[:200]
    value = row.get(column)
    label = f"{column}={value:.3f}" if isinstance(value, float) else f"{column}={value}"
    img = f'<img loading="lazy" src="{html.escape(url, quote=True)}" alt="">' if url else "<i>(no http URL)</i>"
    return f"<figure>{img}<figcaption>{html.escape(label)} · {caption}</figcaption></figure>"


def _page(title: str, body: list[str]) -> str:
    head = f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    return (
        head
        + f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def bucket_page(tags: pl.LazyFrame, column: str, step: float, per_bucket: int) -> str:
    """LAION's bucket gallery for one score column: a heading with share and count, then samples."""
    edges = buckets(step)
    idx = bucket_expr(column, step, len(edges)).alias("_bucket")
    scored = tags.filter(pl.col(column).is_not_null() & pl.col(column).is_finite()).with_columns(idx)
    counts = scored.group_by("_bucket").len().collect(engine="streaming")
    count_of = dict(zip(counts["_bucket"].to_list(), counts["len"].to_list(), strict=True))
    total = int(sum(count_of.values()))
    samples = (
        scored.select("_bucket", "hash", "URL", "TEXT", column)
        .sort("_bucket", "hash")
        .group_by("_bucket", maintain_order=True)
        .head(per_bucket)
        .collect(engine="streaming")
    )
    body = []
    for b in edges:
        rows = samples.filter(pl.col("_bucket") == b.index).to_dicts()
        body.append(f"<h2>{html.escape(bucket_sentence(b.low, b.high, int(count_of.get(b.index, 0)), total))}</h2>")
        body.append('<div class="grid">' + "".join(_figure(r, column) for r in rows) + "</div>")
    return _page(f"{column}: {len(edges)} buckets", body)


def extreme_page(tags: pl.LazyFrame, column: str, n: int, top: bool) -> str:
    """The ``n`` rows with the highest (``top``) or lowest value of ``column``; ties broken by hash."""
    rows = (
        tags.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
        .select("hash", "URL", "TEXT", column)
        .sort([column, "hash"], descending=[top, False])
        .head(n)
        .collect(engine="streaming")
        .to_dicts()
    )
    title = f"{'top' if top else 'bottom'} {n} by {column}"
    return _page(title, ['<div class="grid">' + "".join(_figure(r, column) for r in rows) + "</div>"])


def histogram_counts(tags: pl.LazyFrame, column: str, value_range: tuple[float, float], bins: int) -> np.ndarray:
    """Counts of ``column`` in ``bins`` equal bins over ``value_range`` (out-of-range values clipped in)."""
    step = (value_range[1] - value_range[0]) / bins
    idx = bucket_expr(column, step, bins, value_range[0]).alias("_bin")
    counted = (
        tags.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
        .select(idx)
        .group_by("_bin")
        .len()
        .collect(engine="streaming")
    )
    out = np.zeros(bins, dtype=np.int64)
    for k, v in counted.iter_rows():
        out[int(k)] = int(v)
    return out


def outside_range(tags: pl.LazyFrame, column: str, value_range: tuple[float, float]) -> tuple[int, int]:
    """How many finite values of ``column`` lie below and above ``value_range`` (drawn in the edge bars)."""
    value = pl.col(column)
    row = (
        tags.filter(value.is_not_null() & value.is_finite())
        .select((value < value_range[0]).sum().alias("below"), (value > value_range[1]).sum().alias("above"))
        .collect(engine="streaming")
    )
    return int(row["below"][0] or 0), int(row["above"][0] or 0)


def histogram_png(
    counts: np.ndarray, value_range: tuple[float, float], title: str, path: Path, xlabel: str = "value"
) -> Path:
    """Draw a bar chart of ``counts`` with matplotlib (640 x 360, same bytes for the same counts) and save it as PNG."""
    path.write_bytes(binned_histogram(counts, value_range, title, xlabel))
    return path


def write_galleries(tags: pl.LazyFrame, out: Path, per_bucket: int = 20, extremes: int = 50) -> dict[str, str]:
    """Write every page, the PNG histograms and ``index.html`` into ``out`` (replaced whole); returns name -> file."""
    names = tags.collect_schema().names()
    pages: dict[str, str] = {}
    with atomic_dir(out) as tmp:
        for column in BUCKET_COLUMNS:
            if column not in names:
                continue
            for label, step in STEPS.items():
                pages[f"{column} {label} buckets"] = f"{column}_buckets_{label}.html"
                (tmp / pages[f"{column} {label} buckets"]).write_text(bucket_page(tags, column, step, per_bucket))
        for column in EXTREME_COLUMNS:
            if column not in names:
                continue
            for top in (True, False):
                key = f"{'top' if top else 'bottom'} {column}"
                pages[key] = f"{'top' if top else 'bottom'}_{column}.html"
                (tmp / pages[key]).write_text(extreme_page(tags, column, extremes, top))
        for column, (value_range, bins) in HISTOGRAM_COLUMNS.items():
            if column not in names:
                continue
            pages[f"{column} histogram"] = f"histogram_{column}.png"
            counts = histogram_counts(tags, column, value_range, bins)
            title = f"{column}: {int(counts.sum()):,} rows"
            below, above = outside_range(tags, column, value_range)
            if below or above:
                # V1 is an unbounded linear head: its scores below 0 and above 10 are real and land in the edge bars.
                title += (
                    f" ({below:,} below {value_range[0]:g} and {above:,} above {value_range[1]:g} "
                    "are counted in the edge bars)"
                )
            histogram_png(counts, value_range, title, tmp / pages[f"{column} histogram"], xlabel=column)
        links = [f'<li><a href="{html.escape(f)}">{html.escape(k)}</a></li>' for k, f in pages.items()]
        (tmp / "index.html").write_text(_page("laion-assets galleries", ["<ul>", *links, "</ul>"]))
    return {"index": "index.html", **pages}
