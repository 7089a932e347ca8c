"""A tiny Hub-compatible HTTP endpoint on 127.0.0.1 for publishing tests (stdlib only).

It implements the calls huggingface_hub 2.4.0 makes for a release push: repo create, tree listing, refs,
preupload (each file's upload mode and current ``oid``, which ``create_commit`` compares with the local file to
drop unchanged ones), repo info (what ``create_commit`` reads when nothing changed), commit (NDJSON with base64
file contents, deletions) and tag, keeping repos in memory. Each commit records the paths it carried.

``fail`` names calls that answer HTTP 500 (or ``fail_status``); with ``echo_authorization`` those answers repeat
the request's Authorization header (plain, base64 and URL-encoded, in the body, ``X-Error-Message`` and
``X-HF-Warning``) as a careless server might, and the token upper-cased, hex-encoded, reversed, cut in two and
inside the repr of the header's bytes, as a hostile one did.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

import yaml

_REPO_CALL = re.compile(r"^/api/datasets/([^/]+/[^/]+)/(tree|refs|preupload|commit|tag|revision)(?:/(.*))?$")


def blob_sha1(data: bytes) -> str:
    """Git blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def token_forms(token: str) -> list[str]:
    """The token as a careless server echoes it: plain, in its header, base64 of both, URL-encoded, hex, reversed."""
    header = f"Bearer {token}"
    encoded = [base64.b64encode(v.encode()).decode() for v in (token, header)]
    return [token, header, *encoded, quote(header, safe=""), token.encode().hex(), token[::-1]]


def token_found(token: str, text: str | bytes, piece: int = 10) -> list[str]:
    """Each form of ``token`` (in any letter case) and each ``piece``-long run of it or its reverse found in ``text``.

    Bytes are read as Latin-1 (one character per byte), so a database file is searched as it is on disk.
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = text.lower()
    pieces = {s[i : i + piece] for s in (token, token[::-1]) for i in range(len(s) - piece + 1)}
    return [form for form in [*token_forms(token), *sorted(pieces)] if form.lower() in text]


@dataclass
class Repo:
    """One dataset repo: current files, commit history (oid, message, files after it, paths it carried) and tags."""

    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        """Oid of the last commit (a fixed root oid before any)."""
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class FakeHub:
    """Serve a Hub subset on 127.0.0.1 in a thread; calls named in ``fail`` answer ``fail_status`` (500)."""

    def __init__(self, fail: set[str] | None = None, echo_authorization: bool = False, fail_status: int = 500) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens: list[str | None] = []
        # Calls that answer fail_status: "create", "tree", "refs", "preupload", "commit", "tag". huggingface_hub
        # retries a 500 on tree, refs and preupload for ~30 s, so tests fail those with a status it does not retry.
        self.fail: set[str] = set(fail or ())
        self.fail_status = fail_status
        self.echo_authorization = echo_authorization
        self.validated: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def fail_commits(self) -> bool:
        """Whether commits fail (answer ``fail_status``)."""
        return "commit" in self.fail

    @fail_commits.setter
    def fail_commits(self, value: bool) -> None:
        (self.fail.add if value else self.fail.discard)("commit")

    # -- HTTP plumbing -------------------------------------------------------------------------------------
    def _send(
        self, h: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _body(self, h: BaseHTTPRequestHandler) -> bytes:
        data = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        return gzip.decompress(data) if h.headers.get("Content-Encoding") == "gzip" else data

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        self.requests.append((method, path))
        auth = h.headers.get("Authorization")
        self.tokens.append(auth.removeprefix("Bearer ") if auth else None)
        body = self._body(h) if method == "POST" else b""
        match = _REPO_CALL.match(path)
        call = "create" if path == "/api/repos/create" else match.group(2) if match else None
        if call in self.fail:
            return self._fail(h, call, auth)
        if method == "POST" and path == "/api/repos/create":
            return self._create(h, json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(h, json.loads(body))
        if match is None:
            return self._send(h, 404, {"error": f"no route {method} {path}"})
        repo_id, call, rest = match.groups()
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._send(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if call == "tree" and method == "GET":
            files = [
                {"type": "file", "oid": blob_sha1(d), "size": len(d), "path": p} for p, d in sorted(repo.files.items())
            ]
            return self._send(h, 200, files)
        if call == "refs" and method == "GET":
            branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head}
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in sorted(repo.tags.items())]
            return self._send(h, 200, {"branches": [branch], "converts": [], "tags": tags})
        if call == "revision" and method == "GET":
            return self._send(h, 200, {"id": repo_id, "sha": repo.head, "private": repo.private})
        if call == "preupload" and method == "POST":
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": blob_sha1(repo.files[f["path"]]) if f["path"] in repo.files else None,
                }
                for f in json.loads(body)["files"]
            ]
            return self._send(h, 200, {"files": files, "commitOid": repo.head})
        if call == "commit" and method == "POST":
            return self._commit(h, repo_id, repo, body)
        if call == "tag" and method == "POST":
            tag = json.loads(body)["tag"]
            if tag in repo.tags:
                return self._send(h, 409, {"error": f"tag {tag} already exists"})
            revision = rest or "main"
            repo.tags[tag] = repo.head if revision == "main" else revision
            return self._send(h, 200, {})
        return self._send(h, 405, {"error": f"{method} not allowed on {call}"})

    def _fail(self, h: BaseHTTPRequestHandler, call: str, auth: str | None) -> None:
        """Answer ``fail_status``; with ``echo_authorization`` repeat the Authorization header in several forms."""
        if not self.echo_authorization:
            return self._send(h, self.fail_status, {"error": f"internal error while answering {call}"})
        auth = auth or ""
        token = auth.removeprefix("Bearer ")
        encoded = base64.b64encode(auth.encode()).decode()
        mangled = f"{token.upper()} {token.encode().hex()} {token[::-1]} {token[:10]}|{token[10:]} {auth.encode()!r}"
        errors = [
            f"internal error while answering {call}; request headers: Authorization: {auth}",
            f"debug: authorization (base64) {encoded}, url-encoded {quote(auth, safe='')}",
            f"debug: token as seen {mangled}",
        ]
        # huggingface_hub logs each X-HF-Warning topic once per process: a fresh topic makes it log this one.
        headers = {
            "X-Error-Message": f"echo {auth} {mangled}",
            "X-HF-Warning": f"echo-{uuid.uuid4().hex}; seen {auth} {mangled}",
        }
        return self._send(
            h, self.fail_status, {"error": errors, "request": {"headers": {"authorization": auth}}}, headers
        )

    def _create(self, h: BaseHTTPRequestHandler, payload: dict) -> None:
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if payload.get("type") != "dataset":
            return self._send(h, 400, {"error": "only dataset repos here"})
        url = {"url": f"{self.endpoint}/datasets/{repo_id}", "name": repo_id}
        if repo_id in self.repos:
            return self._send(h, 409, {"error": "You already created this dataset repo", **url})
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return self._send(h, 200, url)

    def _validate_yaml(self, h: BaseHTTPRequestHandler, payload: dict) -> None:
        content = payload["content"]
        try:
            if not content.startswith("---\n"):
                raise ValueError("no YAML front matter")
            meta = yaml.safe_load(content[4 : content.index("\n---\n", 4)])
            if not isinstance(meta, dict):
                raise ValueError("front matter is not a mapping")
        except (ValueError, yaml.YAMLError) as exc:
            return self._send(h, 400, {"errors": [{"message": str(exc)}]})
        self.validated.append(meta)
        return self._send(h, 200, {"warnings": []})

    def _commit(self, h: BaseHTTPRequestHandler, repo_id: str, repo: Repo, body: bytes) -> None:
        files = dict(repo.files)
        message = ""
        uploaded, deleted = [], []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                assert value["encoding"] == "base64"
                files[value["path"]] = base64.b64decode(value["content"])
                uploaded.append(value["path"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
                deleted.append(value["path"])
            else:
                return self._send(h, 400, {"error": f"unsupported commit item {item['key']}"})
        oid = hashlib.sha1(f"{repo.head}{message}{sorted(files)}{len(repo.commits)}".encode()).hexdigest()
        repo.files = files
        repo.commits.append(
            {"oid": oid, "message": message, "files": dict(files), "uploaded": uploaded, "deleted": deleted}
        )
        commit_url = f"{self.endpoint}/datasets/{repo_id}/commit/{oid}"
        return self._send(h, 200, {"commitUrl": commit_url, "commitOid": oid, "pullRequestUrl": None})
