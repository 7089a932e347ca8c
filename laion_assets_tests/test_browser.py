"""Our DevTools driver (``browser.py``) on a small static page of its own, served by ``http.server`` on 127.0.0.1.

The page has a text field (its ``input`` listener counts characters), a button and Enter that add the text as a
list item, and a checkbox that hides the items marked unsafe, the same moves a page test makes on the search page.
One Chromium serves the module.
"""

import functools
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from laion_assets_tests.browser import MISSING, Browser, BrowserError, BrowserTimeout, launch_for_test

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>driver test</title>
<style>body { font: 16px sans-serif; margin: 2em } .hidden { display: none } li.unsafe { color: #b00 }</style>
</head><body>
<h1>Items</h1>
<form id="form"><input id="item" autocomplete="off"> <button id="add" type="submit">Add</button>
<span id="count">0</span></form>
<label><input id="safe" type="checkbox"> safe mode</label>
<ul id="items"></ul>
<script>
const field = document.getElementById("item");
field.addEventListener("input", () => { document.getElementById("count").textContent = field.value.length; });
function render() {
  const safe = document.getElementById("safe").checked;
  for (const li of document.querySelectorAll("#items li")) {
    li.classList.toggle("hidden", safe && li.classList.contains("unsafe"));
  }
}
document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const li = document.createElement("li");
  li.textContent = field.value;
  if (field.value.includes("unsafe")) li.classList.add("unsafe");
  document.getElementById("items").append(li);
  field.value = "";
  render();
});
document.getElementById("safe").addEventListener("change", render);
</script></body></html>
"""

# A page that goes wrong three ways: a console.error, an uncaught exception and an image that 404s.
BROKEN = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body><img src="missing.png">
<script>console.error("logged", 7); setTimeout(() => { throw new Error("thrown later"); }, 0);</script>
</body></html>
"""

VISIBLE = "[...document.querySelectorAll('#items li')].filter(li => li.offsetParent !== null).map(li => li.textContent)"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the test output for failures
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The static pages, served from a temp folder on 127.0.0.1 (a free port)."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    (root / "broken.html").write_text(BROKEN)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launch_for_test() as started:
        yield started


@pytest.fixture
def page(browser: Browser, site: str) -> Browser:
    """The item page freshly loaded, with the console errors of earlier tests forgotten."""
    browser.goto(f"{site}/index.html")
    browser.console_errors.clear()
    return browser


def test_typing_fires_input_events_and_click_and_enter_submit(page: Browser) -> None:
    page.type_text("#item", "pear")
    assert page.evaluate("document.getElementById('count').textContent") == "4"  # the page's input listener ran
    page.click("#add")
    assert page.wait_for("document.querySelectorAll('#items li').length === 1") is True
    page.type_text("#item", "apple")
    page.press("Enter")
    page.wait_for("document.querySelectorAll('#items li').length === 2")
    assert page.evaluate(VISIBLE) == ["pear", "apple"]
    assert page.evaluate("document.getElementById('item').value") == ""  # the submit handler cleared it
    page.type_text("#item", "plum")
    page.type_text("#item", "fig")  # replaces the content by default
    assert page.evaluate("document.getElementById('item').value") == "fig"
    page.type_text("#item", "s", clear=False)
    assert page.evaluate("document.getElementById('item').value") == "figs"
    assert page.console_errors == []


def test_checkbox_hides_and_shows_the_marked_items(page: Browser) -> None:
    for text in ("cat", "unsafe dog", "bird"):
        page.type_text("#item", text)
        page.press("Enter")
    page.wait_for("document.querySelectorAll('#items li').length === 3")
    page.click("#safe")
    assert page.wait_for(f"{VISIBLE}.length === 2 && {VISIBLE}") == ["cat", "bird"]
    assert page.evaluate("document.getElementById('safe').checked") is True
    page.click("#safe")
    assert page.wait_for(f"{VISIBLE}.length === 3 && {VISIBLE}") == ["cat", "unsafe dog", "bird"]


def test_evaluate_returns_json_values_and_awaits_promises(page: Browser) -> None:
    assert page.evaluate("({a: [1, 2.5, 'x', null, true]})") == {"a": [1, 2.5, "x", None, True]}
    assert page.evaluate("new Promise(resolve => setTimeout(() => resolve(42), 50))") == 42
    assert page.evaluate("undefined") is None
    assert page.url.endswith("/index.html")


def test_screenshot_writes_a_png_of_the_page(page: Browser, tmp_path: Path, record_property) -> None:
    page.type_text("#item", "a screenshot item")
    page.press("Enter")
    page.wait_for("document.querySelectorAll('#items li').length === 1")
    path = page.screenshot(tmp_path / "driver-page.png")
    print(f"screenshot: {path}")
    record_property("screenshot", str(path))  # listed at the end of the run (conftest.py)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk: the viewport's size
    assert (width, height) == (1280, 900)
    assert len(data) > 5_000  # rendered text, not a blank page
    full = page.screenshot(tmp_path / "driver-page-full.png", full_page=True)
    assert full.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driver-page-full.png", "driver-page.png"]  # no temp left


def test_errors_say_what_failed_and_where(page: Browser, site: str) -> None:
    with pytest.raises(BrowserError, match=r"TypeError: Cannot read properties of null \(reading 'x'\)"):
        page.evaluate("null.x")
    with pytest.raises(BrowserError, match="Error: refused"):
        page.evaluate("Promise.reject(new Error('refused'))")
    with pytest.raises(BrowserTimeout, match=r"waiting for 'window.never' on http://127\.0\.0\.1:\d+/index\.html"):
        page.wait_for("window.never", timeout=0.3)
    with pytest.raises(BrowserError, match="threw"):
        page.wait_for("document.querySelector('#nothing').textContent")
    with pytest.raises(BrowserError, match="no element matches '#nothing'"):
        page.click("#nothing")
    page.evaluate("document.getElementById('add').classList.add('hidden')")
    with pytest.raises(BrowserError, match="'#add' is not visible"):
        page.click("#add")
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BrowserError, match=f"could not open http://127.0.0.1:{port}/: net::ERR_CONNECTION_REFUSED"):
        page.goto(f"http://127.0.0.1:{port}/")
    page.goto(f"{site}/index.html")  # the browser still works afterwards
    assert page.evaluate("document.title") == "driver test"


def test_console_errors_uncaught_exceptions_and_failed_loads_are_collected(page: Browser, site: str) -> None:
    page.goto(f"{site}/broken.html")
    page.wait_for("document.readyState === 'complete'")
    errors = page.console_errors
    page.wait_for("new Promise(resolve => setTimeout(() => resolve(true), 100))")  # the later throw has landed
    assert "console.error: logged 7" in errors
    assert any(e.startswith("uncaught: Error: thrown later") and "/broken.html" in e for e in errors), errors
    assert any("404" in e and "missing.png" in e for e in errors), errors


def test_missing_chromium_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserError, match="^chromium is not installed: run scripts/install-chromium.sh$"):
        Browser()
    assert MISSING == "chromium is not installed: run scripts/install-chromium.sh"
    with pytest.raises(pytest.fail.Exception, match="^chromium is not installed"):
        launch_for_test()


def test_close_ends_the_process_group_and_removes_the_profile() -> None:
    started = launch_for_test()
    group, profile = started._process.pid, started._dir
    assert profile.is_dir() and started.evaluate("1 + 1") == 2
    started.close()
    started.close()  # twice is fine
    assert not profile.exists()
    states = subprocess.run(["ps", "-o", "stat=", "-g", str(group)], capture_output=True, text=True).stdout.split()
    assert [s for s in states if not s.startswith("Z")] == []  # zombies wait for init to reap them
