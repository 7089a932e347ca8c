"""A headless Chromium driven over the DevTools protocol, for the web page tests (ours, no selenium/playwright).

``Browser()`` starts Debian's ``chromium`` (``scripts/install-chromium.sh``) headless with a throwaway profile,
attaches to its page over a WebSocket (``websockets``' sync client) and offers what a page test needs:
``goto``, ``evaluate``, ``wait_for``, ``type_text``, ``press``, ``click``, ``screenshot``. Input goes through
``Input.*`` (real key and mouse events, hit-tested like a user's), so the page's own listeners fire. The page's
console errors, uncaught exceptions and failed loads are collected in ``console_errors`` for tests to assert on.
Every wait has a timeout whose error says what was awaited and on which page.

    with Browser() as browser:
        browser.goto("http://127.0.0.1:8000/")
        browser.type_text("#query", "a cat")
        browser.press("Enter")
        browser.wait_for("document.querySelectorAll('.result').length > 0")
        browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

MISSING = "chromium is not installed: run scripts/install-chromium.sh"


class BrowserError(RuntimeError):
    """Chromium failed to start, a DevTools call failed, or the page raised."""


class BrowserTimeout(BrowserError):
    """Something awaited in the browser did not happen in time."""


class ProtocolError(BrowserError):
    """The DevTools protocol answered a call with an error (e.g. the page navigated away during it)."""


def launch_for_test(**options: Any) -> Browser:
    """A ``Browser`` for a test; fails the test (never skips it: CI installs chromium) when chromium is missing."""
    import pytest

    if shutil.which("chromium") is None:
        pytest.fail(MISSING, pytrace=False)
    return Browser(**options)


def chromium_path() -> str:
    """The ``chromium`` executable on PATH; raises with the install command when there is none."""
    path = shutil.which("chromium")
    if path is None:
        raise BrowserError(MISSING)
    return path


def _js_string(value: str) -> str:
    """``value`` as a JavaScript string literal."""
    return json.dumps(value)


class Browser:
    """One headless Chromium process with one page, driven over the DevTools protocol; a context manager."""

    def __init__(self, timeout: float = 15.0, width: int = 1280, height: int = 900) -> None:
        self.timeout = timeout
        self.console_errors: list[str] = []
        self.console: list[tuple[str, str]] = []  # (type, text) of every console call, errors included
        self.url = "about:blank"  # the main frame's URL, kept from navigation events (for error messages too)
        self._next_id = 0
        self._loaded = False
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._dir = Path(tempfile.mkdtemp(prefix="laion-assets-chromium-"))
        self._log = self._dir / "chromium.log"
        profile = self._dir / "profile"
        try:
            executable = chromium_path()
            with self._log.open("wb") as log:
                # Its own session (process group), so close() ends the zygote and renderers with it.
                self._process = subprocess.Popen(
                    [
                        executable,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        # Shared memory in /tmp: a container's /dev/shm may be tiny (64 MB under Docker), and
                        # Debian's launcher, which would add this itself, misreads findmnt on some machines.
                        "--disable-dev-shm-usage",
                        "--remote-debugging-port=0",
                        f"--user-data-dir={profile}",
                        f"--window-size={width},{height}",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-extensions",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--metrics-recording-only",
                        "--mute-audio",
                        "about:blank",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            port = self._devtools_port(profile / "DevToolsActivePort")
            # Entered as a context manager (websockets 17 deprecates a bare connect()); closed by close().
            self._ws = self._stack.enter_context(
                connect(self._page_socket(port), max_size=None, open_timeout=timeout, ping_interval=None)
            )
            for domain in ("Page", "Runtime", "Log"):
                self._call(f"{domain}.enable")
            # The viewport exactly (the window size includes the headless window's frame).
            self._call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start and the protocol ----------------------------------------------------------------------------------

    def _log_tail(self) -> str:
        """The last lines Chromium wrote to stderr, for start errors."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def _devtools_port(self, port_file: Path) -> int:
        """The DevTools port Chromium picked (``--remote-debugging-port=0``), read from its DevToolsActivePort file."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode} on start:\n{self._log_tail()}")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            if len(lines) >= 2:  # the port, then the browser's WebSocket path: written once complete
                return int(lines[0])
            time.sleep(0.05)
        raise BrowserTimeout(
            f"chromium did not open its DevTools port within {self.timeout:g} s ({port_file}):\n{self._log_tail()}"
        )

    def _page_socket(self, port: int) -> str:
        """The WebSocket URL of the page target Chromium opened on start."""
        deadline = time.monotonic() + self.timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as answer:
                targets = json.load(answer)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            if time.monotonic() > deadline:
                raise BrowserTimeout(f"chromium opened no page target within {self.timeout:g} s: {targets}")
            time.sleep(0.05)

    def _handle_event(self, message: dict[str, Any]) -> None:
        """Keep what tests assert on: console calls, uncaught exceptions, failed loads, and the load event."""
        method, params = message.get("method"), message.get("params", {})
        if method == "Page.loadEventFired":
            self._loaded = True
        elif method == "Page.frameNavigated" and not params.get("frame", {}).get("parentId"):
            self.url = params["frame"]["url"]
        elif method == "Page.navigatedWithinDocument":
            self.url = params.get("url", self.url)
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self.console.append((params.get("type", ""), text))
            if params.get("type") in ("error", "assert"):
                self.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(f"uncaught: {_exception_text(params.get('exceptionDetails', {}))}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            # Failed resource loads (404s, refused connections) land here; the favicon Chromium asks for on its own
            # is the browser's request, not the page's.
            if entry.get("level") == "error" and not entry.get("url", "").endswith("/favicon.ico"):
                self.console_errors.append(
                    f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}"
                )

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message within ``timeout`` seconds (events handled on the way), or None."""
        assert self._ws is not None, "the browser is closed"
        try:
            message = json.loads(self._ws.recv(timeout=max(timeout, 0.001)))
        except TimeoutError:
            return None
        if "method" in message:
            self._handle_event(message)
        return message

    def _call(self, method: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result, handling the events that arrive meanwhile."""
        assert self._ws is not None, "the browser is closed"
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (left := deadline - time.monotonic()) > 0:
            message = self._receive(left)
            if message is not None and message.get("id") == call_id:
                if "error" in message:
                    raise ProtocolError(f"{method} failed on {self.url}: {message['error'].get('message')}")
                return message.get("result", {})
        raise BrowserTimeout(f"no answer to {method} within {timeout or self.timeout:g} s on {self.url}")

    # -- what tests use ------------------------------------------------------------------------------------------

    def goto(self, url: str, timeout: float | None = None) -> None:
        """Open ``url`` and wait for its load event; raises on a failed navigation (refused, DNS, bad URL)."""
        timeout = self.timeout if timeout is None else timeout
        self._loaded = False
        result = self._call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while not self._loaded:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserTimeout(f"{url} did not finish loading within {timeout:g} s (now at {self.url})")
            self._receive(left)
        # A late load event of the page before (e.g. the error page of a refused navigation) can set the flag first:
        # done only when the document is the one asked for and complete.
        self.wait_for(
            f"document.readyState === 'complete' && location.href === new URL({_js_string(url)}).href",
            timeout=max(deadline - time.monotonic(), 1.0),
        )

    def _evaluate_raw(self, expression: str, timeout: float | None = None) -> dict[str, Any]:
        return self._call(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited); raises with the JS message if it throws."""
        result = self._evaluate_raw(expression)
        if "exceptionDetails" in result:
            raise BrowserError(
                f"JavaScript error in {expression!r} on {self.url}: {_exception_text(result['exceptionDetails'])}"
            )
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float | None = None, interval: float = 0.05) -> Any:
        """Poll a JavaScript expression until it is truthy and return its value.

        A condition that throws raises at once (write ``?.`` for elements that may not exist yet); a page that is
        navigating meanwhile is polled again.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        probe = f"(async () => {{ const v = await ({condition}); return [!!v, v]; }})()"
        while True:
            try:
                result = self._evaluate_raw(probe)
            except ProtocolError:  # the execution context went away with a navigation: try again on the new one
                result = {}
            if "exceptionDetails" in result:
                raise BrowserError(
                    f"the condition {condition!r} threw on {self.url}: {_exception_text(result['exceptionDetails'])}"
                )
            ok, value = result.get("result", {}).get("value") or (False, None)
            if ok:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                errors = f"; console errors: {self.console_errors}" if self.console_errors else ""
                raise BrowserTimeout(f"timed out after {timeout:g} s waiting for {condition!r} on {self.url}{errors}")
            self._receive(min(interval, left))  # handles events while waiting

    def _element_box(self, selector: str) -> tuple[float, float]:
        """The viewport centre of the element ``selector`` matches, scrolled into view; raises if none or hidden."""
        box = self.evaluate(
            f"""(() => {{
                const el = document.querySelector({_js_string(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: "center", inline: "center"}});
                const r = el.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height];
            }})()"""
        )
        if box is None:
            raise BrowserError(f"no element matches {selector!r} on {self.url}")
        x, y, width, height = box
        if width <= 0 or height <= 0:
            raise BrowserError(f"{selector!r} is not visible (size {width}x{height}) on {self.url}")
        return x, y

    def click(self, selector: str) -> None:
        """Click the centre of the element ``selector`` matches with real mouse events (hit-tested like a user)."""
        x, y = self._element_box(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self._call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def type_text(self, selector: str, text: str, clear: bool = True) -> None:
        """Focus the field ``selector`` matches and type ``text`` into it (``input`` events fire); replaces its
        content unless ``clear`` is False."""
        self.click(selector)
        focused = self.evaluate(
            f"""(() => {{
                const el = document.querySelector({_js_string(selector)});
                el.focus();
                if ({json.dumps(clear)} && el.select) el.select();
                return document.activeElement === el;
            }})()"""
        )
        if not focused:
            raise BrowserError(f"{selector!r} did not take the focus on {self.url}")
        self._call("Input.insertText", text=text)

    def press(self, key: str) -> None:
        """Press and release one key on the focused element: ``Enter``, ``Tab``, ``Escape``, ``Backspace``."""
        codes = {"Enter": (13, "\r"), "Tab": (9, ""), "Escape": (27, ""), "Backspace": (8, "")}
        if key not in codes:
            raise ValueError(f"press knows {sorted(codes)}, not {key!r}")
        code, text = codes[key]
        common = {"key": key, "code": key, "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}
        self._call("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        self._call("Input.dispatchKeyEvent", type="keyUp", **common)

    def screenshot(self, path: str | os.PathLike[str], full_page: bool = False) -> Path:
        """Save the viewport (or the whole page) as PNG at ``path`` (written to a temp file, then renamed)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self._call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self._call("Page.captureScreenshot", **params)["data"])
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    def close(self) -> None:
        """End Chromium (its whole process group) and remove its profile; safe to call twice."""
        self._ws = None
        try:
            self._stack.close()
        except Exception:  # the browser may be gone already; closing must still clean up
            pass
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if process is not None:
            # The zygote and renderers may outlive the leader for a moment; the dead ones stay zombies until init
            # reaps them, so wait for the live ones only.
            deadline = time.monotonic() + 5
            while (live := _live_members(process.pid)) and time.monotonic() < deadline:
                for pid in live:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)
        shutil.rmtree(self._dir, ignore_errors=True)


def _live_members(group: int) -> list[int]:
    """The processes of process group ``group`` that are not zombies (read from /proc)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]  # the name in parentheses may hold spaces
        if int(pgrp) == group and state != "Z":
            live.append(int(entry.name))
    return live


def _remote_text(obj: dict[str, Any]) -> str:
    """A console argument (a DevTools RemoteObject) as text."""
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


def _exception_text(details: dict[str, Any]) -> str:
    """The message of a DevTools ExceptionDetails: the thrown error's description, else its text."""
    exception = details.get("exception") or {}
    text = exception.get("description") or exception.get("value") or details.get("text") or "exception"
    # Only a script's own errors carry a URL; a line number inside an evaluated expression would mislead.
    where = f" ({details['url']}:{details.get('lineNumber', 0) + 1})" if details.get("url") else ""
    return f"{str(text).splitlines()[0]}{where}"
