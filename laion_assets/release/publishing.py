"""Push a release folder to a Hugging Face dataset repo: one commit holding every file, tagged with the version.

Every file of the release goes to ``HfApi.create_commit``, which asks the Hub for each file's current oid
(``preupload``) and drops the files whose remote oid equals the local one (git blob sha1, or sha256 for LFS), so
re-pushing an unchanged release uploads nothing and makes no commit. The plan (``--dry-run``, ``hf.dry_run``)
predicts the same from the remote tree's blob ids and LFS sha256 without sending anything. A Hub commit is
all-or-nothing: if any step fails the repo keeps its previous release and the error says which step failed and
what to run again.

The dataset card's usage snippet names the repo the release is pushed to: before committing, a push to another
repo than the card names rewrites ``README.md`` and ``manifest.json`` (which records the card's sha256 and the
repo, ``hub_repo``) in the release folder, each atomically and the manifest last, so the folder, its manifest and
the Hub hold the same bytes and ``verify`` (which renders the card with the recorded repo) still passes.

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

from laion_assets.core.atomic import atomic_path
from laion_assets.core.errors import BadInputError, LaionAssetsError
from laion_assets.core.locations import file_sha256
from laion_assets.release.build import release_card, release_folder_lock
from laion_assets.release.card import REPO_PLACEHOLDER
from laion_assets.release.manifest import (
    CARD,
    MANIFEST,
    bytes_entry,
    check_files,
    dumps,
    load_manifest,
    parquet_facts,
)

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


def _blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def named_for_repo(release_dir: Path, repo_id: str) -> dict[str, bytes]:
    """``README.md`` and ``manifest.json`` as they read once the card names ``repo_id``; empty when it already does.

    The manifest keeps everything but ``hub_repo`` and the card's entry (sha256, size), so its content, the data
    files and their hashes are unchanged.
    """
    manifest = load_manifest(release_dir)
    if manifest.get("hub_repo") == repo_id:
        return {}
    files = dict(manifest["files"])
    for rel, entry in files.items():
        # A release built before the card declared features records no parquet facts: read them now (the files
        # are checked against their sha256 before anything is pushed).
        if rel.endswith(".parquet") and "features" not in entry:
            files[rel] = {**entry, **parquet_facts(release_dir / rel)}
    named = {**manifest, "files": files, "hub_repo": repo_id}
    card = release_card(release_dir, named)
    named["files"] = {**files, CARD: bytes_entry(card)}
    return {CARD: card, MANIFEST: dumps(named).encode()}


def release_paths(release_dir: Path, named: dict[str, bytes] | None = None) -> list[str]:
    """Every file of a release (its manifest's files plus ``manifest.json``), checked against the manifest.

    ``named`` is what :func:`named_for_repo` gave: a card already holding those bytes is accepted (a push that
    stopped between writing the card and the manifest left it; this push writes the manifest).
    """
    manifest = load_manifest(release_dir)
    problems = check_files(release_dir, manifest)
    card = release_dir / CARD
    if named and CARD in problems and card.is_file() and card.read_bytes() == named.get(CARD):
        del problems[CARD]
    if problems:
        shown = "; ".join(f"{rel}: {why}" for rel, why in list(problems.items())[:5])
        raise BadInputError(f"{release_dir}: files do not match manifest.json ({shown}); rebuild the release first")
    return sorted([*manifest["files"], MANIFEST])


def write_named(release_dir: Path, named: dict[str, bytes]) -> None:
    """Write what :func:`named_for_repo` gave into the release: each file atomically, the manifest last."""
    if not named:
        return
    with release_folder_lock(release_dir):  # a build reading the folder, or another push, sees one pair or the other
        for rel in (CARD, MANIFEST):
            if rel in named:
                with atomic_path(release_dir / rel) as tmp:
                    tmp.write_bytes(named[rel])


@dataclass
class PushPlan:
    """What a push would do: files to add or replace, remote files to delete, files already up to date."""

    repo_id: str
    version: str
    files: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    repo_exists: bool = False
    tag_exists: bool = False
    head: str | None = None  # the main branch's commit when planned
    named: dict[str, bytes] = field(default_factory=dict, repr=False)  # card and manifest naming repo_id
    card_named: str | None = None  # the repo the release's card named when planned (None: the placeholder)

    @property
    def needs_commit(self) -> bool:
        """True when the remote files differ from the release."""
        return bool(self.add or self.delete)

    def text(self) -> str:
        """A readable list of what would be committed."""
        lines = [f"release {self.version} -> {REPO_TYPE} repo {self.repo_id}"]
        if self.named:
            lines.append(
                f"  card names {self.card_named or REPO_PLACEHOLDER}: README.md and manifest.json are rewritten in "
                f"the release folder to name {self.repo_id} before the commit"
            )
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
    """Compare a release folder, its card naming ``repo_id``, with the repo's main branch and tags (sends nothing)."""
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    release_dir = Path(release_dir)
    token = clean_token(token)
    # Read under the release lock: another push of the same folder may be writing the card (a temp file beside
    # README.md, then the manifest), and a check in between sees a file the manifest does not list.
    with release_folder_lock(release_dir):
        manifest = load_manifest(release_dir)
        named = named_for_repo(release_dir, repo_id)
        plan = PushPlan(repo_id, manifest["version"], named=named, card_named=manifest.get("hub_repo"))
        plan.files = release_paths(release_dir, named)
    api = _api(endpoint, token)
    remote: dict[str, RepoFile] = {}
    failure: str | None = None
    with scrubbed_logs(token):
        try:
            for item in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, recursive=True):
                if isinstance(item, RepoFile):
                    remote[item.path] = item
            plan.repo_exists = True
            refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
            plan.tag_exists = any(t.name == plan.version for t in refs.tags)
            plan.head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
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
    for rel in plan.files:
        theirs = remote.get(rel)
        data = named.get(rel)
        if theirs is None:
            same = False
        elif theirs.lfs is not None:  # what create_commit compares too: sha256 for LFS, git blob sha1 otherwise
            if data is not None:
                ours = hashlib.sha256(data).hexdigest()
            elif rel in manifest["files"]:  # release_paths just checked the file against it
                ours = manifest["files"][rel]["sha256"]
            else:
                ours = file_sha256(release_dir / rel)
            same = theirs.lfs.sha256 == ours
        else:
            same = theirs.blob_id == (_blob_sha1(data) if data is not None else git_blob_sha1(release_dir / rel))
        (plan.unchanged if same else plan.add).append(rel)
    plan.delete = sorted(set(remote) - set(plan.files) - KEEP_REMOTE)
    return plan


def push_release(
    release_dir: str | Path,
    repo_id: str,
    token: str | None,
    endpoint: str | None = None,
    private: bool = True,
    dry_run: bool = False,
) -> PushResult:
    """Create the repo if needed, commit the release in one commit (unchanged files skipped) and tag the version.

    The card is first made to name ``repo_id`` (:func:`named_for_repo`, written into the release folder). Every
    file goes to ``create_commit``, which uploads only the files whose remote oid differs and makes no commit when
    none does; ``committed`` says whether the main branch moved.
    """
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
    write_named(release_dir, plan.named)
    api = _api(endpoint, token)
    retry = f"nothing was lost: run the push of {release_dir} again (hf_release / `laion-assets push`)"
    step = "creating the repo"
    commit_oid: str | None = None
    failure: str | None = None
    with scrubbed_logs(token):
        try:
            if not plan.repo_exists:
                api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            step = "committing the release files"
            operations = [
                CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(release_dir / rel)) for rel in plan.files
            ]
            operations += [CommitOperationDelete(path_in_repo=rel) for rel in plan.delete]
            # create_commit drops every addition whose remote oid equals the local one; with nothing left it makes
            # no commit and returns the branch's current commit.
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
                api.create_tag(repo_id, tag=plan.version, revision=commit_oid, repo_type=REPO_TYPE, exist_ok=False)
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
    committed = commit_oid is not None and commit_oid != plan.head
    return PushResult(
        plan,
        committed=committed,
        tagged=not plan.tag_exists,
        commit_oid=commit_oid if committed else None,
        dry_run=False,
    )
