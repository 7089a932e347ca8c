import shutil

import pytest
import yaml

from laion_assets.cli import main as cli_main
from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import PROJECT_DIR, V1_WEIGHTS, V2_WEIGHTS, resolve
from laion_assets.scoring.active import ACTIVE_FILE, activate, read_active, read_forced, write_active


def test_repo_defaults_are_laions_released_predictors():
    active = read_active(ACTIVE_FILE)
    assert resolve(active["aesthetic"]) == V1_WEIGHTS
    assert resolve(active["AESTHETIC_SCORE"]) == V2_WEIGHTS


def test_activate_rewrites_one_column(tmp_path):
    path = write_active(read_active(), tmp_path / "predictors.yaml")
    activate("AESTHETIC_SCORE", "data/out/predictors/x.pth", path)
    assert read_active(path) == {
        "aesthetic": read_active()["aesthetic"],
        "AESTHETIC_SCORE": "data/out/predictors/x.pth",
        "punsafe": read_active()["punsafe"],
    }
    assert path.read_text().startswith("# The active predictors")
    with pytest.raises(BadInputError, match="'score' is not a score column"):
        activate("score", "x.pth", path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aesthetic: a.pth\n", r"missing \['AESTHETIC_SCORE'\]"),
        ("- a\n", "expected a mapping"),
        ("aesthetic: a.pth\nAESTHETIC_SCORE: ''\n", r"\['AESTHETIC_SCORE'\] must name a weights file"),
        ("aesthetic: [\n", "not valid YAML"),
    ],
)
def test_bad_predictors_file_names_the_file(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message) as info:
        read_active(path)
    assert str(path) in str(info.value)


def test_cli_activate_refuses_a_head_swap_and_force_is_recorded_per_column(tmp_path, capsys):
    path = write_active(read_active(), tmp_path / "predictors.yaml")
    before = path.read_bytes()
    with pytest.raises(SystemExit) as info:
        cli_main(["activate", "aesthetic", str(V2_WEIGHTS), "--config", str(path)])
    message = str(info.value.code)
    assert message.startswith(f"error: {V2_WEIGHTS}: refused as the predictor of 'aesthetic': its kind is v2-mlp")
    assert "takes v1-linear" in message and "--force" in message
    assert path.read_bytes() == before  # a refused activation changes nothing

    cli_main(["activate", "aesthetic", str(V2_WEIGHTS), "--config", str(path), "--force"])
    out = capsys.readouterr().out
    assert f"warning: {V2_WEIGHTS} is forced as aesthetic: its kind is v2-mlp-linear" in out
    assert read_active(path)["aesthetic"] == str(V2_WEIGHTS) and read_forced(path) == ["aesthetic"]
    # Activating a head that fits (with or without --force) takes the column out of the force list again.
    cli_main(["activate", "aesthetic", str(V1_WEIGHTS), "--config", str(path), "--force"])
    assert read_forced(path) == [] and "warning" not in capsys.readouterr().out
    assert "force" not in yaml.safe_load(path.read_text())


def test_force_list_is_checked(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("aesthetic: a.pth\nAESTHETIC_SCORE: b.pth\nforce: [score]\n")
    with pytest.raises(BadInputError, match=r"p\.yaml: `force` must be a list of score columns"):
        read_forced(path)
    path.write_text("aesthetic: a.pth\nAESTHETIC_SCORE: b.pth\nforce: [AESTHETIC_SCORE]\n")
    assert read_forced(path) == ["AESTHETIC_SCORE"] and read_active(path)["AESTHETIC_SCORE"] == "b.pth"


def test_cli_activate_takes_a_relative_path_from_the_current_directory_first(tmp_path, monkeypatch, capsys):
    path = write_active(read_active(), tmp_path / "predictors.yaml")
    work = tmp_path / "tester"
    work.mkdir()
    shutil.copy(V1_WEIGHTS, work / "tester-mine.pth")
    monkeypatch.chdir(work)
    cli_main(["activate", "aesthetic", "tester-mine.pth", "--config", str(path)])
    assert read_active(path)["aesthetic"] == str(work / "tester-mine.pth")  # outside the project: absolute
    assert f"({work / 'tester-mine.pth'}) in {path}" in capsys.readouterr().out
    # Not there from here: the project folder's file, recorded as given.
    project_relative = V1_WEIGHTS.relative_to(PROJECT_DIR).as_posix()
    cli_main(["activate", "aesthetic", project_relative, "--config", str(path)])
    assert read_active(path)["aesthetic"] == project_relative
    # From a folder inside the project: recorded project-relative, as every shipped entry is.
    monkeypatch.chdir(V1_WEIGHTS.parent.parent)
    cli_main(["activate", "aesthetic", f"./models/{V1_WEIGHTS.name}", "--config", str(path)])
    assert read_active(path)["aesthetic"] == project_relative
    before = path.read_bytes()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as info:
        cli_main(["activate", "aesthetic", "missing.pth", "--config", str(path)])
    message = str(info.value.code)
    assert message.startswith("error: missing.pth: predictor weights file not found")
    assert f"current directory ({work / 'missing.pth'})" in message
    assert f"project folder ({PROJECT_DIR / 'missing.pth'})" in message
    assert path.read_bytes() == before
