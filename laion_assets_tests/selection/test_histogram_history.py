import io

from PIL import Image

from laion_assets.release.plots import comparison_png, png_markdown, predicted_vs_true
from laion_assets.selection.histogram import LABELS
from laion_assets.selection.histogram_history import changed_columns, previous_for, read_document

OLD = {"aesthetic": "v1-linear@sha256:" + "a" * 64, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "b" * 64}
NEW = {**OLD, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "c" * 64}
COUNTS = {"aesthetic": dict.fromkeys(LABELS, 1), "AESTHETIC_SCORE": dict.fromkeys(LABELS, 2)}


def test_previous_is_kept_across_rebuilds_until_the_next_change():
    first = {"counts": COUNTS, "identities": OLD, "previous": None}
    assert previous_for(first, OLD) is None  # same predictors: nothing to compare
    kept = previous_for(first, NEW)
    assert kept == {"identities": OLD, "counts": COUNTS}
    assert changed_columns(kept, NEW) == ["AESTHETIC_SCORE"]
    rebuilt = {"counts": COUNTS, "identities": NEW, "previous": kept}
    assert previous_for(rebuilt, NEW) == kept  # a rebuild with the same predictors keeps the before
    assert previous_for({}, NEW) is None


def test_comparison_png_draws_before_and_after(tmp_path):
    assert read_document(tmp_path / "absent.json") == {}
    png = comparison_png(COUNTS, NEW, {"identities": OLD, "counts": COUNTS}, LABELS)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (640, 480)
    plain = comparison_png(COUNTS, OLD, None, LABELS)
    assert plain != png  # the plain one has two series, the comparison three (before/after + the other column)
    assert png_markdown(png, "h").startswith("![h](data:image/png;base64,iVBORw0KGgo")


def test_predicted_vs_true_plot_is_a_png():
    png = predicted_vs_true([1.0, 2.0, 3.0], [1.1, 2.2, 2.9])
    assert Image.open(io.BytesIO(png)).size == (640, 480)
