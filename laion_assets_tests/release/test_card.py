from pathlib import Path

import pytest
import yaml

from laion_assets.core.paths import MODELS_DIR
from laion_assets.release.card import KNOWN_PREDICTORS, parse_front_matter
from laion_assets.release.manifest import load_manifest
from laion_assets.scoring.predictors import load_predictor
from laion_assets_tests.release_helpers import build


@pytest.fixture(scope="module")
def release(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(small_sample_session, tmp_path_factory.mktemp("card") / "out")[1].path


def test_card_yaml_declares_one_config_per_subset(release: Path) -> None:
    text = (release / "README.md").read_text()
    meta = parse_front_matter(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    manifest = load_manifest(release)
    names = [s["name"] for s in manifest["subsets"]]
    assert [c["config_name"] for c in meta["configs"]] == names
    assert meta["configs"][0]["default"] is True
    for config in meta["configs"]:
        (data_files,) = config["data_files"]
        assert data_files["split"] == "train"
        assert list(release.glob(data_files["path"])) == [release / f"data/{config['config_name']}/part-00000.parquet"]
    assert meta["license"] == "cc-by-4.0"


def test_card_body(release: Path) -> None:
    text = (release / "README.md").read_text()
    manifest = load_manifest(release)
    rows = manifest["files"]["data/laion_art/part-00000.parquet"]["rows"]
    funnel = next(s for s in manifest["subsets"] if s["name"] == "subset_6_5plus")["funnel"]
    rule = "punsafe < 0.5, pwatermark < 0.8, a URL, one row per hash, aesthetic > 8"
    assert f"| `laion_art` | {rule} | {rows:,} | 0 | 0 |" in text
    # The sample has a LANGUAGE column: non-English candidates are counted as dropped by the language rule.
    assert funnel["dropped_by_language"] > 0
    kept, dropped = funnel["candidates"] - funnel["dropped_by_language"], funnel["dropped_by_language"]
    rule = "English rows with a URL, AESTHETIC_SCORE >= 6.5"
    assert f"| `subset_6_5plus` | {rule} | {kept:,} | {dropped:,} | 0 |" in text
    assert "| 0-1 |" in text and "as LAION printed it: `{'0-1':" in text
    assert "LAION-AI/aesthetic-predictor (`sa_0_4_vit_l_14_linear.pth`) | MIT |" in text
    assert "improved-aesthetic-predictor (`sac+logos+ava1-l14-linearMSE.pth`) | Apache-2.0 |" in text
    assert "First release: no previous release" in text


def test_load_dataset_per_config(release: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    manifest = load_manifest(release)
    for subset in manifest["subsets"]:
        name = subset["name"]
        expected = manifest["files"][f"data/{name}/part-00000.parquet"]["rows"]
        # Through the card's configs, as the Hub would...
        ds = datasets.load_dataset(str(release), name=name, split="train", cache_dir=str(tmp_path / "cache"))
        assert ds.num_rows == expected
        assert subset["score_column"] in ds.column_names and "hash" in ds.column_names
        if expected:
            assert min(ds[subset["score_column"]]) >= subset["threshold"]
    # ...and as plain parquet files.
    plain = datasets.load_dataset(
        "parquet",
        data_files=str(release / "data/laion_art/*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "cache2"),
    )
    assert plain.column_names[:3] == ["URL", "TEXT", "WIDTH"] and plain.column_names[-1] == "aesthetic"


def test_known_predictors_are_the_shipped_weights_by_identity() -> None:
    # The card knows each shipped head by the digest of its tensors (what the manifest records), not the file sha256.
    shipped = {load_predictor(p).identity.sha256: p.name for p in MODELS_DIR.glob("*.pth")}
    assert {digest: known[0] for digest, known in KNOWN_PREDICTORS.items()} == shipped
