import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from laion_assets.release.plots import (
    binned_histogram,
    comparison_png,
    comparison_series,
    histograms,
    histograms_figure,
    png_markdown,
    predicted_vs_true,
    predicted_vs_true_figure,
)
from laion_assets.selection.histogram import LABELS

OLD = {"aesthetic": "v1-linear@sha256:" + "a" * 64, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "b" * 64}
NEW = {**OLD, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "c" * 64}
COUNTS = {"aesthetic": dict.fromkeys(LABELS, 1), "AESTHETIC_SCORE": dict.fromkeys(LABELS, 2)}
BLUE = (31, 119, 180)  # matplotlib's first colour (C0), the colour of the first series' bars


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert "Software" not in image.info  # no version text chunk: the bytes depend on the data only
        return np.asarray(image.convert("RGB"))


def _frame_rows(pixels: np.ndarray) -> tuple[int, int]:
    """Top and bottom spine rows: the only dark lines crossing most of the picture."""
    dark = (pixels.max(axis=2) < 100).sum(axis=1)
    rows = np.flatnonzero(dark > pixels.shape[1] * 0.6)
    assert rows.size, "no axes frame drawn"
    return int(rows.min()), int(rows.max())


def _bar_top_headroom(png: bytes) -> float:
    """Gap between the tallest blue bar's top and the axes' top, as a fraction of the axes' height."""
    pixels = _pixels(png)
    top, bottom = _frame_rows(pixels)
    blue_rows = np.flatnonzero(np.all(pixels == BLUE, axis=2).any(axis=1))
    assert blue_rows.size, "no bar drawn"
    assert bottom >= blue_rows.max()  # bars stand on the x axis
    return (blue_rows.min() - top) / (bottom - top)


def test_histogram_bars_stay_inside_the_axes() -> None:
    # One bar far above the others: with the y limit at the tallest bar it would touch the frame.
    counts = [5, 1_000_000, 7, 0, 0, 0, 0, 0, 0, 3]
    png = histograms({"aesthetic": counts}, LABELS, "score histogram")
    assert _pixels(png).shape == (480, 640, 3)
    assert 0.05 < _bar_top_headroom(png) < 0.15
    gallery = binned_histogram(np.array([3, 40, 2_500, 9] * 10), (0.0, 10.0), "aesthetic: 2,552 rows", "aesthetic")
    assert _pixels(gallery).shape == (360, 640, 3)
    assert 0.05 < _bar_top_headroom(gallery) < 0.15


def test_histogram_axes_have_labels_ticks_title_and_a_legend_for_several_series() -> None:
    series, title = comparison_series(COUNTS, NEW, {"identities": OLD, "counts": COUNTS}, LABELS)
    assert list(series) == ["aesthetic", "AESTHETIC_SCORE before", "AESTHETIC_SCORE after"]
    assert title == "score histogram, before/after the predictor change of AESTHETIC_SCORE"
    figure = histograms_figure(series, LABELS, title)
    (ax,) = figure.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("score bucket", "rows")
    assert ax.get_title().replace("\n", " ") == title
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS)
    assert ax.get_ylim()[1] >= 2 * 1.1  # above the tallest bar (2 rows)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == list(series)
    alone = histograms_figure({"aesthetic": [1] * 10}, LABELS, "one series")
    assert not alone.legends and alone.axes[0].get_legend() is None


def test_comparison_png_is_deterministic_and_differs_by_series() -> None:
    png = comparison_png(COUNTS, NEW, {"identities": OLD, "counts": COUNTS}, LABELS)
    assert png == comparison_png(COUNTS, NEW, {"identities": OLD, "counts": COUNTS}, LABELS)
    assert _pixels(png).shape == (480, 640, 3)
    plain = comparison_png(COUNTS, OLD, None, LABELS)
    assert plain != png  # the plain one has two series, the comparison three (before/after + the other column)
    assert png_markdown(png, "h").startswith("![h](data:image/png;base64,iVBORw0KGgo")


def test_predicted_vs_true_shows_every_point_on_labelled_axes() -> None:
    true, predicted = [1.0, 2.0, 3.0, 9.5], [1.1, 2.2, 2.9, -0.5]
    png = predicted_vs_true(true, predicted, "validation: 4 rows")
    assert png == predicted_vs_true(true, predicted, "validation: 4 rows")
    assert _pixels(png).shape == (480, 640, 3)
    (ax,) = predicted_vs_true_figure(true, predicted, "validation: 4 rows").axes
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "true rating",
        "predicted rating",
        "validation: 4 rows",
    )
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < -0.5 and x1 > 9.5 and (y0, y1) == (x0, x1)  # every point inside, same scale on both axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["y = x", "validation rows (4)"]


@pytest.mark.parametrize("empty", [([], []), ([3.0], [3.0])])
def test_degenerate_inputs_still_draw(empty: tuple[list, list]) -> None:
    assert _pixels(predicted_vs_true(*empty)).shape == (480, 640, 3)
    assert _pixels(histograms({"a": [0] * 10}, LABELS, "zeros")).shape == (480, 640, 3)
    assert _pixels(binned_histogram([], (0.0, 1.0), "none")).shape == (360, 640, 3)


def test_loading_the_plot_modules_does_not_import_matplotlib() -> None:
    code = (
        "import sys, laion_assets.release.plots, laion_assets.release.gallery;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at load'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
