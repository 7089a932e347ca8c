from pathlib import Path

import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.core.settings import DAGSTER_HOME, DATA_ROOT, SAFETY, SOURCE, resolve_setting
from laion_assets.demos.local import run_demo


@pytest.mark.parametrize("given_by", ["flag", "env"])
def test_a_missing_source_that_was_given_is_refused_not_filled_with_the_sample(
    tmp_path: Path, given_by: str, monkeypatch: pytest.MonkeyPatch
):
    missing = tmp_path / "unmounted" / "laion2B-en"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv(DAGSTER_HOME.env, str(home))  # run_demo exports the instance; restored after the test
    environ = {SOURCE.env: str(missing)} if given_by == "env" else {}
    source = resolve_setting(SOURCE, str(missing) if given_by == "flag" else None, environ)
    with pytest.raises(BadInputError) as caught:
        run_demo(
            source,
            resolve_setting(DATA_ROOT, str(tmp_path / "out")),
            resolve_setting(SAFETY, None, {}),
            resolve_setting(DAGSTER_HOME, str(home)),
        )
    message = str(caught.value)
    assert str(missing) in message and ("--source" if given_by == "flag" else SOURCE.env) in message
    assert f"laion-assets sample --source {missing}" in message
    assert not (tmp_path / "unmounted").exists() and not (tmp_path / "out").exists()
