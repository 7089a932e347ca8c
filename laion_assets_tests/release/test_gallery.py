import re
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from laion_assets.release.gallery import bucket_page, extreme_page, outside_range, write_galleries
from laion_assets.selection.histogram import bucket_sentence
from laion_assets.selection.tags import scan_tags
from laion_assets_tests.release_helpers import build


@pytest.fixture(scope="module")
def tags(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.LazyFrame:
    layout, _ = build(small_sample_session, tmp_path_factory.mktemp("viz") / "out")
    return scan_tags(layout)


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_bucket_pages_have_laion_headings(tags: pl.LazyFrame) -> None:
    frame = tags.collect()
    total = frame.height
    for step, n in ((1.0, 10), (0.25, 40)):
        page = bucket_page(tags, "aesthetic", step, per_bucket=3)
        headings = _headings(page)
        assert len(headings) == n
        # Count bucket k independently: clip(floor(s / step), 0, n - 1) == k.
        for k, heading in enumerate(headings):
            low, high = k * step, (k + 1) * step
            idx = (frame["aesthetic"] / step).floor().clip(0, n - 1)
            count = int((idx == k).sum())
            assert heading == bucket_sentence(low, high, count, total)
        assert headings[0].startswith("In bucket 0 - 1 there is" if n == 10 else "In bucket 0 - 0.25 there is")


def test_bucket_samples_fall_in_their_bucket(tags: pl.LazyFrame) -> None:
    page = bucket_page(tags, "AESTHETIC_SCORE", 1.0, per_bucket=4)
    sections = page.split("<h2>")[1:]
    for k, section in enumerate(sections):
        values = [float(v) for v in re.findall(r"AESTHETIC_SCORE=([-0-9.]+)", section)]
        assert len(values) <= 4
        low = k if k > 0 else float("-inf")  # the edge buckets also take scores below 0 / above 10
        high = k + 1 if k < 9 else float("inf")
        for v in values:  # printed with 3 decimals
            assert low - 1e-3 <= v <= high + 1e-3


def test_top_and_bottom_pages(tags: pl.LazyFrame) -> None:
    frame = tags.collect()
    for column in ("aesthetic", "punsafe", "pwatermark", "similarity"):
        top = [float(v) for v in re.findall(rf"{column}=([-0-9.]+)", extreme_page(tags, column, 5, top=True))]
        bottom = [float(v) for v in re.findall(rf"{column}=([-0-9.]+)", extreme_page(tags, column, 5, top=False))]
        assert top == pytest.approx(sorted(frame[column].to_list(), reverse=True)[:5], abs=1e-3)
        assert bottom == pytest.approx(sorted(frame[column].to_list())[:5], abs=1e-3)


def test_write_galleries(tags: pl.LazyFrame, tmp_path: Path) -> None:
    out = tmp_path / "viz"
    pages = write_galleries(tags, out, per_bucket=2, extremes=3)
    for name in pages.values():
        assert (out / name).is_file(), name
    index = (out / "index.html").read_text()
    for name in pages.values():
        if name != "index.html":
            assert f'href="{name}"' in index
    for column in ("aesthetic", "AESTHETIC_SCORE", "punsafe", "pwatermark"):
        with Image.open(out / f"histogram_{column}.png") as image:
            assert image.format == "PNG" and image.size == (640, 360)
    html = (out / "aesthetic_buckets_40.html").read_text()
    assert len(_headings(html)) == 40 and '<img loading="lazy" src="http' in html
    # Reproducible: a second run writes the same bytes.
    again = tmp_path / "viz2"
    write_galleries(tags, again, per_bucket=2, extremes=3)
    for name in pages.values():
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_unsafe_urls_and_text_are_escaped(tmp_path: Path) -> None:
    frame = pl.LazyFrame(
        {
            "hash": [1, 2],
            "URL": ["javascript:alert(1)", 'https://x.test/a"b.jpg'],
            "TEXT": ["<script>x</script>", "ok"],
            "aesthetic": [5.5, 6.5],
        }
    )
    page = bucket_page(frame, "aesthetic", 1.0, per_bucket=2)
    assert "javascript:" not in page and "<script>x" not in page and "&lt;script&gt;" in page
    assert 'src="https://x.test/a&quot;b.jpg"' in page


def test_edge_bars_say_how_many_scores_fall_outside_the_range(tags: pl.LazyFrame) -> None:
    frame = tags.collect()
    # Counted independently of the gallery's query: V1 scores below 0 and above 10 are normal (unbounded head).
    below, above = int((frame["aesthetic"] < 0).sum()), int((frame["aesthetic"] > 10).sum())
    assert below + above > 0, "the sample should hold V1 scores outside 0-10"
    assert outside_range(tags, "aesthetic", (0.0, 10.0)) == (below, above)
    assert outside_range(tags, "punsafe", (0.0, 1.0)) == (0, 0)
