"""Small PNG plots drawn with Pillow (no matplotlib): predicted vs true, and score histograms before/after."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from laion_assets.selection.histogram_history import changed_columns

_W, _H, _M = 640, 480, 56  # canvas and margin (pixels)
_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _frame(title: str, xlabel: str, ylabel: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((_M, _M // 2, _W - _M // 2, _H - _M), outline="black")
    draw.text((_M, 6), title, fill="black")
    draw.text((_W // 2 - 3 * len(xlabel), _H - 20), xlabel, fill="black")
    draw.text((4, _M // 2 - 14), ylabel, fill="black")
    return image, draw


def _ticks(draw: ImageDraw.ImageDraw, lo: float, hi: float, axis: str, n: int = 5) -> None:
    for value in np.linspace(lo, hi, n):
        frac = (value - lo) / (hi - lo) if hi > lo else 0.0
        if axis == "x":
            x = _M + frac * (_W - _M - _M // 2)
            draw.line((x, _H - _M, x, _H - _M + 4), fill="black")
            draw.text((x - 10, _H - _M + 6), f"{value:.3g}", fill="black")
        else:
            y = _H - _M - frac * (_H - _M - _M // 2)
            draw.line((_M - 4, y, _M, y), fill="black")
            draw.text((4, y - 5), f"{value:.3g}", fill="black")


def predicted_vs_true(true: np.ndarray, predicted: np.ndarray, title: str = "predicted vs true") -> bytes:
    """A scatter plot of predicted against true ratings with the y = x line, as PNG bytes."""
    true, predicted = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    both = np.concatenate([true, predicted]) if true.size else np.array([0.0, 1.0])
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    image, draw = _frame(title, "true rating", "predicted")
    _ticks(draw, lo, hi, "x")
    _ticks(draw, lo, hi, "y")

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            _M + (x - lo) / (hi - lo) * (_W - _M - _M // 2),
            _H - _M - (y - lo) / (hi - lo) * (_H - _M - _M // 2),
        )

    draw.line((*at(lo, lo), *at(hi, hi)), fill=(160, 160, 160), width=1)
    for x, y in zip(true, predicted, strict=True):
        px, py = at(x, y)
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=_COLORS[0])
    return _png(image)


def histograms(series: Mapping[str, Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    """Grouped bars, one colour per named series (e.g. ``before``/``after``) over the same buckets, as PNG bytes."""
    image, draw = _frame(title, "score bucket", "rows")
    top = max([1, *(max(v) for v in series.values() if len(v))])
    _ticks(draw, 0, top, "y")
    width = (_W - _M - _M // 2) / max(len(labels), 1)
    bar = width * 0.8 / max(len(series), 1)
    for i, label in enumerate(labels):
        x0 = _M + i * width + width * 0.1
        draw.text((x0, _H - _M + 6), label, fill="black")
        for j, values in enumerate(series.values()):
            height = values[i] / top * (_H - _M - _M // 2)
            draw.rectangle((x0 + j * bar, _H - _M - height, x0 + (j + 1) * bar - 1, _H - _M), fill=_COLORS[j % 4])
    for j, name in enumerate(series):
        draw.rectangle((_W - 150, 8 + 14 * j, _W - 140, 18 + 14 * j), fill=_COLORS[j % 4])
        draw.text((_W - 135, 7 + 14 * j), name, fill="black")
    return _png(image)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (a data URI), e.g. in Dagster's metadata panel."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


Counts = dict[str, dict[str, int]]


def comparison_png(
    counts: Counts, identities: Mapping[str, str], previous: Mapping | None, labels: tuple[str, ...]
) -> bytes:
    """Bars per bucket: before/after for each column whose predictor changed, else each column's current counts."""
    changed = changed_columns(previous, identities)
    series: dict[str, list[int]] = {}
    for column, now in counts.items():
        if previous and column in changed and column in previous["counts"]:
            series[f"{column} before"] = [previous["counts"][column].get(label, 0) for label in labels]
            series[f"{column} after"] = [now.get(label, 0) for label in labels]
        else:
            series[column] = [now.get(label, 0) for label in labels]
    title = f"score histogram, before/after the predictor change of {changed}" if changed else "score histogram"
    return histograms(series, labels, title)
