"""A small generated image set served from 127.0.0.1, for ``make demo-urls``, the tests and ``bench/embed.py``.

The server answers ``/img/NAME`` with the file, and simulates the web's failures on purpose:
``/missing/NAME`` is a 404, ``/corrupt/NAME`` returns bytes that are not an image, ``/slow/NAME`` answers after
``slow_seconds``, and ``/flaky/NAME`` fails with a 503 the first time it is asked for, then succeeds.
Hostile servers too: ``/trickle/NAME`` sends its headers, then the file one byte every ``trickle_seconds``;
``/trickle-head/NAME`` trickles its headers the same way; ``/huge/NAME`` sends ``huge_bytes`` (2 GiB by default,
generated on the fly) with a ``Content-Length``, ``/huge-unsized/NAME`` the same without one.
Redirects out of the web: ``/to-file/NAME`` redirects to the served file's own ``file://`` URL, ``/to-ftp/NAME`` to
``ftp://127.0.0.1:9/NAME``.
Every request path is recorded, so a caller can tell exactly which URLs were fetched, and so is the number of bytes
each trickle or huge URL managed to send (after its status line) before the client hung up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

CORRUPT_BYTES = b"\xff\xd8\xff\xe0 this is not really a jpeg " * 8
HUGE_BYTES = 2 * 1024**3
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def write_images(folder: str | Path, count: int, seed: int = 0) -> list[str]:
    """Write ``count`` small generated photos-like images (JPEG and PNG, various sizes); returns their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        w, h = int(rng.integers(48, 320)), int(rng.integers(48, 320))
        y, x = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 255, size=3)
        freq = rng.uniform(0.01, 0.1, size=3)
        pixels = np.stack([(base[c] + 100 * np.sin(freq[c] * (x + 2 * y))) % 256 for c in range(3)], axis=-1)
        pixels += rng.normal(0, 8, size=pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        name = f"{i:05d}.png" if i % 4 == 3 else f"{i:05d}.jpg"
        image.save(folder / name, quality=90) if name.endswith(".jpg") else image.save(folder / name)
        names.append(name)
    return names


@dataclass
class ImageServer:
    """A running server: its base URL and the paths it was asked for."""

    base_url: str
    requests: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # bytes sent by trickle/huge URLs, by request path

    def url(self, name: str, kind: str = "img") -> str:
        """URL of an image served as ``kind``: img, or one of the failures and redirects the module docstring lists."""
        return f"{self.base_url}/{kind}/{name}"


@dataclass(frozen=True)
class _Hostile:
    trickle_seconds: float
    huge_bytes: int
    stop: threading.Event  # set when the server shuts down, so no trickle outlives it


def _handler(folder: Path, server: ImageServer, slow_seconds: float, hostile: _Hostile) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    asked: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with lock:
                server.requests.append(self.path)
                first = self.path not in asked
                asked.add(self.path)
            kind, _, name = self.path.lstrip("/").partition("/")
            path = folder / Path(name).name
            if kind == "missing" or not path.is_file():
                return self._send(404, b"not found", "text/plain")
            if kind == "flaky" and first:
                return self._send(503, b"try again", "text/plain")
            if kind in ("to-file", "to-ftp"):
                target = path.resolve().as_uri() if kind == "to-file" else f"ftp://127.0.0.1:9/{path.name}"
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if kind == "slow":
                time.sleep(slow_seconds)
            body = CORRUPT_BYTES if kind == "corrupt" else path.read_bytes()
            content_type = "image/png" if name.endswith(".png") else "image/jpeg"
            try:
                if kind in ("trickle", "trickle-head"):
                    return self._trickle(body, content_type, head=kind == "trickle-head")
                if kind in ("huge", "huge-unsized"):
                    return self._huge(content_type, sized=kind == "huge")
            except _GONE:
                return None  # the client gave up, as it should
            self._send(200, body, content_type)

        def _count(self, sent: int) -> None:
            with lock:
                server.sent[self.path] = sent

        def _trickle(self, body: bytes, content_type: str, head: bool) -> None:
            headers = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            self.wfile.write(b"HTTP/1.0 200 OK\r\n" + (b"" if head else headers))
            slow = headers + body if head else body  # then the rest, one byte at a time
            for sent in range(len(slow)):
                if hostile.stop.wait(hostile.trickle_seconds):
                    return
                self.wfile.write(slow[sent : sent + 1])
                self._count(sent + 1)

        def _huge(self, content_type: str, sized: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if sized:
                self.send_header("Content-Length", str(hostile.huge_bytes))
            self.end_headers()  # without a Content-Length the body ends when the connection closes (HTTP/1.0)
            block = bytes(1 << 20)
            sent = 0
            while sent < hostile.huge_bytes and not hostile.stop.is_set():
                chunk = block[: hostile.huge_bytes - sent]
                self.wfile.write(chunk)
                sent += len(chunk)
                self._count(sent)

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_images(
    folder: str | Path, slow_seconds: float = 1.0, trickle_seconds: float = 2.0, huge_bytes: int = HUGE_BYTES
) -> Iterator[ImageServer]:
    """Serve ``folder`` on 127.0.0.1 (a free port) in a background thread for the duration of the block."""
    state = ImageServer(base_url="")
    hostile = _Hostile(trickle_seconds, huge_bytes, threading.Event())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Path(folder), state, slow_seconds, hostile))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        hostile.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def url_frame(urls: list[str], seed: int = 0) -> pl.DataFrame:
    """A LAION-like URL shard for ``urls``: captions and plausible similarity/punsafe/pwatermark/LANGUAGE."""
    rng = np.random.default_rng(seed)
    n = len(urls)
    return pl.DataFrame(
        {
            "URL": urls,
            "TEXT": [f"a generated picture number {i}" for i in range(n)],
            "WIDTH": rng.integers(64, 1024, n).astype(np.float64),
            "HEIGHT": rng.integers(64, 1024, n).astype(np.float64),
            "similarity": rng.uniform(0.28, 0.4, n),
            "punsafe": rng.uniform(0, 0.3, n).astype(np.float32),
            "pwatermark": rng.uniform(0, 0.6, n).astype(np.float32),
            "LANGUAGE": ["en"] * n,
        }
    )
