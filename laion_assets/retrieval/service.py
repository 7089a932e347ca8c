"""``laion-assets serve``: clip-retrieval's back-end API over our kNN index, our search page and the galleries.

Routes (clip-retrieval's, so its ``ClipClient`` and front end work unchanged):
``POST /knn-service`` (text, image, image_url or embedding_input -> results), ``GET /indices-list``,
``POST /metadata`` (ids -> metadata); ours: ``GET /`` (the search page), ``GET /config`` (what the page needs),
``GET /health`` and ``/galleries/`` (the data root's ``viz/`` pages). Starlette: the ASGI toolkit
dagster-webserver already brings (no new dependency), with a test client and static files; uvicorn serves it.
Every bad request gets a 4xx with ``{"error": "..."}``; the service keeps answering.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from laion_assets.core.errors import BadInputError, LaionAssetsError
from laion_assets.retrieval.queries import (
    MAX_IMAGE_BYTES,
    ClipEncoder,
    QueryError,
    embedding_query,
    fetch_image,
    image_bytes,
    open_image,
)
from laion_assets.retrieval.search import SearchOptions, guided_query, metadata_of, run_query
from laion_assets.retrieval.served import ServedIndex

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
MAX_BODY = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024  # a base64 image at the limit plus the other fields
MAX_RESULTS = 10_000
IGNORED = "use_violence_detector"  # accepted for clip-retrieval's clients; no violence detector is served


@dataclass
class ServiceState:
    """What the app serves: indices by name (the first is the default), the encoder, the galleries folder."""

    indices: Mapping[str, ServedIndex]
    encoder: ClipEncoder | None = None
    galleries: Path | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise QueryError(413, f"request body is {declared} bytes; the limit is {MAX_BODY}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise QueryError(413, f"request body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(bytes(body) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QueryError(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise QueryError(400, "request body must be a JSON object")
    return data


def _int(data: Mapping, name: str, default: int, low: int, high: int) -> int:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(400, f"{name} must be an integer, not {value!r}")
    try:
        number = int(value)
    except ValueError as exc:
        raise QueryError(400, f"{name} must be an integer, not {value!r}") from exc
    if not low <= number <= high:
        raise QueryError(400, f"{name} must be between {low} and {high}, not {number}")
    return number


def _weight(data: Mapping) -> float | None:
    value = data.get("aesthetic_weight")
    if value is None or value == "":
        return None
    try:
        weight = float(value)
    except (TypeError, ValueError) as exc:
        raise QueryError(400, f"aesthetic_weight must be a number, not {value!r}") from exc
    if not np.isfinite(weight):
        raise QueryError(400, f"aesthetic_weight must be finite, not {value!r}")
    return weight


def _flag(data: Mapping, name: str) -> bool:
    value = data.get(name, False)
    if value in (None, ""):
        return False
    if not isinstance(value, bool | int):
        raise QueryError(400, f"{name} must be true or false, not {value!r}")
    return bool(value)


def pick_index(state: ServiceState, data: Mapping) -> ServedIndex:
    """The index a request names (``indice_name``), or the first one; an unknown name is a 404."""
    name = data.get("indice_name")
    if name in (None, ""):
        return next(iter(state.indices.values()))
    if not isinstance(name, str) or name not in state.indices:
        raise QueryError(404, f"unknown index {name!r}; this service has {sorted(state.indices)}")
    return state.indices[name]


def _encoder(state: ServiceState, what: str) -> ClipEncoder:
    if state.encoder is None:
        raise QueryError(400, f"{what} queries need a CLIP model; this service was started without one (--clip-model)")
    return state.encoder


def query_vector(state: ServiceState, served: ServedIndex, data: Mapping) -> np.ndarray:
    """The request's query as a unit vector: text, image, image_url, then embedding (clip-retrieval's order)."""
    if data.get("use_mclip"):
        raise QueryError(400, "use_mclip: no multilingual CLIP is served; send the text to the CLIP model instead")
    if data.get("text") not in (None, ""):
        vector = _encoder(state, "text").text(data["text"])
    elif data.get("image") not in (None, ""):
        vector = _encoder(state, "image").image(open_image(image_bytes(data["image"]), "image"))
    elif data.get("image_url") not in (None, ""):
        encoder = _encoder(state, "image_url")
        vector = encoder.image(open_image(fetch_image(data["image_url"]), f"image_url {data['image_url']}"))
    elif data.get("embedding_input") not in (None, ""):
        return embedding_query(data["embedding_input"], served.dim)
    else:
        raise QueryError(400, "give one of text, image, image_url or embedding_input")
    if vector.shape[0] != served.dim:
        raise QueryError(
            409, f"the CLIP model gives {vector.shape[0]}-d embeddings; index {served.name!r} holds {served.dim}-d"
        )
    return vector


def search_options(data: Mapping) -> SearchOptions:
    """The request's options with clip-retrieval's defaults; a value out of range is a 400."""
    modality = data.get("modality") or "image"
    if modality != "image":
        raise QueryError(400, f"modality {modality!r}: this service indexes image embeddings only (use 'image')")
    num_images = _int(data, "num_images", 40, 1, MAX_RESULTS)
    score = data.get("aesthetic_score")
    return SearchOptions(
        num_images=num_images,
        num_result_ids=max(_int(data, "num_result_ids", num_images, 1, MAX_RESULTS), num_images),
        deduplicate=_flag(data, "deduplicate"),
        use_safety_model=_flag(data, "use_safety_model"),
        deduplicate_urls=_flag(data, "deduplicate_urls"),
        aesthetic_score=None if score in (None, "") else _int(data, "aesthetic_score", 9, 0, 9),
        aesthetic_weight=_weight(data),
    )


def knn(state: ServiceState, data: Mapping) -> list[dict[str, object]]:
    """Answer one ``/knn-service`` request (blocking: runs in a worker thread)."""
    served = pick_index(state, data)
    options = search_options(data)
    query = query_vector(state, served, data)
    query = guided_query(query, served.ratings, options.aesthetic_score, options.aesthetic_weight)
    return run_query(served.search, served.catalog, query, options)


def create_app(state: ServiceState) -> Starlette:
    """The ASGI app serving ``state``."""
    if not state.indices:
        raise LaionAssetsError("serve needs at least one index")

    async def knn_service(request: Request) -> Response:
        try:
            data = await _json_body(request)
            results = await run_in_threadpool(knn, state, data)
        except QueryError as exc:
            return _error(exc.status, str(exc))
        except LaionAssetsError as exc:
            return _error(503, str(exc))
        headers = {"X-Ignored-Fields": IGNORED} if data.get(IGNORED) else {}
        return JSONResponse(results, headers=headers)

    async def metadata(request: Request) -> Response:
        try:
            data = await _json_body(request)
            served = pick_index(state, data)
            ids = data.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise QueryError(400, "ids must be a list of integers")
            if len(ids) > MAX_RESULTS:
                raise QueryError(413, f"{len(ids)} ids asked; the limit is {MAX_RESULTS}")
            try:
                return JSONResponse(await run_in_threadpool(metadata_of, served.catalog, ids))
            except BadInputError as exc:  # an id outside the index
                raise QueryError(404, str(exc)) from exc
        except QueryError as exc:
            return _error(exc.status, str(exc))

    async def indices_list(request: Request) -> Response:
        return JSONResponse(list(state.indices))

    async def config(request: Request) -> Response:
        return JSONResponse(
            {
                "indices": {
                    name: {
                        "rows": s.catalog.rows,
                        "dim": s.dim,
                        "kind": s.record.get("info", {}).get("kind"),
                        "recall_at_10": s.record.get("info", {}).get("recall_at_10"),
                        "aesthetic": s.ratings is not None,
                        "ratings_from": s.ratings_from,
                    }
                    for name, s in state.indices.items()
                },
                "text": state.encoder is not None,
                "galleries": "/galleries/index.html" if state.galleries is not None else None,
            }
        )

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html")

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", page),
        Route("/knn-service", knn_service, methods=["POST"]),
        Route("/metadata", metadata, methods=["POST"]),
        Route("/indices-list", indices_list),
        Route("/config", config),
        Route("/health", health),
    ]
    if state.galleries is not None and state.galleries.is_dir():
        routes.append(Mount("/galleries", app=StaticFiles(directory=state.galleries, html=True), name="galleries"))
    # clip-retrieval's hosted front end calls back ends from the browser, so cross-origin reads are allowed.
    middleware = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"])]
    return Starlette(routes=routes, middleware=middleware)


def serve(state: ServiceState, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the service until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(create_app(state), host=host, port=port, log_level="info")
