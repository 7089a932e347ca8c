import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from laion_assets.cli import main as cli_main
from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import V1_WEIGHTS, V2_WEIGHTS
from laion_assets.release.build import audit_subsets, release_from_layout
from laion_assets.release.card import parse_front_matter
from laion_assets.release.manifest import load_manifest
from laion_assets.release.rebuild import rebuild
from laion_assets.release.verify import locate_safety, verify_release
from laion_assets.scoring.predictors import load_predictor
from laion_assets.scoring.training import RatingsTable, TrainConfig, save_predictor, train_v2
from laion_assets.selection.subsets import subset_files, subset_rows
from laion_assets.sources.embeddings import open_embeddings
from laion_assets.sources.layout import discover_parts
from laion_assets_tests.release_helpers import build, copy_sample


@pytest.fixture
def release(small_sample_session: Path, tmp_path: Path) -> tuple[Path, Path]:
    source = copy_sample(small_sample_session, tmp_path / "source")
    _, summary = build(source, tmp_path / "out")
    return source, summary.path


def test_verify_passes_on_a_good_release(release: tuple[Path, Path], capsys) -> None:
    source, folder = release
    report = verify_release(folder, source)
    assert report.ok, report.text()
    cli_main(["verify", str(folder), "--source", str(source)])
    assert "): OK" in capsys.readouterr().out


def test_verify_names_a_tampered_file(release: tuple[Path, Path]) -> None:
    source, folder = release
    target = folder / "data/subset_6plus/part-00000.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    report = verify_release(folder, source)
    assert not report.ok
    assert list(report.differing) == ["data/subset_6plus/part-00000.parquet"]
    assert "in the release folder: sha256" in report.differing["data/subset_6plus/part-00000.parquet"]
    assert "DIFFERS data/subset_6plus/part-00000.parquet" in report.text()
    with pytest.raises(SystemExit) as exc:
        cli_main(["verify", str(folder), "--source", str(source)])
    assert exc.value.code == 1


def test_a_release_of_subsets_in_parts_lists_reads_and_verifies_every_part(small_sample_session, tmp_path) -> None:
    """Subsets in parts of 40 rows: the manifest lists each part, the card's configs find them all, the
    completeness recount reads them all, and verify rebuilds the same parts."""
    source = copy_sample(small_sample_session, tmp_path / "source")
    layout, summary = build(source, tmp_path / "out", part_rows=40)
    folder, manifest = summary.path, summary.manifest
    meta = parse_front_matter((folder / "README.md").read_text())
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
    for subset in manifest["subsets"]:
        name = subset["name"]
        written = subset_files(layout.subset_dir(name))
        listed = sorted(rel for rel in manifest["files"] if rel.startswith(f"data/{name}/"))
        assert listed == [f"data/{name}/{p.name}" for p in written]
        assert sum(manifest["files"][rel]["rows"] for rel in listed) == subset["rows"] == subset_rows(written)
        if subset["rows"]:
            glob = configs[subset.get("hub_name", name)]
            assert sorted(folder.glob(glob)) == [folder / rel for rel in listed]
    parted = [s["name"] for s in manifest["subsets"] if s["rows"] > 80]
    assert len(parted) >= 4  # several subsets really are in three parts or more
    assert all(a.passed for a in audit_subsets(layout))
    report = verify_release(folder, source)
    assert report.ok, report.text()


def test_verify_names_a_rebuild_that_differs(release: tuple[Path, Path]) -> None:
    """A manifest edited to claim another hash (file and manifest agree) is caught by the rebuild."""
    import json

    source, folder = release
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "kv/aesthetic.kv").write_bytes((folder / "kv/aesthetic.kv").read_bytes()[:-10])
    from laion_assets.release.manifest import file_entry

    manifest["files"]["kv/aesthetic.kv"] = file_entry(folder / "kv/aesthetic.kv")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = verify_release(folder, source)
    assert list(report.differing) == ["kv/aesthetic.kv"]
    assert report.differing["kv/aesthetic.kv"].startswith("rebuilt sha256")


def test_verify_refuses_other_inputs(release: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    source, folder = release
    with pytest.raises(BadInputError, match="outside the project, so the manifest does not name it; pass --source"):
        verify_release(folder)
    # The command says both ways it takes the folder, and takes it from the environment.
    monkeypatch.delenv("LAION_ASSETS_SOURCE", raising=False)
    with pytest.raises(SystemExit, match="pass --source DIR or set LAION_ASSETS_SOURCE$"):
        cli_main(["verify", str(folder)])
    extra = copy_sample(source, tmp_path / "extra")
    first = discover_parts(extra)[0]
    shutil.copy(first.embeddings, extra / "img_emb" / "img_emb_9.npy")
    shutil.copy(first.metadata, extra / "metadata" / "metadata_9.parquet")
    monkeypatch.setenv("LAION_ASSETS_SOURCE", str(extra))
    with pytest.raises(SystemExit, match=r"parts \['00009'\] were not in the release; point --source \(or LAION_AS"):
        cli_main(["verify", str(folder)])
    other = copy_sample(source, tmp_path / "other")
    meta = sorted((other / "metadata").iterdir())[0]
    meta.write_bytes(meta.read_bytes() + b"x")
    with pytest.raises(BadInputError, match=f"{meta.name}: not the input the release was built from"):
        verify_release(folder, other)
    (folder / "extra.txt").write_text("x")
    report = verify_release(folder, source)
    assert report.differing == {"extra.txt": "in the release folder: not listed in the manifest"}


def test_a_safety_table_outside_the_project_is_asked_for_by_flag_or_environment(tmp_path: Path) -> None:
    manifest = {"inputs": {"safety": {"source": None, "files": [{"path": "safety.parquet", "sha256": "0" * 64}]}}}
    with pytest.raises(BadInputError) as info:
        locate_safety(manifest, tmp_path, None)
    assert str(info.value) == (
        f"{tmp_path / 'manifest.json'}: the safety table was outside the project, so the manifest does not name it; "
        "pass --safety DIR or set LAION_ASSETS_SAFETY"
    )
    assert locate_safety({"inputs": {"safety": None}}, tmp_path, None) is None  # the release used none


def trained_weights(source: Path, path: Path) -> Path:
    """A V2 head trained (tiny recipe) on the sample's embeddings, saved as the training asset saves it."""
    emb = np.asarray(open_embeddings(discover_parts(source)[0].embeddings), dtype=np.float32)[:200]
    table = RatingsTable(emb, 0.5 * load_predictor(V2_WEIGHTS).score(emb) + 3.0, "ratings")
    return save_predictor(train_v2(table, TrainConfig(epochs=1, batch_size=64, threads=1)).state_dict, path)


def test_verify_finds_a_trained_predictor_under_the_data_root(small_sample_session, tmp_path, monkeypatch):
    monkeypatch.delenv("LAION_ASSETS_DATA_ROOT", raising=False)
    source = copy_sample(small_sample_session, tmp_path / "source", keep_parts=1)
    root = tmp_path / "out"
    weights = {"aesthetic": V1_WEIGHTS, "AESTHETIC_SCORE": trained_weights(source, root / "predictors" / "t.pth")}
    layout = rebuild(source, root, weights)
    folder = release_from_layout(layout, "v0.1.0", source, weights, 768).path
    manifest = load_manifest(folder)
    assert manifest["predictors"]["AESTHETIC_SCORE"]["file"] == "t.pth"  # outside the project: its name only
    assert manifest["predictors"]["AESTHETIC_SCORE"]["forced"] is False
    report = verify_release(folder, source)  # no weights given: found in <data_root>/predictors/ by identity
    assert report.ok, report.text()
    # A copy of the release elsewhere finds them through LAION_ASSETS_DATA_ROOT, and says where it looked without.
    moved = tmp_path / "elsewhere" / "v0.1.0"
    shutil.copytree(folder, moved)
    with pytest.raises(BadInputError) as info:
        verify_release(moved, source)
    identity = manifest["predictors"]["AESTHETIC_SCORE"]["identity"]
    assert f"no weights file with identity {identity} for 'AESTHETIC_SCORE' in t.pth (recorded), " in str(info.value)
    assert "pass --weights AESTHETIC_SCORE=PATH" in str(info.value)
    monkeypatch.setenv("LAION_ASSETS_DATA_ROOT", str(root))
    assert verify_release(moved, source).ok
    # An explicit --weights that is not the predictor that scored the column is named, not silently passed over.
    with pytest.raises(BadInputError, match=re.escape(f"{V2_WEIGHTS}: its weights are v2-mlp-linear@sha256:")):
        verify_release(moved, source, {"AESTHETIC_SCORE": V2_WEIGHTS})


def test_a_forced_release_says_so_and_verifies_forced(small_sample_session, tmp_path):
    source = copy_sample(small_sample_session, tmp_path / "source", keep_parts=1)
    swapped = {"aesthetic": V2_WEIGHTS, "AESTHETIC_SCORE": V2_WEIGHTS}  # the V2 head scoring the V1 column
    with pytest.raises(BadInputError, match="refused as the predictor of 'aesthetic': its kind is v2-mlp-linear"):
        rebuild(source, tmp_path / "refused", swapped)
    layout = rebuild(source, tmp_path / "out", swapped, forced=["aesthetic"])
    folder = release_from_layout(layout, "v0.1.0", source, swapped, 768).path
    entry = load_manifest(folder)["predictors"]["aesthetic"]
    assert entry["forced"] is True and entry["misfit"] == ["its kind is v2-mlp-linear, but 'aesthetic' takes v1-linear"]
    assert entry["file_sha256"] == hashlib.sha256(V2_WEIGHTS.read_bytes()).hexdigest()
    assert load_manifest(folder)["predictors"]["AESTHETIC_SCORE"]["forced"] is False
    card = (folder / "README.md").read_text()
    assert "> **Warning: `aesthetic` was scored by a forced predictor**" in card
    assert "Warning: `AESTHETIC_SCORE`" not in card
    assert verify_release(folder, source).ok  # verify rebuilds with the same force


def test_a_card_rendered_by_older_code_is_a_note_when_every_data_file_matches(
    release: tuple[Path, Path], monkeypatch
) -> None:
    """A release from before a card change (its card and manifest agree) keeps verifying, with a note; under the
    same code the same difference fails."""
    import json

    import laion_assets.release.verify as verify_module
    from laion_assets.release.manifest import file_entry

    source, folder = release
    card = folder / "README.md"
    card.write_text(card.read_text().replace("## Subsets", "## Subsets (as an older laion-assets wrote them)"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["README.md"] = file_entry(card)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    same_code = verify_release(folder, source)
    assert list(same_code.differing) == ["README.md"]

    built_by = manifest["code"]["git_commit"]
    monkeypatch.setattr(verify_module, "code_version", lambda: {"git_commit": f"not-{built_by}"})
    other_code = verify_release(folder, source)
    assert other_code.ok, other_code.text()
    notes = [n for n in other_code.notes if n.startswith("README.md differs (rebuilt sha256")]
    assert len(notes) == 1 and "every data file matches" in notes[0]

    # A card edited in the folder (file and manifest disagree) still fails, whatever code verifies it.
    card.write_text(card.read_text() + "\nedited\n")
    assert list(verify_release(folder, source).differing) == ["README.md"]
