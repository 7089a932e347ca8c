import pytest

from laion_assets.active import ACTIVE_FILE, activate, read_active, write_active
from laion_assets.errors import BadInputError
from laion_assets.paths import V1_WEIGHTS, V2_WEIGHTS, resolve


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
    }
    assert path.read_text().startswith("# The active aesthetic predictors")
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
