import base64
import json
import logging
import threading
import traceback
from pathlib import Path
from unittest.mock import ANY
from urllib.parse import quote

import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.release.build import release_folder_lock
from laion_assets.release.card import parse_front_matter
from laion_assets.release.manifest import check_files, dumps, load_manifest
from laion_assets.release.publishing import (
    PublishError,
    clean_token,
    git_blob_sha1,
    named_for_repo,
    push_release,
    scrub,
    scrubbed_logs,
)
from laion_assets.release.verify import verify_release
from laion_assets_tests.hub_server import FakeHub, blob_sha1, token_found
from laion_assets_tests.release_helpers import build, copy_sample, grow

TOKEN = "hf_test_secret_token_123"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let huggingface_hub talk to the local endpoint (the suite sets HF_HUB_OFFLINE=1)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def releases(small_sample_session: Path, tmp_path: Path) -> tuple[Path, Path]:
    """v0.1.0 from two parts and v0.2.0 from all three (the source grew), in one data root."""
    partial = copy_sample(small_sample_session, tmp_path / "partial", keep_parts=2)
    first = build(partial, tmp_path / "out", "v0.1.0")[1].path
    second = build(grow(partial, small_sample_session), tmp_path / "out", "v0.2.0")[1].path
    return first, second


def _release_files(folder: Path) -> dict[str, bytes]:
    manifest = load_manifest(folder)
    return {rel: (folder / rel).read_bytes() for rel in [*manifest["files"], "manifest.json"]}


def test_push_commits_every_file_once_and_tags(
    online: None, releases: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = releases
    caplog.set_level(logging.DEBUG)
    with FakeHub() as hub:
        # As a secret mounted from a file holds it: the newline is stripped, the token itself is sent.
        result = push_release(first, "laion/aesthetics", f"{TOKEN}\r\n", endpoint=hub.endpoint)
        repo = hub.repos["laion/aesthetics"]
        assert result.committed and result.tagged and repo.private
        assert len(repo.commits) == 1 and repo.commits[0]["message"] == "Release v0.1.0"
        # The commit carries every file of the manifest (and the manifest) with its content.
        assert repo.files == _release_files(first)
        assert repo.tags == {"v0.1.0": result.commit_oid}
        assert sorted(repo.commits[0]["uploaded"]) == sorted(result.plan.add) == sorted(repo.files)
        # create_commit had the Hub check the card's YAML (the fake Hub parses it).
        assert hub.validated and hub.validated[0]["configs"][0]["config_name"] == "improved_aesthetics_4.5plus"
        assert set(hub.tokens) == {TOKEN}
        # A second push of the same release: create_commit gets every file, learns from preupload that each
        # remote oid equals the local one, drops them all and sends no commit; no tag is created either.
        seen = len(hub.requests)
        again = push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        assert not again.committed and not again.tagged and not again.plan.add and not again.plan.delete
        assert again.commit_oid is None and len(repo.commits) == 1
        calls = [(method, path.split("/")[5]) for method, path in hub.requests[seen:] if path.startswith("/api/d")]
        assert calls == [("GET", "tree"), ("GET", "refs"), ("POST", "preupload"), ("GET", "revision")]
    assert TOKEN not in caplog.text


def test_new_version_replaces_files_in_one_commit(online: None, releases: tuple[Path, Path]) -> None:
    first, second = releases
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        repo = hub.repos["laion/aesthetics"]
        repo.files["stale.txt"] = b"left over"
        result = push_release(second, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        assert len(repo.commits) == 2 and result.committed
        assert repo.files == _release_files(second)  # stale.txt deleted in the same commit
        assert "stale.txt" in result.plan.delete and "manifest.json" in result.plan.add
        # What create_commit sent (after dropping unchanged files) is exactly what the plan listed.
        assert sorted(repo.commits[1]["uploaded"]) == sorted(result.plan.add)
        assert repo.commits[1]["deleted"] == ["stale.txt"]
        assert set(repo.tags) == {"v0.1.0", "v0.2.0"} and repo.tags["v0.2.0"] == repo.commits[1]["oid"]
        # Only changed files travel: unchanged ones are byte-equal across the two releases, added ones differ.
        old, new = _release_files(first), _release_files(second)
        assert all(old[rel] == new[rel] for rel in result.plan.unchanged)
        assert all(old.get(rel) != new[rel] for rel in result.plan.add)


def test_only_changed_files_travel(
    online: None, releases: tuple[Path, Path], small_sample_session: Path, tmp_path: Path
) -> None:
    """v0.1.1 from the same inputs as v0.1.0: only the card and manifest (version, changelog) change."""
    first, _ = releases
    same = copy_sample(small_sample_session, tmp_path / "same-two-parts", keep_parts=2)
    patch = build(same, tmp_path / "out2", "v0.1.1")[1].path
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        result = push_release(patch, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        repo = hub.repos["laion/aesthetics"]
        assert sorted(result.plan.add) == ["README.md", "manifest.json"] and not result.plan.delete
        assert len(result.plan.unchanged) == 21 and len(repo.commits) == 2
        assert sorted(repo.commits[1]["uploaded"]) == ["README.md", "manifest.json"]
        assert repo.files == _release_files(patch) and set(repo.tags) == {"v0.1.0", "v0.1.1"}


def test_failed_push_keeps_previous_release(online: None, releases: tuple[Path, Path]) -> None:
    first, second = releases
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        before = dict(hub.repos["laion/aesthetics"].files)
        hub.fail_commits = True
        with pytest.raises(PublishError) as exc:
            push_release(second, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        message = str(exc.value)
        assert "failed while committing the release files" in message
        assert "still holds its previous release" in message and "run the push of" in message
        assert TOKEN not in message
        repo = hub.repos["laion/aesthetics"]
        assert repo.files == before and set(repo.tags) == {"v0.1.0"}
        hub.fail_commits = False
        assert push_release(second, "laion/aesthetics", TOKEN, endpoint=hub.endpoint).committed
        assert repo.files == _release_files(second)


def test_dry_run_lists_and_sends_nothing(online: None, releases: tuple[Path, Path]) -> None:
    first, _ = releases
    before = _release_files(first)
    with FakeHub() as hub:
        result = push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint, dry_run=True)
        assert result.dry_run and not result.committed
        assert sorted(result.plan.add) == sorted(before)
        text = result.plan.text()
        assert "add/update data/laion_art/part-00000.parquet" in text
        assert "card names ORG/NAME: README.md and manifest.json are rewritten in the release folder" in text
        assert "laion/aesthetics" not in hub.repos
        assert all(method == "GET" for method, _ in hub.requests)
    assert _release_files(first) == before  # nothing written here either
    # The plan compares the card as it will be pushed: after a real push, a dry run to the same repo finds every
    # file unchanged, and one to another repo only the card and the manifest to update.
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        same = push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint, dry_run=True).plan
        assert not same.add and not same.named and len(same.unchanged) == len(before)
        hub.repos["laion/other"] = hub.repos["laion/aesthetics"]
        other = push_release(first, "laion/other", TOKEN, endpoint=hub.endpoint, dry_run=True).plan
        assert sorted(other.add) == ["README.md", "manifest.json"] and other.card_named == "laion/aesthetics"


def test_pushed_card_names_the_repo_and_the_release_stays_consistent(
    online: None, small_sample_session: Path, tmp_path: Path
) -> None:
    """The card on the Hub names the repo it was pushed to; the release folder holds the same bytes, its manifest
    records them, and verify (which renders the card with the recorded repo) still passes."""
    source = copy_sample(small_sample_session, tmp_path / "source", keep_parts=1)
    folder = build(source, tmp_path / "out")[1].path
    card = (folder / "README.md").read_text()
    assert 'load_dataset("ORG/NAME", "improved_aesthetics_6.5plus", split="train")' in card
    built = load_manifest(folder)
    assert built["hub_repo"] is None
    with FakeHub() as hub:
        push_release(folder, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        pushed = hub.repos["laion/aesthetics"].files
        assert pushed == _release_files(folder) and not check_files(folder, load_manifest(folder))
        text = pushed["README.md"].decode()
        assert 'load_dataset("laion/aesthetics", "improved_aesthetics_6.5plus", split="train")' in text
        assert "ORG/NAME" not in text and text != card
        # Only the repo and the card's entry changed in the manifest.
        manifest = json.loads(pushed["manifest.json"])
        assert (
            manifest["hub_repo"] == "laion/aesthetics" and manifest["files"]["README.md"] != built["files"]["README.md"]
        )
        for changed in (manifest, built):
            del changed["hub_repo"], changed["files"]["README.md"]
        assert manifest == built
        # A push that stopped after writing the card (before the manifest) is finished by the next push.
        named = named_for_repo(folder, "laion/second")
        (folder / "README.md").write_bytes(named["README.md"])
        assert check_files(folder, load_manifest(folder)) == {"README.md": ANY}
        assert push_release(folder, "laion/second", TOKEN, endpoint=hub.endpoint).committed
        assert hub.repos["laion/second"].files == _release_files(folder)
        assert load_manifest(folder)["hub_repo"] == "laion/second" and not check_files(folder, load_manifest(folder))
        # A release built before the card declared features (no parquet facts in its manifest) gets them on push.
        old = load_manifest(folder)
        for entry in old["files"].values():
            for key in ("features", "arrow_bytes", "languages"):
                entry.pop(key, None)
        (folder / "manifest.json").write_text(dumps(old))
        push_release(folder, "laion/third", TOKEN, endpoint=hub.endpoint)
        meta = parse_front_matter(hub.repos["laion/third"].files["README.md"].decode())
        assert meta["dataset_info"] == parse_front_matter(text)["dataset_info"] and meta["language"]
        assert load_manifest(folder)["files"] == {**manifest["files"], "README.md": ANY}
    assert verify_release(folder, source).ok


def test_refuses_to_rewrite_a_published_version(online: None, releases: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = releases
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        hub.repos["laion/aesthetics"].files["README.md"] = b"edited on the Hub"
        with pytest.raises(PublishError, match="already has a tag v0.1.0 but its files differ"):
            push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)


def test_refuses_a_release_that_does_not_match_its_manifest(releases: tuple[Path, Path]) -> None:
    first, _ = releases
    (first / "kv/aesthetic.kv").write_bytes(b"")
    with pytest.raises(BadInputError, match="kv/aesthetic.kv: sha256"):
        push_release(first, "laion/aesthetics", TOKEN, endpoint="http://127.0.0.1:9", dry_run=True)


def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a" == blob_sha1(b"hello\n")


def test_commit_payload_is_base64(online: None, releases: tuple[Path, Path]) -> None:
    """The fake Hub decodes what huggingface_hub sends: check the bytes survive the round trip exactly."""
    first, _ = releases
    with FakeHub() as hub:
        push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        stored = hub.repos["laion/aesthetics"].files["kv/aesthetic.kv"]
    original = (first / "kv/aesthetic.kv").read_bytes()
    assert base64.b64encode(stored) == base64.b64encode(original)
    assert json.loads(hub.repos["laion/aesthetics"].files["manifest.json"])["version"] == "v0.1.0"


def assert_no_token(text: str, token: str) -> None:
    """Fail naming the forms and pieces of the token found in ``text``."""
    found = token_found(token, text)
    assert not found, f"token leaked as {found}"


@pytest.mark.parametrize(
    ("call", "status", "step"),
    [
        ("tree", 403, "listing dataset repo laion/aesthetics failed"),  # plan_push (a 500 here is retried ~30 s)
        ("create", 500, "failed while creating the repo"),
        ("commit", 500, "failed while committing the release files"),
        ("tag", 500, "failed while tagging the commit v0.1.0"),
    ],
)
def test_hub_error_echoing_the_token_is_scrubbed_and_unchained(
    online: None, releases: tuple[Path, Path], caplog: pytest.LogCaptureFixture, call: str, status: int, step: str
) -> None:
    """A Hub answer that echoes the Authorization header (and the token upper-cased, as hex, reversed, cut in two)
    leaves the token in no message, chain or log record."""
    first, _ = releases
    caplog.set_level(logging.DEBUG)
    with FakeHub(fail={call}, fail_status=status, echo_authorization=True) as hub:
        with pytest.raises(PublishError) as raised:
            push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
        assert TOKEN in hub.tokens  # the Hub really had the token to echo
    error = raised.value
    message = str(error)
    assert step in message and "Authorization: ***" in message  # the server's words survive, scrubbed
    assert error.__cause__ is None and error.__context__ is None  # the Hub's error is no part of the chain
    assert_no_token("".join(traceback.format_exception(error)), TOKEN)
    # huggingface_hub logged the server's X-HF-Warning header (which echoed the header too), scrubbed.
    assert any("seen ***" in record.getMessage() for record in caplog.records)
    assert_no_token(caplog.text, TOKEN)


def test_scrub_replaces_every_encoding_of_the_token() -> None:
    token = "hf_Ab3/x+Yz=9QrStUvWxYz01"  # '/', '+' and '=' make the URL and base64 forms differ from the token
    assert scrub(f"Authorization: Bearer {token}", token) == "Authorization: ***"
    assert scrub(f"q={quote(token, safe='')}&x=1", token) == "q=***&x=1"
    assert scrub("no secret here", token) == "no secret here" and scrub("x", None) == "x"
    for prefix in ("", "a", "ab", "Authorization: Bearer "):  # every alignment within base64's 3-byte groups
        raw = f"{prefix}{token} and more".encode()
        for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            cleaned = scrub(f"body {encoded} end", token)
            assert "***" in cleaned and cleaned.startswith("body ") and cleaned.endswith(" end")
            # What is left of the encoding decodes to at most a few bits of the token at each edge.
            assert encoded not in cleaned and token not in cleaned


def test_scrubbed_logs_cover_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("huggingface_hub.some_module_made_for_this_test")
    with scrubbed_logs(TOKEN):
        log.warning("header %s", f"Bearer {TOKEN}")
        try:
            raise ValueError(f"echoed {TOKEN}")
        except ValueError:
            log.exception("request failed")
        logging.getLogger("created.during.the.push").error("late logger %s", TOKEN)
    assert caplog.text.count("***") == 3 and "echoed ***" in caplog.text
    assert_no_token(caplog.text, TOKEN)
    # Outside the push nothing is filtered any more.
    log.warning("after %s", "the push")
    assert not log.filters and caplog.records[-1].getMessage() == "after the push"


def test_scrub_catches_case_hex_reversed_escaped_and_cut_echoes() -> None:
    token = "hf_NewlineToken987654321zyxwvuABCDEF"
    raw = f"{token}\n"  # as a secret mounted from a file holds it
    header = f"Bearer {raw}".encode()
    exact = {
        # The HTTP client's refusal of the header quotes the repr of its bytes, nested in the repr of the error.
        repr(header): "b'***'",
        repr(f"Illegal header value {header!r}"): "\"Illegal header value b'***'\"",
        json.dumps({"token": raw}): '{"token": "***"}',
        f"Authorization: {token.upper()}": "Authorization: ***",
        f"x-hex={token.encode().hex().upper()};": "x-hex=***;",
        f"rev {token[::-1]} end": "rev *** end",
        f"split {token[:10]}\n{token[10:]}": "split ***\n***",
    }
    for text, expected in exact.items():
        assert scrub(text, raw) == expected, text
        assert not token_found(token, scrub(text, token)), text  # the stripped token finds them too
    # Partial and encoded echoes lose every run of 8 or more of the token's characters.
    for text in (
        "".join(f"\\u{ord(c):04x}" for c in token[:6]) + token[6:],
        token.replace("_", "&#95;"),
        token[: len(token) // 2],
        base64.b64encode(f"Bearer {token}".encode()).decode().lower(),
    ):
        cleaned = scrub(text, token)
        assert "***" in cleaned and not token_found(token, cleaned, piece=8), text
    # Unrelated text, short coincidences and what no filter can recognise are left alone (documented in scrub).
    for text in ("hf_release failed: Token expired", "hf_Newl", base64.b64encode(token.encode().hex().encode())):
        assert scrub(str(text), token) == str(text)


def test_clean_token_strips_and_refuses_without_showing_it() -> None:
    token = "hf_NewlineToken987654321zyxwvuABCDEF"
    for raw in (f"{token}\n", f"{token}\r\n", f" \t{token}\n\n", token):
        assert clean_token(raw, "HF_TOKEN") == token
    assert clean_token(None) is None and clean_token("") is None and clean_token(" \r\n") is None
    refused = {
        f"{token[:7]}\x01{token[7:]}\n": "character 8 of 37 is a control character",
        f"{token[:7]}\x7f{token[7:]}": "character 8 of 37 is a control character",
        f"{token[:3]} {token[3:]}": "character 4 of 37 is whitespace",
        f"{token[:3]}\n{token[3:]}": "character 4 of 37 is whitespace",
        f"{token}\u00e9": "character 37 of 37 is a non-ASCII character",
    }
    for raw, why in refused.items():
        with pytest.raises(BadInputError) as raised:
            clean_token(raw, "HF_TOKEN")
        message = str(raised.value)
        assert message.startswith(f"HF_TOKEN cannot be sent: {why}") and "the token is not shown" in message
        assert not token_found(token, message, piece=6) and raised.value.__context__ is None


def test_push_refuses_a_token_it_cannot_send(online: None, tmp_path: Path) -> None:
    """Called directly (not through the resource or the CLI), push_release cleans the token itself, first."""
    with FakeHub() as hub:
        with pytest.raises(BadInputError, match="^the Hugging Face token cannot be sent: character 4 of 25 is a c"):
            push_release(tmp_path, "laion/aesthetics", f"{TOKEN[:3]}\x00{TOKEN[3:]}", endpoint=hub.endpoint)
        assert hub.requests == []  # refused before anything was sent


def test_plan_waits_for_another_push_writing_the_card(online: None, releases: tuple[Path, Path]) -> None:
    """A push that reads the folder while another push is writing its card (temp file beside README.md) waits."""
    first, _ = releases
    writing = threading.Event()
    done = threading.Event()

    def other_push() -> None:
        with release_folder_lock(first):
            stray = first / ".README.md.abcd1234.tmp"  # what atomic_path leaves while it writes
            stray.write_bytes(b"half a card")
            writing.set()
            done.wait(0.5)
            stray.unlink()

    writer = threading.Thread(target=other_push)
    writer.start()
    writing.wait(10)
    try:
        with FakeHub() as hub:
            result = push_release(first, "laion/aesthetics", TOKEN, endpoint=hub.endpoint)
    finally:
        done.set()
        writer.join()
    assert result.committed and "README.md" in hub.repos["laion/aesthetics"].files
