import os
from pathlib import Path

import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.core.settings import (
    DAGSTER_HOME,
    DATA_ROOT,
    SAFETY,
    SOURCE,
    instance_dir,
    new_sample_folder,
    resolve_setting,
    use_instance,
)


def test_flag_beats_environment_beats_default():
    env = {"LAION_ASSETS_DATA_ROOT": "/env/out"}
    assert resolve_setting(DATA_ROOT, "/flag/out", env).value == "/flag/out"
    assert resolve_setting(DATA_ROOT, "/flag/out", env).origin == "--data-root"
    assert resolve_setting(DATA_ROOT, None, env).value == "/env/out"
    assert resolve_setting(DATA_ROOT, None, env).origin == "LAION_ASSETS_DATA_ROOT"
    default = resolve_setting(DATA_ROOT, None, {})
    assert (default.value, default.origin, default.is_default) == ("data/out", "default", True)
    # An empty value counts as not given.
    assert resolve_setting(DATA_ROOT, "", {"LAION_ASSETS_DATA_ROOT": ""}).is_default


def test_each_setting_has_its_flag_variable_and_default():
    assert resolve_setting(SOURCE, None, {}).location == PROJECT_DIR / "data" / "sample"
    assert resolve_setting(SOURCE, None, {"LAION_ASSETS_SOURCE": "s3://b/x"}).describe() == (
        "s3://b/x (from LAION_ASSETS_SOURCE)"
    )
    assert resolve_setting(SAFETY, None, {}).value == ""
    assert resolve_setting(SAFETY, None, {}).describe() == "none (from default)"
    assert resolve_setting(DAGSTER_HOME, None, {"DAGSTER_HOME": "/h"}).value == "/h"
    assert resolve_setting(DATA_ROOT, "rel/out", {}).location == PROJECT_DIR / "rel" / "out"


def test_default_instance_is_made_with_its_config_link(tmp_path):
    # The default is relative to the project folder: point a copy of the spec at a temporary one.
    from dataclasses import replace

    spec = replace(DAGSTER_HOME, default=str(tmp_path / ".dagster"))
    home = instance_dir(resolve_setting(spec, None, {}))
    assert home == tmp_path / ".dagster" and home.is_dir()
    assert os.readlink(home / "dagster.yaml") == "../dagster.yaml"
    assert instance_dir(resolve_setting(spec, None, {})) == home  # again: nothing to do


def test_a_given_instance_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(BadInputError, match=f"{missing} \\(from DAGSTER_HOME\\) does not exist.*--dagster-home"):
        instance_dir(resolve_setting(DAGSTER_HOME, None, {"DAGSTER_HOME": str(missing)}))
    assert not missing.exists()
    monkeypatch.setenv("DAGSTER_HOME", "restored after the test")  # use_instance exports it
    given = resolve_setting(DAGSTER_HOME, str(tmp_path), {})
    assert use_instance(given) == tmp_path and os.environ["DAGSTER_HOME"] == str(tmp_path)
    assert not (tmp_path / "dagster.yaml").exists()  # a folder of the user's is used as it is


def test_sample_goes_only_to_a_new_or_empty_local_folder(tmp_path: Path):
    assert new_sample_folder(resolve_setting(SOURCE, str(tmp_path / "new"), {})) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert new_sample_folder(resolve_setting(SOURCE, str(tmp_path / "empty"), {})) == tmp_path / "empty"
    (tmp_path / "parts" / "img_emb").mkdir(parents=True)
    with pytest.raises(BadInputError, match="parts \\(from LAION_ASSETS_SOURCE\\) holds parts"):
        new_sample_folder(resolve_setting(SOURCE, None, {"LAION_ASSETS_SOURCE": str(tmp_path / "parts")}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="is not an empty folder"):
        new_sample_folder(resolve_setting(SOURCE, str(tmp_path / "other"), {}))
    with pytest.raises(BadInputError, match="local folder"):
        new_sample_folder(resolve_setting(SOURCE, "memory://bucket/sample", {}))
