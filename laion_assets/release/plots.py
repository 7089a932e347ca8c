"""Small PNG plots drawn with matplotlib (Agg, no display): predicted vs true, and score histograms before/after.

Each plot is a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no display) under
matplotlib's default style (a user's ``matplotlibrc`` changes nothing), saved as PNG without the ``Software``
text chunk, so the same input gives the same bytes. matplotlib is imported inside the functions: loading the
Dagster definitions does not pay for it.
"""

from __future__ import annotations

import base64
import functools
import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import numpy as np

from laion_assets.selection.histogram_history import changed_columns

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
SIZE = (640, 480)  # pixels of the predicted-vs-true plot and of the score histogram
HEADROOM = 1.1  # the y axis ends 10 % above the tallest bar, so no bar touches the top

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _default_style(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` under matplotlib's default style, whatever the user's matplotlibrc says."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        import matplotlib.style

        # Artists read rcParams when they are made and savefig when it renders: the whole build and save runs
        # inside the context, so the same input gives the same picture on any machine with this matplotlib.
        with matplotlib.style.context("default"):
            return function(*args, **kwargs)

    return wrapper


def _figure(size: tuple[int, int]) -> Figure:
    """An empty figure of ``size`` pixels with one axes and constrained layout (labels never clipped)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    figure.add_subplot()
    return figure


def _title(ax: Axes, title: str) -> None:
    """Set the axes title, wrapped so that a long one (several changed predictors) is never cut at the edges."""
    ax.set_title(textwrap.fill(title, 56))


@_default_style
def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes, rendered by Agg, with no metadata that varies (no ``Software`` version chunk)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # Agg explicitly: no display, whatever backend matplotlib would pick
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


@_default_style
def predicted_vs_true_figure(true: np.ndarray, predicted: np.ndarray, title: str = "predicted vs true") -> Figure:
    """A scatter of predicted against true ratings with the y = x line, equal ranges on both axes."""
    true, predicted = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    both = np.concatenate([true, predicted]) if true.size else np.array([0.0, 1.0])
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05  # keep the extreme points off the frame
    figure = _figure(SIZE)
    ax = figure.axes[0]
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", linewidth=1, label="y = x")
    ax.scatter(true, predicted, s=9, color="C0", label=f"validation rows ({true.size})")
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="true rating", ylabel="predicted rating")
    _title(ax, title)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, linewidth=0.5, alpha=0.4)
    ax.legend(loc="upper left")
    return figure


def predicted_vs_true(true: np.ndarray, predicted: np.ndarray, title: str = "predicted vs true") -> bytes:
    """A scatter plot of predicted against true ratings with the y = x line, as PNG bytes."""
    return png_bytes(predicted_vs_true_figure(true, predicted, title))


@_default_style
def histograms_figure(series: Mapping[str, Sequence[int]], labels: Sequence[str], title: str) -> Figure:
    """Grouped bars, one colour per named series over the same buckets; a legend when there are several."""
    figure = _figure(SIZE)
    ax = figure.axes[0]
    positions = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for j, (name, values) in enumerate(series.items()):
        ax.bar(positions - 0.4 + (j + 0.5) * width, list(values), width, color=f"C{j % 10}", label=name)
    top = max([1, *(max(v) for v in series.values() if len(v))])
    ax.set_ylim(0, top * HEADROOM)
    ax.set_xticks(positions, list(labels))
    ax.set(xlabel="score bucket", ylabel="rows")
    _title(ax, title)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.grid(True, axis="y", linewidth=0.5, alpha=0.4)
    if len(series) > 1:  # below the axes, so that it never hides a bar
        figure.legend(loc="outside lower center", ncols=min(len(series), 2), frameon=False)
    return figure


def histograms(series: Mapping[str, Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    """Grouped bars, one colour per named series (e.g. ``before``/``after``) over the same buckets, as PNG bytes."""
    return png_bytes(histograms_figure(series, labels, title))


@_default_style
def binned_histogram_figure(
    counts: Sequence[int], value_range: tuple[float, float], title: str, xlabel: str, size: tuple[int, int]
) -> Figure:
    """Bars of ``counts`` in equal bins spanning ``value_range``, the x axis in values."""
    counts = np.asarray(counts, dtype=np.int64)
    edges = np.linspace(value_range[0], value_range[1], len(counts) + 1)
    figure = _figure(size)
    ax = figure.axes[0]
    ax.bar(edges[:-1], counts, np.diff(edges), align="edge", color="C0", edgecolor="white", linewidth=0.5)
    ax.set_xlim(value_range)
    ax.set_ylim(0, max(1, int(counts.max()) if counts.size else 1) * HEADROOM)
    ax.set(xlabel=xlabel, ylabel="rows")
    _title(ax, title)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.grid(True, axis="y", linewidth=0.5, alpha=0.4)
    return figure


def binned_histogram(
    counts: Sequence[int],
    value_range: tuple[float, float],
    title: str,
    xlabel: str = "value",
    size: tuple[int, int] = (640, 360),
) -> bytes:
    """Bars of ``counts`` in equal bins spanning ``value_range`` (a gallery's score histogram), as PNG bytes."""
    return png_bytes(binned_histogram_figure(counts, value_range, title, xlabel, size))


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (a data URI), e.g. in Dagster's metadata panel."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


Counts = dict[str, dict[str, int]]


def comparison_series(
    counts: Counts, identities: Mapping[str, str], previous: Mapping | None, labels: tuple[str, ...]
) -> tuple[dict[str, list[int]], str]:
    """The bar series and title of the score histogram: before/after for each column whose predictor changed."""
    changed = changed_columns(previous, identities)
    series: dict[str, list[int]] = {}
    for column, now in counts.items():
        if previous and column in changed and column in previous["counts"]:
            series[f"{column} before"] = [previous["counts"][column].get(label, 0) for label in labels]
            series[f"{column} after"] = [now.get(label, 0) for label in labels]
        else:
            series[column] = [now.get(label, 0) for label in labels]
    title = (
        f"score histogram, before/after the predictor change of {', '.join(changed)}" if changed else "score histogram"
    )
    return series, title


def comparison_png(
    counts: Counts, identities: Mapping[str, str], previous: Mapping | None, labels: tuple[str, ...]
) -> bytes:
    """Bars per bucket: before/after for each column whose predictor changed, else each column's current counts."""
    series, title = comparison_series(counts, identities, previous, labels)
    return histograms(series, labels, title)
