"""A release carrying the LAION-POP table as its own config ``laion_pop`` (``data/laion-pop/``)."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.locations import file_sha256
from laion_assets.core.outputs import OutputLayout
from laion_assets.release.build import AUTO, release_content, release_from_layout
from laion_assets.release.card import parse_front_matter
from laion_assets.release.manifest import load_manifest
from laion_assets.release.publishing import push_release
from laion_assets.release.tables import ReleaseTable, laion_pop_table
from laion_assets.release.verify import verify_release
from laion_assets_tests.hub_server import FakeHub
from laion_assets_tests.pop_table import PROMPT, SCHEMA, write_pop_table
from laion_assets_tests.release_helpers import WEIGHTS, build

POP = "data/laion-pop"


def release(layout: OutputLayout, source: Path, version: str = AUTO, tables: tuple = ()):
    """``release_from_layout`` as the release tests call it, with ``tables``."""
    return release_from_layout(layout, version, source, WEIGHTS, 768, tables=tables)


@pytest.fixture(scope="module")
def built(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory):
    """v0.1.0 without the table, then v0.1.1 (auto) with a 30-row table in two parts, in one data root."""
    layout, plain = build(small_sample_session, tmp_path_factory.mktemp("pop") / "out")
    write_pop_table(layout.pop_table_dir)
    pop = release(layout, small_sample_session, tables=(laion_pop_table(layout.pop_table_dir),))
    return layout, plain, pop


def test_the_table_is_copied_and_listed_in_the_manifest(built) -> None:
    layout, plain, pop = built
    assert pop.version == "v0.1.1" and not pop.unchanged
    parts = sorted(layout.pop_table_dir.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    files = pop.manifest["files"]
    for source in [*parts, layout.pop_table_dir / "settings.json"]:
        rel = f"{POP}/{source.name}"
        assert (pop.path / rel).read_bytes() == source.read_bytes()  # byte for byte
        assert files[rel]["sha256"] == file_sha256(source)
    assert [files[f"{POP}/{p.name}"]["rows"] for p in parts] == [16, 14]
    assert [f["name"] for f in files[f"{POP}/part-00000.parquet"]["features"]] == list(SCHEMA)
    (table,) = pop.manifest["tables"]
    settings = json.loads((layout.pop_table_dir / "settings.json").read_text())
    assert table == {"config": "laion_pop", "path": POP, "rows": 30, "settings": settings}
    # Everything else is the release without the table: same files, same content fields.
    assert {r: e for r, e in files.items() if not r.startswith(f"{POP}/") and r != "README.md"} == {
        r: e for r, e in plain.manifest["files"].items() if r != "README.md"
    }
    assert pop.manifest["changelog"]["tables"]["laion_pop"] == {
        "rows_before": 0, "rows_after": 30, "added": 30, "removed": 0, "settings_changed": True,
    }  # fmt: skip


def test_the_card_declares_laion_pop_and_datasets_loads_it(built, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    _, _, pop = built
    text = (pop.path / "README.md").read_text()
    meta = parse_front_matter(text)
    config = meta["configs"][-1]
    assert config == {"config_name": "laion_pop", "data_files": [{"split": "train", "path": f"{POP}/*.parquet"}]}
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["improved_aesthetics_6.5plus"]
    info = meta["dataset_info"][-1]
    assert info["config_name"] == "laion_pop" and info["splits"][0]["num_examples"] == 30
    assert "laion-pop" in meta["tags"]
    ds = datasets.load_dataset(str(pop.path), "laion_pop", split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 30 and ds.column_names == list(SCHEMA)
    expected = pq.read_table(pop.path / POP / "part-00000.parquet").to_pylist()[0]
    assert ds[0] == expected
    # The LAION-POP section: recipe, counts, caption model, prompt (backticks and newline kept), prefix, columns.
    section = text[text.index("## LAION-POP") : text.index("## Score histograms")]
    assert "40 rows from `concepts/sample.parquet`, clustered into 4 centroids" in section
    assert "`min_aesthetic`: `5.0`" in section and "`max_pwatermark`: `0.8`" in section
    assert "`llava-hf/llava-1.5-7b-hf`, at most 64 new tokens" in section
    assert "trimmed prefix `The image shows `" in section
    assert f"```\n{PROMPT}\n```" in section
    assert 'load_dataset("ORG/NAME", "laion_pop", split="train")' in section
    assert "| `llava_caption` | large_string |" in section and "| `nsfw_prediction` | float32 |" in section
    hub = {"url", "llava_caption", "width", "height", "nsfw_prediction"}
    for name in SCHEMA:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        origin = row.rsplit("|", 2)[-2].strip()
        if name in hub:
            assert origin == "`laion/laion-pop`", row
        elif name == "alt_text":
            assert origin.startswith("`laion/laion-pop` (best guess"), row
        else:
            assert origin == "ours", row


def test_without_the_table_the_release_is_unchanged(built, small_sample_session: Path) -> None:
    layout, plain, pop = built
    assert "tables" not in plain.manifest and not any(r.startswith(f"{POP}/") for r in plain.manifest["files"])
    assert "laion_pop" not in (plain.path / "README.md").read_text()
    assert "tables" not in plain.manifest["changelog"] and release_content(plain.manifest)["tables"] is None
    # The same inputs without a table are v0.1.0's contents; with the same table, v0.1.1's: nothing is written.
    again = release(layout, small_sample_session, "v0.1.0")
    assert again.unchanged and again.manifest == load_manifest(plain.path)
    same = release(layout, small_sample_session, tables=(laion_pop_table(layout.pop_table_dir),))
    assert same.unchanged and same.version == pop.version


def test_a_changed_table_is_a_new_version_with_a_changelog_entry(built, small_sample_session, tmp_path) -> None:
    layout, _, pop = built
    root = OutputLayout(tmp_path / "out")
    shutil.copytree(layout.root, root.root)
    changed = write_pop_table(tmp_path / "changed", rows=25, seed=1)
    new = release(root, small_sample_session, tables=(ReleaseTable(changed),))
    assert new.version == "v0.1.2" and new.manifest["changelog"]["previous"] == "v0.1.1"
    assert new.manifest["changelog"]["tables"]["laion_pop"] == {
        "rows_before": 30, "rows_after": 25, "added": 25, "removed": 30, "settings_changed": True,
    }  # fmt: skip
    assert (
        "- table `laion_pop`: 30 -> 25 rows, +25 -30 by `hash`; its settings changed."
        in (new.path / "README.md").read_text()
    )
    # Leaving the table out is a change too: the next version says it went.
    gone = release(root, small_sample_session)
    assert gone.version == "v0.1.3" and "tables" not in gone.manifest
    assert gone.manifest["changelog"]["tables"]["laion_pop"]["rows_after"] == 0


def test_a_table_whose_settings_miscount_its_rows_is_refused(built, small_sample_session, tmp_path) -> None:
    layout, _, _ = built
    folder = write_pop_table(tmp_path / "pop", rows=20)
    settings = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps({**settings, "rows": 21}))
    with pytest.raises(BadInputError, match=r"pop/settings\.json: says 21 rows, but the 2 part\(s\) beside it hold 20"):
        release(layout, small_sample_session, tables=(ReleaseTable(folder),))
    with pytest.raises(MissingUpstreamError, match=r"absent/settings\.json is missing\): materialize `pop_captions`"):
        laion_pop_table(tmp_path / "absent")
    with pytest.raises(BadInputError, match="'laion_art' or folder data/laion_art/ is already taken"):
        release(layout, small_sample_session, tables=(ReleaseTable(folder, "laion_art", "data/laion_art"),))


def test_verify_checks_the_table_by_hash_rows_and_settings(built, small_sample_session, tmp_path) -> None:
    _, _, pop = built
    report = verify_release(pop.path, small_sample_session)
    assert report.ok, report.text()
    assert any("laion_pop (data/laion-pop/) cannot be rebuilt" in note for note in report.notes)
    # A tampered part: named, and the rest of the release still verified.
    copy = tmp_path / "tampered"
    shutil.copytree(pop.path, copy)
    part = copy / POP / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0xFF
    part.write_bytes(bytes(data))
    report = verify_release(copy, small_sample_session)
    assert list(report.differing) == [f"{POP}/part-00001.parquet"]
    assert report.differing[f"{POP}/part-00001.parquet"].startswith("in the release folder: sha256")
    # settings.json whose rows miscount the parts: named, with the counts.
    copy = tmp_path / "settings"
    shutil.copytree(pop.path, copy)
    settings = copy / POP / "settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "rows": 29}))
    report = verify_release(copy, small_sample_session)
    assert list(report.differing) == [f"{POP}/settings.json"]
    assert "says 29 rows, but the 2 part(s) beside it hold 30" in report.differing[f"{POP}/settings.json"]


def test_push_includes_the_table(built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    folder = shutil.copytree(built[2].path, tmp_path / "v0.1.1")  # the push rewrites the card: not the shared one
    with FakeHub() as hub:
        result = push_release(folder, "laion/pop", "hf_pop_token_123", endpoint=hub.endpoint)
        repo = hub.repos["laion/pop"]
        assert result.committed
        table = {rel for rel in repo.files if rel.startswith(f"{POP}/")}
        assert table == {f"{POP}/part-00000.parquet", f"{POP}/part-00001.parquet", f"{POP}/settings.json"}
        for rel in table:
            assert repo.files[rel] == (folder / rel).read_bytes()
        assert "laion_pop" in [c["config_name"] for c in hub.validated[-1]["configs"]]
        assert b'load_dataset("laion/pop", "laion_pop", split="train")' in repo.files["README.md"]
    assert load_manifest(folder)["hub_repo"] == "laion/pop"
