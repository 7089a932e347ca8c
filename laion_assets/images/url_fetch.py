"""Fetching one URL with real bounds inside img2dataset's workers, and the entry point of the img2dataset child.

img2dataset 1.47.0 reads every response whole (``urllib`` ``read()``) with only a per-socket-operation timeout: a
server that trickles a byte every few seconds never times out, and a 2 GiB body is read into memory. Its worker
threads fetch through the module function ``img2dataset.downloader.download_image``. :class:`BoundedDownloader`
wraps img2dataset's downloader and, in whichever process runs it (a multiprocessing, pyspark or ray worker: the
bounds travel pickled with it), replaces that function with :func:`fetch`: the same request, user agent and
X-Robots-Tag rule, but the body is read in chunks, a ``Content-Length`` or a body over ``max_url_bytes`` is refused,
and the URL gives up when ``url_deadline`` has passed (a watchdog thread shuts its socket down, so a trickle in the
TLS handshake or the headers is cut too). Only ``http`` and ``https`` are fetched, redirects included: urllib's
default opener would also read ``file://`` (a local file, or a FIFO that blocks forever, beyond the watchdog's
reach), ``ftp://`` and ``data:``. An image whose header declares more than ``max_image_pixels`` (width x height) is
refused before img2dataset decodes it: a file of a few hundred KiB can decode to gigabytes. Each failure becomes
img2dataset's ``error_message`` for that row.

The child process is ``python -c "from laion_assets.images.url_fetch import main; main()" SPEC_JSON``; img2dataset is
imported only there (it takes seconds to import). The child also sets ``OPENCV_IO_MAX_IMAGE_PIXELS`` to
``max_image_pixels`` before OpenCV is loaded, so that an image PIL cannot read the header of is still bounded by
OpenCV's own check (with OpenCV's message) in img2dataset's resizer, in the child and the workers it starts.
"""

from __future__ import annotations

import functools
import http.client
import importlib
import importlib.metadata
import inspect
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from PIL import Image

from laion_assets.core.errors import LaionAssetsError

# One underlying read at most per chunk (read1), so a trickle is noticed byte by byte rather than after 256 KiB.
CHUNK = 256 * 1024
USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"  # img2dataset's
WRITTEN_FOR = "1.47.0"
_FETCH_PARAMETERS = ["row", "timeout", "user_agent_token", "disallowed_header_directives"]
SCHEMES = ("http", "https")
# Read by OpenCV once, when it is loaded: set in the child before img2dataset (and cv2) is imported.
OPENCV_PIXELS_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


@dataclass(frozen=True)
class UrlLimits:
    """Bounds on one URL try: bytes of the body, seconds for the whole transfer, pixels of the image."""

    max_bytes: int
    deadline: float
    max_pixels: int

    def too_large(self, how: str) -> str:
        """The error message of a response over ``max_bytes`` (kept constant so failures group by reason)."""
        return f"larger than max_url_bytes={self.max_bytes} ({how})"

    @property
    def too_slow(self) -> str:
        """The error message of a URL that did not finish within ``deadline``."""
        return f"took longer than url_deadline={self.deadline:g} s"

    @property
    def too_many_pixels(self) -> str:
        """The error message of an image whose header declares more than ``max_pixels``."""
        return f"image larger than max_image_pixels={self.max_pixels} (width x height)"


def unsupported_scheme(scheme: str, redirected: bool = False) -> str:
    """The error message of a URL (or a redirect's target) that is neither http nor https."""
    what = f"unsupported URL scheme {scheme!r}" if scheme else "URL without a scheme"
    return f"{'redirected to ' if redirected else ''}{what} (only http and https are fetched)"


class _LimitExceeded(Exception):
    """A bound of :class:`UrlLimits` was hit; the message is the row's ``error_message``."""


class _Refused(Exception):
    """A URL or redirect whose scheme is not fetched; the message is the row's ``error_message``."""


class _Transfer:
    """One URL try: its deadline and duplicates of the sockets it opened (shutting one down cuts the transfer)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.sockets: list[socket.socket] = []


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on the same connection
    except OSError:
        pass


class _Watchdog:
    """One thread per process that cuts the connections of transfers whose deadline has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._transfers: set[_Transfer] = set()
        self._thread: threading.Thread | None = None

    def begin(self, transfer: _Transfer) -> None:
        """Watch ``transfer`` until :meth:`end`."""
        with self._cond:
            self._transfers.add(transfer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="laion-assets-url-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def watch(self, transfer: _Transfer, sock: socket.socket) -> None:
        """Add a connection of ``transfer`` (a duplicate, which stays valid when TLS wraps the socket)."""
        with self._cond:
            dup = sock.dup()
            transfer.sockets.append(dup)
            if transfer.expired:
                _shut(dup)

    def end(self, transfer: _Transfer) -> None:
        """Stop watching ``transfer`` and close its duplicates."""
        with self._cond:
            self._transfers.discard(transfer)
            for dup in transfer.sockets:
                dup.close()
            transfer.sockets.clear()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for transfer in self._transfers:
                    if not transfer.expired and transfer.deadline <= now:
                        transfer.expired = True
                        for dup in transfer.sockets:
                            _shut(dup)
                waits = [t.deadline - now for t in self._transfers if not t.expired]
                self._cond.wait(timeout=min(waits) if waits else None)


_WATCHDOG = _Watchdog()
_current = threading.local()  # the transfer of this worker thread, for the connections it opens


class _WatchedConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket the watchdog can cut (registered before any TLS handshake)."""

    def connect(self) -> None:
        """Connect, then hand the plain socket to the watchdog for this thread's transfer."""
        super().connect()
        transfer = getattr(_current, "transfer", None)
        if transfer is not None:
            _WATCHDOG.watch(transfer, self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedConnection):
    """HTTPS: ``HTTPSConnection.connect`` calls ``_WatchedConnection.connect`` before wrapping the socket."""


class _HTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_WatchedConnection, req, **kwargs)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_WatchedHTTPSConnection, req, **kwargs)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, refusing every target but http and https (urllib's own rule lets ftp through)."""

    def http_error_302(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> http.client.HTTPResponse | None:
        """Refuse a redirect to another scheme before anything is opened; else redirect as urllib does."""
        target = headers.get("location") or headers.get("uri")
        scheme = urllib.parse.urlsplit(target).scheme.lower() if target else ""
        if scheme and scheme not in SCHEMES:  # no scheme: a relative target, on the same http(s) server
            fp.close()
            raise _Refused(unsupported_scheme(scheme, redirected=True))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _RefuseOtherSchemes(urllib.request.BaseHandler):
    """What the opener does with a scheme it has no handler for: refuse it (urllib's UnknownHandler, clearer)."""

    def unknown_open(self, req: urllib.request.Request) -> None:
        """Refuse ``req``; reached only for schemes other than http and https."""
        raise _Refused(unsupported_scheme(req.type))


def _opener() -> urllib.request.OpenerDirector:
    """urlopen's default opener (proxies from the environment, redirects, HTTP errors) with http and https only.

    Built by hand: ``build_opener`` always adds urllib's File, FTP and Data handlers.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _RefuseOtherSchemes(),
        _HTTPHandler(),
        _HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _opener()


def _read_body(response: Any, limits: UrlLimits, transfer: _Transfer) -> io.BytesIO:
    declared = response.headers.get("Content-Length", "").strip()
    expected = int(declared) if declared.isdigit() and not getattr(response, "chunked", False) else None
    if expected is not None and expected > limits.max_bytes:
        raise _LimitExceeded(limits.too_large("Content-Length"))
    read = getattr(response, "read1", response.read)
    body = io.BytesIO()
    while True:
        if transfer.expired or time.monotonic() >= transfer.deadline:
            raise _LimitExceeded(limits.too_slow)
        chunk = read(CHUNK)
        if not chunk:
            break
        if body.tell() + len(chunk) > limits.max_bytes:
            raise _LimitExceeded(limits.too_large("body"))
        body.write(chunk)
    if expected is not None and body.tell() < expected:
        # read1 reports a cut body as a short one; urllib's read() raised IncompleteRead, so do we.
        raise http.client.IncompleteRead(body.getvalue(), expected - body.tell())
    body.seek(0)
    return body


def _too_many_pixels(body: io.BytesIO, limits: UrlLimits) -> bool:
    """Whether the image header in ``body`` declares more than ``limits.max_pixels`` (reads the header only)."""
    try:
        with Image.open(body) as image:  # lazy: PIL parses the header and decodes nothing
            width, height = image.size
    except Exception:  # PIL raises many kinds on broken headers (UnidentifiedImageError, SyntaxError, struct.error)
        return False  # not a header PIL reads: OpenCV's own bound (OPENCV_IO_MAX_IMAGE_PIXELS) applies when decoding
    finally:
        body.seek(0)
    return width * height > limits.max_pixels


def fetch(
    row: tuple[int, str],
    timeout: float,
    user_agent_token: str | None,
    disallowed_header_directives: set[str] | None,
    *,
    limits: UrlLimits,
) -> tuple[int, io.BytesIO | None, str | None]:
    """img2dataset's ``download_image`` under ``limits``: ``(key, image bytes or None, error message or None)``."""
    from img2dataset.downloader import is_disallowed  # imported here: only img2dataset's workers call fetch

    key, url = row
    agent = USER_AGENT
    if user_agent_token:
        agent += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    try:
        request = urllib.request.Request(url, data=None, headers={"User-Agent": agent})
    except ValueError:  # urllib finds no scheme in it
        return key, None, unsupported_scheme("")
    except Exception as err:  # not a string at all: the row's error_message, as in img2dataset
        return key, None, str(err)
    if request.type not in SCHEMES:  # the scheme urllib would dispatch on (after its own unwrapping of the URL)
        return key, None, unsupported_scheme(request.type)
    transfer = _Transfer(time.monotonic() + limits.deadline)
    _WATCHDOG.begin(transfer)
    _current.transfer = transfer
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if disallowed_header_directives and is_disallowed(
                response.headers, user_agent_token, disallowed_header_directives
            ):
                return key, None, "Use of image disallowed by X-Robots-Tag directive"
            body = _read_body(response, limits, transfer)
        if transfer.expired:  # a connection cut at the deadline can end like a complete body
            return key, None, limits.too_slow
        if _too_many_pixels(body, limits):
            return key, None, limits.too_many_pixels
        return key, body, None
    except Exception as err:  # every failure is the row's error_message, as in img2dataset
        return key, None, limits.too_slow if transfer.expired else str(err)
    finally:
        _current.transfer = None
        _WATCHDOG.end(transfer)


def _code_names(function: Any) -> set[str]:
    """Global names used by ``function`` and by the functions (lambdas) defined inside it."""
    names: set[str] = set()
    todo = [function.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


def check_img2dataset() -> None:
    """Fail loudly unless img2dataset's worker threads fetch through ``img2dataset.downloader.download_image``."""
    downloader = importlib.import_module("img2dataset.downloader")
    main_module = importlib.import_module("img2dataset.main")
    original = getattr(downloader, "download_image", None)
    if isinstance(original, functools.partial) and original.func is fetch:
        return  # installed already in this process
    problems = []
    if original is None or list(inspect.signature(original).parameters) != _FETCH_PARAMETERS:
        problems.append(f"download_image{'' if original is None else inspect.signature(original)} changed")
    retry = getattr(downloader, "download_image_with_retry", None)
    if retry is None or "download_image" not in _code_names(retry):
        problems.append("download_image_with_retry no longer calls download_image")
    shard = getattr(getattr(downloader, "Downloader", None), "download_shard", None)
    if shard is None or "download_image_with_retry" not in _code_names(shard):
        problems.append("Downloader.download_shard no longer calls download_image_with_retry")
    if getattr(main_module, "Downloader", None) is not getattr(downloader, "Downloader", None):
        problems.append("img2dataset.main no longer builds img2dataset.downloader.Downloader")
    if problems:
        version = importlib.metadata.version("img2dataset")
        raise LaionAssetsError(
            f"img2dataset {version} at {downloader.__file__} is not the one laion_assets.images.url_fetch was "
            f"written for ({WRITTEN_FOR}): {'; '.join(problems)}. The per-URL bounds (max_url_bytes, url_deadline) "
            f"cannot be enforced; install img2dataset=={WRITTEN_FOR} or update laion_assets/images/url_fetch.py."
        )


def install(limits: UrlLimits) -> None:
    """Make this process's img2dataset worker threads fetch with :func:`fetch` under ``limits``."""
    check_img2dataset()
    downloader = importlib.import_module("img2dataset.downloader")
    downloader.download_image = functools.partial(fetch, limits=limits)
    # fetch bounds the pixels itself; PIL's own bomb check would warn at 89 MP and refuse at 179 MP whatever the limit.
    Image.MAX_IMAGE_PIXELS = None


@dataclass
class BoundedDownloader:
    """img2dataset's ``Downloader`` that installs :func:`fetch` in the process that runs it (pickled to workers)."""

    downloader: Any
    limits: UrlLimits

    def __call__(self, row: Any) -> Any:
        """Download one img2dataset sub-shard (what the distributors call)."""
        install(self.limits)
        return self.downloader(row)


def _die_with_parent(interval: float = 1.0) -> None:
    """Kill this process group when the process that started it dies (a SIGKILLed step must leave no workers)."""
    if os.getpgrp() != os.getpid():
        return  # not the leader of a group of our own: never signal the caller's group
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="laion-assets-parent-watch", daemon=True).start()


def default_stop_signals() -> None:
    """Let SIGTERM and SIGINT stop this process and the workers it spawns, even if its parent ignored them.

    An ignored signal is inherited through exec (a step started from a background shell ignores SIGINT, some
    SIGTERM too): img2dataset's ``Pool.terminate()`` then SIGTERMs an idle pool worker that never dies, and joins it
    forever (seen: a finished shard whose downloader waited 12 minutes in ``_terminate_pool``).
    """
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the child process: run ``img2dataset.download`` with bounded fetching."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    default_stop_signals()
    _die_with_parent()
    limits = UrlLimits(**spec["limits"])
    if "cv2" in sys.modules:
        raise LaionAssetsError(f"OpenCV was loaded before {OPENCV_PIXELS_VARIABLE} could be set")
    os.environ[OPENCV_PIXELS_VARIABLE] = str(limits.max_pixels)  # inherited by img2dataset's spawned workers
    # Spark's python workers start `python3` from PATH unless told otherwise: in local mode that is often another
    # interpreter, without our packages; ours, unless the user chose one (a cluster's workers have their own).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    check_img2dataset()
    main_module = importlib.import_module("img2dataset.main")
    original = main_module.Downloader
    main_module.Downloader = lambda **kwargs: BoundedDownloader(original(**kwargs), limits)
    main_module.download(**spec["img2dataset"])
