from pathlib import Path

import pytest

from laion_assets.cli import main as cli_main
from laion_assets.errors import BadInputError
from laion_assets.verify import verify_release
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


def test_verify_names_a_rebuild_that_differs(release: tuple[Path, Path]) -> None:
    """A manifest edited to claim another hash (file and manifest agree) is caught by the rebuild."""
    import json

    source, folder = release
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "kv/aesthetic.kv").write_bytes((folder / "kv/aesthetic.kv").read_bytes()[:-10])
    from laion_assets.manifest import file_entry

    manifest["files"]["kv/aesthetic.kv"] = file_entry(folder / "kv/aesthetic.kv")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = verify_release(folder, source)
    assert list(report.differing) == ["kv/aesthetic.kv"]
    assert report.differing["kv/aesthetic.kv"].startswith("rebuilt sha256")


def test_verify_refuses_other_inputs(release: tuple[Path, Path], tmp_path: Path) -> None:
    source, folder = release
    with pytest.raises(BadInputError, match="outside the project; pass --source"):
        verify_release(folder)
    other = copy_sample(source, tmp_path / "other")
    meta = sorted((other / "metadata").iterdir())[0]
    meta.write_bytes(meta.read_bytes() + b"x")
    with pytest.raises(BadInputError, match=f"{meta.name}: not the input the release was built from"):
        verify_release(folder, other)
    (folder / "extra.txt").write_text("x")
    report = verify_release(folder, source)
    assert report.differing == {"extra.txt": "in the release folder: not listed in the manifest"}
