"""The search page in a real headless Chromium (acceptance 4): type a query, see results, toggle safe mode.

The service (uvicorn, in this process) serves a generated 768-d exact index whose rows are images from a second
127.0.0.1 server, with the tiny CLIP for text queries. The page's cards are compared with a brute-force search of
the same text embedding, so the test sees the page show exactly the right results, and an unsafe one go.
Screenshots land in the test's temp folder; their paths are printed and listed at the end of the run.
"""

import functools
import io
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import uvicorn
from PIL import Image

from laion_assets.core.paths import PROJECT_DIR
from laion_assets.images.clip_model import ClipSpec
from laion_assets.retrieval.catalog import Catalog, write_part
from laion_assets.retrieval.index_build import IndexParams, ShardVectors, build_index, load_index
from laion_assets.retrieval.queries import MAX_TEXT_CHARS, ClipEncoder
from laion_assets.retrieval.served import ServedIndex
from laion_assets.retrieval.service import ServiceState, create_app
from laion_assets_tests.browser import Browser, launch_for_test

DIM = 768
TINY = str(PROJECT_DIR / "data" / "models" / "tiny-clip" / "tiny-clip-768.json")
ROWS = (50, 50)
QUERY = "a red bicycle"
SHOWN = 40  # the page's default number of results
CARDS = "[...document.querySelectorAll('#results .result')]"


def unsafe(i: int) -> bool:
    """Every seventh row is unsafe and every eleventh has no punsafe (safe mode drops both)."""
    return i % 7 == 0 or i % 11 == 0


class _Images(BaseHTTPRequestHandler):
    """``/img/<id>.png``: a small image with a colour of its own per row."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        match = re.fullmatch(r"/img/(\d+)\.png", self.path)
        if match is None:
            self.send_error(404)
            return
        data = _png(int(match.group(1)))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output for failures
        pass


@functools.cache
def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), ((i * 53) % 256, (i * 97) % 256, (i * 151) % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    """The rows' images on 127.0.0.1: the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, images: str) -> Iterator[tuple[str, np.ndarray, ClipEncoder]]:
    """``laion-assets serve``'s app on a free port: (its URL, all embeddings in id order, the CLIP encoder)."""
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("page-index")
    vectors, keys, first = [], [], 0
    for s, rows in enumerate(ROWS):
        ids = np.arange(first, first + rows)
        v = rng.normal(size=(rows, DIM))
        vectors.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16))
        frame = pl.DataFrame(
            {
                "url": [f"{images}/img/{i}.png" for i in ids],
                "caption": [f"caption {i}" for i in ids],
                "hash": ids.astype(np.int64) * 7919,
                "aesthetic": rng.uniform(2, 8, rows).astype(np.float32),
                "punsafe": [None if i % 11 == 0 else (0.9 if i % 7 == 0 else 0.05) for i in ids],
            }
        ).with_columns(pl.col("punsafe").cast(pl.Float32))
        keys.append(f"{s:05d}")
        write_part(folder, keys[-1], frame)
        first += rows
    shards = [ShardVectors(k, v) for k, v in zip(keys, vectors, strict=True)]
    info = build_index(shards, folder, IndexParams("flat"))
    catalog = Catalog(folder, info)
    served = ServedIndex("page-index", load_index(folder, info), info, shards, catalog, None, "",
                         {"info": info.to_dict()})  # fmt: skip
    encoder = ClipEncoder(ClipSpec(TINY, "none", "cpu"))
    server = uvicorn.Server(
        uvicorn.Config(create_app(ServiceState({"page-index": served}, encoder)), host="127.0.0.1", port=0,
                       log_level="warning")
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", np.concatenate(vectors).astype(np.float32), encoder
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launch_for_test() as started:
        yield started


def cards(browser: Browser) -> list[dict]:
    """The result cards as shown: id, caption, scores line, unsafe mark, whether visible."""
    return browser.evaluate(
        f"""{CARDS}.map(c => ({{id: Number(c.dataset.id), caption: c.querySelector('.caption').textContent,
            scores: c.querySelector('.scores').textContent, unsafe: c.classList.contains('unsafe'),
            visible: c.offsetParent !== null}}))"""
    )


def images_in_view_loaded(browser: Browser) -> None:
    """Wait until every result image in the viewport has loaded (lazy images below it never load)."""
    browser.wait_for(
        f"""{CARDS}.length > 0 && [...document.querySelectorAll('#results img')]
            .filter(i => i.getBoundingClientRect().top < innerHeight)
            .every(i => i.complete && i.naturalWidth > 0)"""
    )


def test_query_shows_results_and_safe_mode_hides_the_unsafe_one(
    browser: Browser, service: tuple[str, np.ndarray, ClipEncoder], tmp_path: Path, record_property
) -> None:
    url, vectors, encoder = service
    sims = vectors @ encoder.text(QUERY)
    order = np.argsort(-sims, kind="stable")
    everything = order[:SHOWN].tolist()
    safe_only = [i for i in order.tolist() if not unsafe(i)][:SHOWN]

    browser.goto(f"{url}/")
    browser.wait_for("document.body.dataset.ready === '1'")  # the page read /config
    assert browser.evaluate("document.getElementById('index').value") == "page-index"
    assert "100 rows, 768-d, flat index" in browser.evaluate("document.getElementById('footer').textContent")
    assert browser.evaluate("document.getElementById('safe').checked") is True  # safe mode is the default

    browser.click("#safe")  # off, to see the unsafe results first
    browser.type_text("#query", QUERY)
    browser.click("#search")
    browser.wait_for(f"document.getElementById('status').textContent === '{SHOWN} results'")
    shown = cards(browser)
    assert [c["id"] for c in shown] == everything  # exactly the brute-force top 40
    assert shown[0]["caption"] == f"caption {everything[0]}"
    assert shown[0]["scores"].startswith(f"sim {sims[everything[0]]:.3f} · aesthetic ")
    assert all(c["visible"] for c in shown)
    gone = [c["id"] for c in shown if c["unsafe"]]
    assert gone == [i for i in everything if unsafe(i)] and gone  # the unsafe ones are marked, and there are some
    images_in_view_loaded(browser)
    before = browser.screenshot(tmp_path / "search-page-all.png")

    browser.click("#safe")  # on again: the page queries again with use_safety_model
    browser.wait_for(f"!document.querySelector('.result[data-id=\"{gone[0]}\"]')")
    browser.wait_for(f"document.getElementById('status').textContent === '{SHOWN} results' && {CARDS}.length")
    shown = cards(browser)
    assert [c["id"] for c in shown] == safe_only
    assert not any(c["unsafe"] for c in shown) and not set(gone) & {c["id"] for c in shown}
    images_in_view_loaded(browser)
    after = browser.screenshot(tmp_path / "search-page-safe.png")

    for path in (before, after):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # text and images, not a blank page
        print(f"screenshot: {path}")
        record_property("screenshot", str(path))
    assert browser.console_errors == []  # no script error, every image in view loaded


def test_a_bad_query_shows_the_services_message(browser: Browser, service: tuple[str, np.ndarray, ClipEncoder]):
    url, _, _ = service
    browser.goto(f"{url}/")
    browser.wait_for("document.body.dataset.ready === '1'")
    browser.console_errors.clear()
    browser.type_text("#query", "x" * (MAX_TEXT_CHARS + 1))  # past the service's limit: it answers 413
    browser.press("Enter")
    status = browser.wait_for(
        "document.getElementById('status').className === 'error' && document.getElementById('status').textContent"
    )
    assert status == f"error 413: text has {MAX_TEXT_CHARS + 1} characters; the limit is {MAX_TEXT_CHARS}"
    assert browser.evaluate(f"{CARDS}.length") == 0
    # Chromium logs the 413 as a failed load; nothing else went wrong.
    assert [e for e in browser.console_errors if "status of 413" not in e] == [], browser.console_errors
