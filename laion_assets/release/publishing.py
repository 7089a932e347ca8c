"""Push a release folder to a Hugging Face dataset repo: one commit holding every file, tagged with the version.

Unchanged files are detected by comparing the remote tree's git blob ids (and LFS sha256) with the local files,
so re-pushing an unchanged release makes no commit. A Hub commit is all-or-nothing: if any step fails the repo
keeps its previous release and the error says which step failed and what to run again.

The token is cleaned first (``clean_token``: surrounding whitespace stripped, anything else that an HTTP header
cannot carry refused without showing it), then passed to huggingface_hub only. A Hub answer may echo the request's
Authorization header (in its body, its ``X-Error-Message`` or ``X-HF-Warning`` header), so every message we pass on
is scrubbed of the token in each form ``scrub`` lists, our errors are raised with no exception chain (Dagster and
tracebacks print ``__cause__`` and ``__context__``), and log records emitted during a push are scrubbed before any
handler writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, quote_plus

from laion_assets.core.errors import BadInputError, LaionAssetsError
from laion_assets.core.locations import file_sha256
from laion_assets.release.manifest import MANIFEST, check_files, load_manifest

REPO_TYPE = "dataset"
# Files the Hub creates or owns; never deleted by a release push.
KEEP_REMOTE = frozenset({".gitattributes"})


class PublishError(LaionAssetsError, RuntimeError):
    """Pushing a release failed; the message names the step, the state of the repo and what to retry."""


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (``sha1(b"blob <size>\\0" + content)``), which the Hub reports as ``oid``."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_paths(release_dir: Path) -> list[str]:
    """Every file of a release (its manifest's files plus ``manifest.json``), checked against the manifest."""
    manifest = load_manifest(release_dir)
    problems = check_files(release_dir, manifest)
    if problems:
        shown = "; ".join(f"{rel}: {why}" for rel, why in list(problems.items())[:5])
        raise BadInputError(f"{release_dir}: files do not match manifest.json ({shown}); rebuild the release first")
    return sorted([*manifest["files"], MANIFEST])


@dataclass
class PushPlan:
    """What a push would do: files to add or replace, remote files to delete, files already up to date."""

    repo_id: str
    version: str
    add: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    repo_exists: bool = False
    tag_exists: bool = False

    @property
    def needs_commit(self) -> bool:
        """True when the remote files differ from the release."""
        return bool(self.add or self.delete)

    def text(self) -> str:
        """A readable list of what would be committed."""
        lines = [f"release {self.version} -> {REPO_TYPE} repo {self.repo_id}"]
        lines += [f"  add/update {p}" for p in self.add]
        lines += [f"  delete     {p}" for p in self.delete]
        lines.append(f"  {len(self.unchanged)} file(s) unchanged")
        tag = "exists" if self.tag_exists else "would be created"
        lines.append(f"  tag {self.version}: {tag}; commit: {'yes' if self.needs_commit else 'none (unchanged)'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PushResult:
    """The outcome of a push (or dry run)."""

    plan: PushPlan
    committed: bool
    tagged: bool
    commit_oid: str | None
    dry_run: bool


REDACTED = "***"
# How much of a Hub error message is kept in ours (a server may answer with a whole page).
MAX_DETAIL = 1500
# Below this length a token's base64 fragments are too short to replace without hitting unrelated text.
_MIN_B64_TOKEN = 8
# Any run of this many consecutive characters of the token (or of its reverse) is replaced: long enough that
# unrelated text practically never holds one, short enough that a token cut in two by an echo leaves no long piece.
FRAGMENT = 8


def clean_token(token: str | None, source: str = "the Hugging Face token") -> str | None:
    """``token`` stripped of surrounding whitespace (None if empty); refuses a character a header cannot carry inside.

    The error names ``source`` and the character's position and kind, never the token. Secrets mounted from files
    (Kubernetes ``--from-file``, env files written on Windows) often end in a newline or carriage return; sent as
    they are, the HTTP client rejects the header with an error that quotes it.
    """
    if token is None:
        return None
    token = token.strip()
    for position, char in enumerate(token, start=1):
        if not "!" <= char <= "~":  # printable ASCII without space: what a Hub token is made of
            kind = (
                "whitespace"
                if char.isspace()
                else "a non-ASCII character"
                if ord(char) > 0x7F
                else "a control character"
            )
            raise BadInputError(
                f"{source} cannot be sent: character {position} of {len(token)} is {kind} (surrounding whitespace "
                "is stripped; a Hugging Face token is printable ASCII with no spaces); check where it is set "
                "(the token is not shown)"
            )
    return token or None


def _escaped(value: str) -> set[str]:
    """``value`` as escaping prints it: ``repr()`` of the str and of its bytes, JSON, backslash escapes.

    Each form is escaped once more too: a repr inside a repr, as in ``LocalProtocolError("...b'...\\n'")``.
    """
    forms = {value}
    for _ in range(2):
        for form in list(forms):
            forms |= {
                repr(form)[1:-1],
                repr(form.encode())[2:-1],
                json.dumps(form)[1:-1],
                form.encode("unicode_escape").decode("ascii"),
            }
    return forms


def _base64_fragments(secret: bytes) -> set[str]:
    """The base64 characters that encode ``secret`` wherever it starts in a longer encoded string.

    Base64 encodes 3 bytes as 4 characters, so ``secret`` can begin at one of 3 offsets within a group; at each,
    the characters carrying only its bits are fixed whatever surrounds it. Replacing them removes the secret from
    any base64 text (``Bearer <token>``, a whole header line, a JSON dump), standard or URL-safe alphabet.
    """
    fragments = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        total = offset + len(secret)
        core = encoded[math.ceil(8 * offset / 6) : (8 * total) // 6]
        fragments |= {core, core.replace("+", "-").replace("/", "_")}
    return fragments


def secret_forms(token: str) -> list[str]:
    """Every whole form of ``token`` a server or library may echo, longest first (so longer forms are replaced whole).

    Plain and ``Bearer <token>``, each also escaped (``_escaped``); URL-encoded; base64 of both and base64 fragments
    at any alignment; the hex of its bytes; reversed. A token with surrounding whitespace is covered stripped too.
    """
    forms: set[str] = set()
    for value in {token, token.strip()} - {""}:
        for shown in (value, f"Bearer {value}"):
            forms |= _escaped(shown)
            raw = shown.encode()
            forms |= {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        forms |= {quote(value, safe=""), quote_plus(value), value.encode().hex(), value[::-1]}
        if len(value) >= _MIN_B64_TOKEN:
            forms |= _base64_fragments(value.encode())
    return sorted((f for f in forms if f), key=len, reverse=True)


@lru_cache(maxsize=4)
def _patterns(token: str) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    """The compiled whole-forms pattern and the fragment pattern (None for a token shorter than FRAGMENT)."""
    whole = re.compile("|".join(map(re.escape, secret_forms(token))), re.IGNORECASE)
    core = token.strip()
    if len(core) < FRAGMENT:
        return whole, None
    pieces = {s[i : i + FRAGMENT] for s in (core, core[::-1]) for i in range(len(s) - FRAGMENT + 1)}
    # A lookahead finds every (overlapping) start of a piece; scrub merges the runs they cover.
    alternatives = "|".join(map(re.escape, sorted(pieces)))
    return whole, re.compile(f"(?=({alternatives}))", re.IGNORECASE)


def scrub(text: str, token: str | None) -> str:
    """``text`` with every form of ``token`` replaced by ``***``, in any letter case.

    Covered: the forms ``secret_forms`` lists (plain, ``Bearer``, escaped by ``repr()``/JSON/backslashes,
    URL-encoded, base64 at any alignment, hex, reversed), upper, lower or mixed case, and any run of ``FRAGMENT`` (8)
    or more consecutive characters of the token or of its reverse, which catches a token split, cut or partly
    escaped by an echo. Not covered, because no filter can recognise an arbitrary transformation: other encodings
    (base64 of the hex, HTML entities between every character, ...), hashes, or pieces shorter than 8 characters.
    """
    if not token:
        return text
    whole, fragments = _patterns(token)
    text = whole.sub(REDACTED, text)
    if fragments is None:
        return text
    runs: list[list[int]] = []
    for match in fragments.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    for start, end in reversed(runs):
        text = text[:start] + REDACTED + text[end:]
    return text


def _describe(exc: BaseException, token: str | None) -> str:
    """One scrubbed line naming a Hub error: its type and message, whitespace collapsed, cut to MAX_DETAIL."""
    text = " ".join(scrub(f"{type(exc).__name__}: {exc}", token).split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + " …"


class _ScrubFilter(logging.Filter):
    """Replace the token in a log record's message, traceback and stack before any handler formats it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep its template only
            message = str(record.msg)
        record.msg, record.args = scrub(message, self.token), None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, scrub(text, self.token)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, self.token)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.token)
        return True


@contextmanager
def scrubbed_logs(token: str | None) -> Iterator[None]:
    """While pushing, scrub the token from every log record of every logger and handler that exists now.

    A logger's filters see only records created at that logger, so the filter goes on each one; it also goes on
    each handler, which catches records of loggers created during the push as they propagate.
    """
    if not token:
        yield
        return
    scrubber = _ScrubFilter(token)
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    handlers = {id(h): h for lg in loggers for h in lg.handlers}.values()
    targets: list[logging.Filterer] = [*loggers, *handlers]
    for target in targets:
        target.addFilter(scrubber)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(scrubber)


def _api(endpoint: str | None, token: str | None):  # noqa: ANN202 - HfApi, imported lazily
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token or False)


def plan_push(release_dir: Path, repo_id: str, token: str | None = None, endpoint: str | None = None) -> PushPlan:
    """Compare a release folder with the repo's main branch and tags."""
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    release_dir = Path(release_dir)
    token = clean_token(token)
    version = load_manifest(release_dir)["version"]
    paths = release_paths(release_dir)
    plan = PushPlan(repo_id, version)
    api = _api(endpoint, token)
    remote: dict[str, RepoFile] = {}
    failure: str | None = None
    with scrubbed_logs(token):
        try:
            for item in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, recursive=True):
                if isinstance(item, RepoFile):
                    remote[item.path] = item
            plan.repo_exists = True
            plan.tag_exists = any(t.name == version for t in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags)
        except RepositoryNotFoundError:
            plan.repo_exists = False
        except Exception as exc:
            failure = _describe(exc, token)
    # Raised here, after the except block, so that neither __cause__ nor __context__ holds the Hub's error.
    if failure is not None:
        raise PublishError(
            f"listing {REPO_TYPE} repo {repo_id} failed ({failure}); nothing was pushed: "
            "check the endpoint and token, then run the push again"
        )
    for rel in paths:
        local = release_dir / rel
        theirs = remote.get(rel)
        if theirs is None:
            plan.add.append(rel)
        elif theirs.lfs is not None:
            (plan.unchanged if theirs.lfs.sha256 == file_sha256(local) else plan.add).append(rel)
        else:
            (plan.unchanged if theirs.blob_id == git_blob_sha1(local) else plan.add).append(rel)
    plan.delete = sorted(set(remote) - set(paths) - KEEP_REMOTE)
    return plan


def push_release(
    release_dir: str | Path,
    repo_id: str,
    token: str | None,
    endpoint: str | None = None,
    private: bool = True,
    dry_run: bool = False,
) -> PushResult:
    """Create the repo if needed, commit every changed file in one commit, and tag it with the release version."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    release_dir = Path(release_dir)
    token = clean_token(token)
    plan = plan_push(release_dir, repo_id, token, endpoint)
    if dry_run:
        return PushResult(plan, committed=False, tagged=False, commit_oid=None, dry_run=True)
    if plan.tag_exists and plan.needs_commit:
        raise PublishError(
            f"{repo_id} already has a tag {plan.version} but its files differ from {release_dir}; "
            "a published version is never rewritten: build the release under a new version and push that"
        )
    if not token:
        raise PublishError(f"no Hugging Face token: set HF_TOKEN to push release {plan.version} to {repo_id}")
    api = _api(endpoint, token)
    retry = f"nothing was lost: run the push of {release_dir} again (hf_release / `laion-assets push`)"
    step = "creating the repo"
    commit_oid: str | None = None
    failure: str | None = None
    with scrubbed_logs(token):
        try:
            if not plan.repo_exists:
                api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            if plan.needs_commit:
                step = "committing the release files"
                operations = [
                    CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(release_dir / rel)) for rel in plan.add
                ]
                operations += [CommitOperationDelete(path_in_repo=rel) for rel in plan.delete]
                info = api.create_commit(
                    repo_id,
                    operations=operations,
                    commit_message=f"Release {plan.version}",
                    commit_description=f"{len(plan.add)} file(s) added or updated, {len(plan.delete)} deleted.",
                    repo_type=REPO_TYPE,
                )
                commit_oid = info.oid
            if not plan.tag_exists:
                step = f"tagging the commit {plan.version}"
                api.create_tag(
                    repo_id, tag=plan.version, revision=commit_oid or "main", repo_type=REPO_TYPE, exist_ok=False
                )
        except Exception as exc:
            failure = _describe(exc, token)
    # Raised after the except block: the Hub's error (whose text may hold the token) is no part of the chain.
    if failure is not None:
        state = (
            f"the commit {commit_oid} holds release {plan.version} but is not tagged yet"
            if commit_oid
            else "the repo still holds its previous release (a Hub commit is all-or-nothing)"
        )
        raise PublishError(
            f"pushing release {plan.version} to {repo_id} failed while {step}: {failure}; {state}; {retry}"
        )
    return PushResult(
        plan, committed=commit_oid is not None, tagged=not plan.tag_exists, commit_oid=commit_oid, dry_run=False
    )
