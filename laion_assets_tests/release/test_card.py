import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from laion_assets.core.paths import MODELS_DIR, NSFW_B32_WEIGHTS, NSFW_L14_WEIGHTS
from laion_assets.release.build import release_card
from laion_assets.release.card import KNOWN_PREDICTORS, parse_front_matter, size_category
from laion_assets.release.manifest import load_manifest
from laion_assets.scoring.predictors import load_predictor
from laion_assets_tests.release_helpers import build


@pytest.fixture(scope="module")
def release(small_sample_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(small_sample_session, tmp_path_factory.mktemp("card") / "out")[1].path


CONFIGS = {
    "subset_4_5plus": "improved_aesthetics_4.5plus",
    "subset_4_75plus": "improved_aesthetics_4.75plus",
    "subset_5plus": "improved_aesthetics_5plus",
    "subset_6plus": "improved_aesthetics_6plus",
    "subset_6_25plus": "improved_aesthetics_6.25plus",
    "subset_6_5plus": "improved_aesthetics_6.5plus",
    "laion_aesthetic": "laion_aesthetic",
    "laion_art": "laion_art",
}


def test_card_yaml_declares_one_config_per_subset(release: Path) -> None:
    text = (release / "README.md").read_text()
    meta = parse_front_matter(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    manifest = load_manifest(release)
    assert [c["config_name"] for c in meta["configs"]] == [CONFIGS[s["name"]] for s in manifest["subsets"]]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["improved_aesthetics_6.5plus"]
    for config, subset in zip(meta["configs"], manifest["subsets"], strict=True):
        (data_files,) = config["data_files"]
        assert data_files["split"] == "train"
        assert list(release.glob(data_files["path"])) == [release / f"data/{subset['name']}/part-00000.parquet"]
    assert meta["license"] == "cc-by-4.0"


def test_card_metadata_parses_as_the_hub_reads_it(release: Path) -> None:
    """huggingface_hub's DatasetCard and datasets' own parsers read every field (offline: ``DatasetCard.validate``
    posts the card to the Hub, so the values are checked here against the Hub's vocabularies and the data)."""
    from datasets import Features
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard.load(release / "README.md")
    data = card.data
    assert isinstance(data, DatasetCardData)
    manifest = load_manifest(release)
    rows = {s["name"]: manifest["files"][f"data/{s['name']}/part-00000.parquet"]["rows"] for s in manifest["subsets"]}
    assert data.license == "cc-by-4.0" and data.pretty_name == manifest["name"]
    assert data.task_categories == ["text-to-image"]
    # The Hub's buckets, for the largest subset (subsets overlap, so they are not summed).
    assert max(rows.values()) < 1000 and data.size_categories == ["n<1K"]
    # V2 subsets are English by their rule; V1 subsets hold the sample's languages.
    v1_languages = {
        code
        for name in ("laion_aesthetic", "laion_art")
        for code in pq.read_table(release / f"data/{name}/part-00000.parquet")["LANGUAGE"].drop_null().to_pylist()
    }
    assert data.language == sorted(v1_languages | {"en"}) and len(data.language) > 1
    assert all(re.fullmatch("[a-z]{2}", code) for code in data.language)
    # datasets parses configs and dataset_info as it does for a Hub repo.
    configs = MetadataConfigs.from_dataset_card_data(data)
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert list(configs) == list(infos) == list(CONFIGS.values())
    for subset in manifest["subsets"]:
        path = release / f"data/{subset['name']}/part-00000.parquet"
        info = infos[CONFIGS[subset["name"]]]
        # The Hub's dtype notation for the file's Arrow columns: large_string, float64, float32, int64.
        assert info.features == Features.from_arrow_schema(pq.read_schema(path))
        assert {v.dtype for v in info.features.values()} <= {"large_string", "float64", "float32", "int64"}
        (split,) = info.splits.values()
        assert split.name == "train" and split.num_examples == rows[subset["name"]]
        assert split.num_bytes == pq.read_table(path).nbytes and info.download_size == path.stat().st_size


def test_size_categories_follow_the_hubs_buckets() -> None:
    cases = {0: "n<1K", 999: "n<1K", 1000: "1K<n<10K", 99_999: "10K<n<100K", 625_000: "100K<n<1M"}
    cases |= {1_200_000_000: "1B<n<10B", 10**13: "n>1T"}
    assert {n: size_category(n) for n in cases} == cases


def test_card_body(release: Path) -> None:
    text = (release / "README.md").read_text()
    manifest = load_manifest(release)
    rows = manifest["files"]["data/laion_art/part-00000.parquet"]["rows"]
    funnel = next(s for s in manifest["subsets"] if s["name"] == "subset_6_5plus")["funnel"]
    rule = "punsafe < 0.5, pwatermark < 0.8, a URL, one row per hash, aesthetic > 8"
    assert f"| `laion_art` | `data/laion_art/` | {rule} | {rows:,} | 0 | 0 |" in text
    # The sample has a LANGUAGE column: non-English candidates are counted as dropped by the language rule.
    assert funnel["dropped_by_language"] > 0
    kept, dropped = funnel["candidates"] - funnel["dropped_by_language"], funnel["dropped_by_language"]
    rule = "English rows with a URL, AESTHETIC_SCORE >= 6.5"
    assert f"| `improved_aesthetics_6.5plus` | `data/subset_6_5plus/` | {rule} | {kept:,} | {dropped:,} | 0 |" in text
    assert "| 0-1 |" in text and "as LAION printed it: `{'0-1':" in text
    assert "LAION-AI/aesthetic-predictor (`sa_0_4_vit_l_14_linear.pth`) | MIT |" in text
    assert "improved-aesthetic-predictor (`sac+logos+ava1-l14-linearMSE.pth`) | Apache-2.0 |" in text
    assert "First release: no previous release" in text
    # Not pushed yet: the usage snippet shows a placeholder and says how the repo gets in.
    assert 'load_dataset("ORG/NAME", "improved_aesthetics_6.5plus", split="train")' in text
    assert "Not pushed to the Hub yet: `ORG/NAME` stands for the dataset repo" in text


def test_load_dataset_per_config(release: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    manifest = load_manifest(release)
    declared = {
        info["config_name"]: info for info in parse_front_matter((release / "README.md").read_text())["dataset_info"]
    }
    for subset in manifest["subsets"]:
        name = subset["name"]
        expected = manifest["files"][f"data/{name}/part-00000.parquet"]["rows"]
        # Through the card's configs by the names users know, as the Hub would...
        ds = datasets.load_dataset(str(release), name=CONFIGS[name], split="train", cache_dir=str(tmp_path / "cache"))
        assert ds.num_rows == expected
        assert subset["score_column"] in ds.column_names and "hash" in ds.column_names
        if expected:
            assert min(ds[subset["score_column"]]) >= subset["threshold"]
        # datasets measured the split itself: the card declared its rows, and its Arrow bytes up to the few offset
        # bytes of each extra batch (datasets cuts batches by the first row group's size, we read by row group).
        (split,) = declared[CONFIGS[name]]["splits"]
        assert split["num_examples"] == ds.num_rows
        assert abs(split["num_bytes"] - ds.info.splits["train"].num_bytes) <= split["num_bytes"] / 1000
    # No name: the default config.
    default = datasets.load_dataset(str(release), split="train", cache_dir=str(tmp_path / "cache"))
    assert default.info.config_name == "improved_aesthetics_6.5plus"
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
    for path, dim in ((NSFW_L14_WEIGHTS, 768), (NSFW_B32_WEIGHTS, 512)):  # LAION's NSFW heads, numpy arrays
        shipped[load_predictor(path, dim).identity.sha256] = path.relative_to(MODELS_DIR).as_posix()
    assert {digest: known[0] for digest, known in KNOWN_PREDICTORS.items()} == shipped


def test_empty_subsets_get_no_config_and_the_default_falls_back(release: Path, tmp_path: Path) -> None:
    """A subset no row met (laion_art on a small URL run) cannot be loaded by ``datasets``: it gets no config, and
    the default moves to the highest V2 threshold that has rows."""
    datasets = pytest.importorskip("datasets")
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    manifest = load_manifest(copy)
    for name in ("subset_6_5plus", "laion_art"):
        path = copy / f"data/{name}/part-00000.parquet"
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 0), path)
        manifest["files"][f"data/{name}/part-00000.parquet"]["rows"] = 0
    (copy / "README.md").write_bytes(release_card(copy, manifest))
    text = (copy / "README.md").read_text()
    meta = parse_front_matter(text)
    names = [c["config_name"] for c in meta["configs"]]
    assert "improved_aesthetics_6.5plus" not in names and "laion_art" not in names and len(names) == 6
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["improved_aesthetics_6.25plus"]
    assert [i["config_name"] for i in meta["dataset_info"]] == names
    assert "No rows met the rule of `improved_aesthetics_6.5plus`, `laion_art`" in text
    assert 'load_dataset("ORG/NAME", "improved_aesthetics_6.25plus", split="train")' in text
    default = datasets.load_dataset(str(copy), split="train", cache_dir=str(tmp_path / "cache"))
    assert default.info.config_name == "improved_aesthetics_6.25plus"
    assert default.num_rows == manifest["files"]["data/subset_6_25plus/part-00000.parquet"]["rows"] > 0
