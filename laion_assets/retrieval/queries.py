"""Turning a request's input into a query vector: an embedding, a base64 image, an image URL or a text.

Every bad input raises :class:`QueryError` with the HTTP status the service answers (4xx) and one clear sentence.
Images and texts go through the CLIP model (``images.clip_model``), loaded on the first query that needs it.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from laion_assets.core.errors import LaionAssetsError

if TYPE_CHECKING:
    from PIL import Image

    from laion_assets.images.clip_model import ClipSpec, LoadedClip

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000
URL_TIMEOUT_S = 10.0
MAX_TEXT_CHARS = 2000


class QueryError(LaionAssetsError):
    """A request the service refuses: ``status`` is the HTTP status (4xx), the message says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def unit(vector: np.ndarray, what: str) -> np.ndarray:
    """``vector`` as a float32 unit row; a zero or non-finite vector is a 400."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise QueryError(400, f"{what} has non-finite values (NaN or infinity)")
    norm = float(np.linalg.norm(v))
    if norm == 0.0 or not math.isfinite(norm):
        raise QueryError(400, f"{what} has norm {norm}: it cannot be normalised")
    return v / norm


def embedding_query(value: object, dim: int) -> np.ndarray:
    """The ``embedding_input`` of a request as a unit float32 vector of the index's width."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]  # clip-retrieval accepts [[...]] as well
    if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise QueryError(400, "embedding_input must be a list of numbers")
    if len(value) != dim:
        raise QueryError(400, f"embedding_input has {len(value)} values; this index holds {dim}-d embeddings")
    return unit(np.array(value, dtype=np.float64), "embedding_input")


def open_image(data: bytes, what: str) -> Image.Image:
    """Decode image bytes as RGB; too many bytes or pixels is a 413, undecodable data a 400."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise QueryError(413, f"{what} is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise QueryError(413, f"{what} is {image.width}x{image.height} pixels; the limit is {MAX_IMAGE_PIXELS}")
        return image.convert("RGB")
    except QueryError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise QueryError(400, f"{what} is not a readable image: {exc}") from exc


def image_bytes(value: object) -> bytes:
    """The ``image`` field of a request (base64, optionally a ``data:`` URL) as bytes."""
    if not isinstance(value, str):
        raise QueryError(400, "image must be a base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 8:
        raise QueryError(413, f"image is about {len(value) * 3 // 4} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QueryError(400, f"image is not valid base64: {exc}") from exc


def fetch_image(url: object, timeout: float = URL_TIMEOUT_S) -> bytes:
    """Download ``image_url`` (http or https only), refusing more than the byte limit."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise QueryError(400, f"image_url must be an http(s) URL, not {url!r}")
    request = urllib.request.Request(url, headers={"User-Agent": "laion-assets-serve"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_IMAGE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise QueryError(400, f"cannot fetch image_url {url}: {exc}") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise QueryError(413, f"image_url {url} is larger than {MAX_IMAGE_BYTES} bytes")
    return data


class ClipEncoder:
    """Texts and images to unit vectors with one CLIP model, loaded once on first use (thread-safe)."""

    def __init__(self, spec: ClipSpec, loader: Callable[[ClipSpec], LoadedClip] | None = None) -> None:
        self.spec = spec
        self._loader = loader
        self._clip: LoadedClip | None = None
        self._lock = threading.Lock()

    def clip(self) -> LoadedClip:
        """The loaded model (loaded on the first call)."""
        with self._lock:
            if self._clip is None:
                from laion_assets.images.clip_model import load_clip

                self._clip = (self._loader or load_clip)(self.spec)
            return self._clip

    def text(self, text: object) -> np.ndarray:
        """A caption's unit embedding."""
        if not isinstance(text, str) or not text.strip():
            raise QueryError(400, "text must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise QueryError(413, f"text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        clip = self.clip()
        with self._lock:
            return unit(clip.encode_texts([text]).numpy(), "the text's embedding")

    def image(self, image: Image.Image) -> np.ndarray:
        """An image's unit embedding (the model's own preprocessing)."""
        clip = self.clip()
        with self._lock:
            batch = clip.preprocess(image).unsqueeze(0)
            return unit(clip.encode_images(batch).numpy(), "the image's embedding")
