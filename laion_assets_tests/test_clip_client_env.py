"""clip-retrieval's own ``ClipClient`` loads from the test-only folder and speaks the wire format our service takes.

A stdlib HTTP server on 127.0.0.1 records what the client sends and answers as clip-retrieval's back end does. The
recorded bodies are the contract of ``POST /knn-service``: every field always present (``null`` for the query
kinds not used), the body JSON without a ``Content-Type`` header (``requests.post(data=json.dumps(...))``), and the
client posting to the URL it was given as is.
"""

import base64
import inspect
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from laion_assets_tests.clip_client import MODULE_NAME, clip_retrieval_dir, load_clip_client

ANSWER = [{"id": 1, "similarity": 0.5, "url": "u", "caption": "c"}]


class _Recorder(BaseHTTPRequestHandler):
    """Records each request (method, path, headers, JSON body) on the server and answers ``ANSWER``."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(  # type: ignore[attr-defined]
            {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        data = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output for failures
        pass


@pytest.fixture(scope="module")
def knn_service() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A recording stand-in for clip-retrieval's back end: (its /knn-service URL, the requests it got)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/knn-service", server.requests  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_the_client_is_clip_retrievals_own_file_loaded_without_its_package() -> None:
    module = load_clip_client()
    assert module.ClipClient.__module__ == MODULE_NAME == "clip_retrieval_client"
    source = Path(inspect.getfile(module.ClipClient))
    assert source == clip_retrieval_dir() / "clip_retrieval" / "clip_client.py"
    assert source.is_relative_to(Path(sys.prefix) / "clip-retrieval")
    assert (clip_retrieval_dir() / "clip_retrieval-2.45.0.dist-info").is_dir()
    assert "clip_retrieval" not in sys.modules  # the package __init__ (flask, faiss, torch) never ran
    assert [m.value for m in module.Modality] == ["image", "text"]
    assert load_clip_client() is module  # loaded once


def test_an_embedding_query_posts_clip_retrievals_documented_body(knn_service) -> None:
    url, requests = knn_service
    requests.clear()
    client = load_clip_client().ClipClient(url, "laion_aesthetics")
    assert client.query(embedding_input=[0.25, -0.5, 1.0]) == ANSWER
    (request,) = requests
    assert request["path"] == "/knn-service"
    # The defaults of ClipClient(url, indice_name): what our service sees from a client that sets nothing.
    assert request["body"] == {
        "text": None,
        "image": None,
        "image_url": None,
        "embedding_input": [0.25, -0.5, 1.0],
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "indice_name": "laion_aesthetics",
        "use_mclip": False,
        "aesthetic_score": 9,
        "aesthetic_weight": 0.5,
        "modality": "image",
        "num_images": 40,
        "num_result_ids": 40,
    }
    assert list(request["body"]) == [  # the order clip-retrieval writes them in
        "text",
        "image",
        "image_url",
        "embedding_input",
        "deduplicate",
        "use_safety_model",
        "use_violence_detector",
        "indice_name",
        "use_mclip",
        "aesthetic_score",
        "aesthetic_weight",
        "modality",
        "num_images",
        "num_result_ids",
    ]
    # No Content-Type: requests.post(data=<str>) sends none, so the service must read JSON without one.
    assert "Content-Type" not in request["headers"]


def test_text_image_and_image_url_queries_and_every_setting_reach_the_body(knn_service, tmp_path: Path) -> None:
    url, requests = knn_service
    requests.clear()
    module = load_clip_client()
    client = module.ClipClient(
        url,
        "other_index",
        use_mclip=True,
        aesthetic_score=5,
        aesthetic_weight=0.2,
        modality=module.Modality.TEXT,
        num_images=3,
        deduplicate=False,
        use_safety_model=False,
        use_violence_detector=False,
    )
    image = tmp_path / "query.jpg"
    image.write_bytes(b"\xff\xd8\xff not really a jpeg")
    client.query(text="a cat")
    client.query(image=str(image))  # a local file goes as base64 in "image"
    client.query(image="http://127.0.0.1:1/cat.jpg")  # an http(s) string goes as "image_url"
    bodies = [r["body"] for r in requests]
    settings = {
        "deduplicate": False,
        "use_safety_model": False,
        "use_violence_detector": False,
        "indice_name": "other_index",
        "use_mclip": True,
        "aesthetic_score": 5,
        "aesthetic_weight": 0.2,
        "modality": "text",
        "num_images": 3,
        "num_result_ids": 3,  # clip-retrieval always sends num_images here
    }
    none = {"text": None, "image": None, "image_url": None, "embedding_input": None}
    assert bodies == [
        {**none, "text": "a cat", **settings},
        {**none, "image": base64.b64encode(image.read_bytes()).decode(), **settings},
        {**none, "image_url": "http://127.0.0.1:1/cat.jpg", **settings},
    ]


def test_a_missing_install_says_what_to_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delitem(sys.modules, MODULE_NAME, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"make venv.*pip install --no-deps --target .* clip-retrieval==2\.45"):
        load_clip_client()
