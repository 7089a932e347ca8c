"""A head scored from images (``pwatermark``) in a release: recorded as such, refused when stale, joined by verify."""

from pathlib import Path

import pytest

from laion_assets.core.errors import BadInputError
from laion_assets.release.manifest import IMAGE_INPUT, predictor_entries
from laion_assets.release.verify import locate_watermarks

OLD = f"watermark-effnet-b3a@sha256:{'a' * 64}"
NEW = f"watermark-effnet-b3a@sha256:{'b' * 64}"


def test_the_watermark_head_is_recorded_with_its_weights_and_input(tmp_path: Path) -> None:
    weights = tmp_path / "watermark_model_v1.pt"
    weights.write_bytes(b"stand-in bytes: only their sha256 is recorded")
    entries = predictor_entries({"pwatermark": OLD}, {}, {"pwatermark": (str(weights), OLD)})
    entry = entries["pwatermark"]
    assert entry["identity"] == OLD and entry["input"] == IMAGE_INPUT and entry["forced"] is False
    assert entry["file"] == weights.name and len(str(entry["file_sha256"])) == 64
    seeded = predictor_entries({"pwatermark": OLD}, {}, {"pwatermark": ("random:3", OLD)})
    assert seeded["pwatermark"]["file"] == "random:3"


def test_a_release_whose_pwatermark_another_head_made_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"pwatermark was computed by .*a{64} but the configured head is .*b{64}"):
        predictor_entries({"pwatermark": OLD}, {}, {"pwatermark": ("random:1", NEW)})


def test_verify_names_the_missing_watermark_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAION_ASSETS_DATA_ROOT", raising=False)
    root = tmp_path / "out"
    release = root / "releases" / "v0.1.0"
    release.mkdir(parents=True)
    manifest = {
        "version": "v0.1.0",
        "predictors": {"pwatermark": {"identity": OLD, "input": IMAGE_INPUT}},
        "inputs": {"parts": [{"key": "00000"}, {"key": "00002"}]},
    }
    (root / "shards" / "00000").mkdir(parents=True)
    (root / "shards" / "00000" / "watermark.parquet").write_bytes(b"PAR1")
    with pytest.raises(BadInputError, match=r"pwatermark of release v0\.1\.0 was computed from images .* no data root"):
        locate_watermarks(manifest, release)
    (root / "shards" / "00002").mkdir(parents=True)
    (root / "shards" / "00002" / "watermark.parquet").write_bytes(b"PAR1")
    found = locate_watermarks(manifest, release)
    assert found == {k: root.resolve() / "shards" / k / "watermark.parquet" for k in ("00000", "00002")}
    assert locate_watermarks({**manifest, "predictors": {}}, release) == {}  # no head from images: nothing needed
