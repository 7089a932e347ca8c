"""The graph on input shaped like LAION's real release (``laion_release.py``), against an independent recomputation.

Acceptance 1 of issue 9: lowercase clip-retrieval columns, no LANGUAGE column, safety tags in a separate joined table
with repeated hashes and null pwatermark, gaps in part numbers, null/blank URLs and null captions. Every subset must
equal, row for row, what LAION's heads and rules give when computed here with plain torch, mmh3 and Python.
Rows the safety table lacks take LAION's NSFW head's punsafe (the default ``provided_else_computed``), computed here
in plain numpy from the shipped head file; their pwatermark stays null (no images), so no V1 subset holds them.
"""

from pathlib import Path

import dagster as dg
import mmh3
import numpy as np
import polars as pl
import pytest
import torch

from laion_assets.core.paths import NSFW_L14_WEIGHTS
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.demos.local import run_graph
from laion_assets.release.manifest import load_manifest
from laion_assets.release.verify import verify_release
from laion_assets_tests.laion_release import V1_FILE, V2_FILE, write_laion_release

V2_CUTS = {"subset_4_5plus": 4.5, "subset_4_75plus": 4.75, "subset_5plus": 5.0, "subset_6plus": 6.0,
           "subset_6_25plus": 6.25, "subset_6_5plus": 6.5}  # fmt: skip
V1_CUTS = {"laion_aesthetic": 7.0, "laion_art": 8.0}


def laion_heads() -> tuple[torch.nn.Module, torch.nn.Module]:
    """LAION's V1 linear head and V2 MLP as plain torch modules, loaded from the shipped files."""
    v1 = torch.nn.Linear(768, 1)
    v1.load_state_dict(torch.load(V1_FILE, map_location="cpu", weights_only=True))
    state = torch.load(V2_FILE, map_location="cpu", weights_only=True)
    widths = ((768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))
    v2 = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in widths))
    v2.load_state_dict({f"{j}.{p}": state[f"layers.{i}.{p}"] for j, i in enumerate((0, 2, 4, 6, 7))
                        for p in ("weight", "bias")})  # fmt: skip
    return v1.eval(), v2.eval()


def nsfw_punsafe(x: np.ndarray) -> np.ndarray:
    """LAION's NSFW detector written out: "%f" lookups on its five categorical columns, Normalization, Dense/ReLU."""
    head = np.load(NSFW_L14_WEIGHTS, allow_pickle=False)
    x = x.astype(np.float32).copy()
    for column in head["lookup_columns"]:
        table = dict(zip(head[f"lookup_keys_{column}"].tolist(), head[f"lookup_values_{column}"].tolist(), strict=True))
        default = int(head[f"lookup_default_{column}"])
        x[:, column] = [table.get(f"{float(v):f}", default) for v in x[:, column]]
    h = (x - head["mean"]) / np.maximum(np.sqrt(head["variance"]), head["epsilon"])
    for i in range(4):
        h = h @ head[f"dense{i}_kernel"] + head[f"dense{i}_bias"]
        h = np.maximum(h, 0) if i < 3 else h
    return 1 / (1 + np.exp(-h[:, 0].astype(np.float64)))


def expected_table(embeddings: Path, joined: Path) -> pl.DataFrame:
    """Every source row as LAION's aesthetic join makes it: hash, both scores, first safety row per hash."""
    safety: dict[int, tuple[float, float]] = {}
    for path in sorted(joined.glob("*.parquet")):
        for row in pl.read_parquet(path).iter_rows(named=True):
            mark = 0.5 if row["pwatermark"] is None else row["pwatermark"]
            safety.setdefault(row["hash"], (row["punsafe"], mark))
    v1, v2 = laion_heads()
    rows = []
    for meta_path in sorted((embeddings / "metadata").glob("*.parquet"), key=lambda p: int(p.stem.split("_")[1])):
        number = meta_path.stem.split("_")[1]
        # Scored as embedding-reader fed LAION's heads: the stored float16 vectors cast to float32, not renormalised.
        x = torch.from_numpy(np.load(embeddings / "img_emb" / f"img_emb_{number}.npy").astype(np.float32))
        with torch.no_grad():
            s1, s2 = v1(x)[:, 0].numpy(), v2(x)[:, 0].numpy()
        ours = nsfw_punsafe(x.numpy())
        for i, row in enumerate(pl.read_parquet(meta_path).iter_rows(named=True)):
            h = mmh3.hash64(((row["url"] or "") + (row["caption"] or "")).encode("utf-8"), seed=0, signed=True)[0]
            punsafe, pwatermark = safety.get(h, (float(ours[i]), None))
            rows.append({
                "URL": row["url"], "TEXT": row["caption"], "WIDTH": float(row["original_width"]),
                "HEIGHT": float(row["original_height"]), "similarity": row["similarity"], "punsafe": punsafe,
                "pwatermark": pwatermark, "hash": h, "aesthetic": float(s1[i]), "AESTHETIC_SCORE": float(s2[i]),
            })  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"punsafe": pl.Float32, "pwatermark": pl.Float32})


def expected_subsets(table: pl.DataFrame) -> dict[str, list[dict]]:
    """LAION's rules in plain Python over the recomputed rows."""
    rows = table.to_dicts()
    has_url = [r["URL"] is not None and r["URL"].strip() != "" for r in rows]
    out = {name: [r for r, ok in zip(rows, has_url, strict=True) if ok and r["AESTHETIC_SCORE"] >= t]
           for name, t in V2_CUTS.items()}  # fmt: skip
    seen, first = set(), []
    for r, ok in zip(rows, has_url, strict=True):
        tagged = r["punsafe"] is not None and r["pwatermark"] is not None
        safe = tagged and r["punsafe"] < 0.5 and r["pwatermark"] < 0.8
        if ok and safe and r["hash"] not in seen:
            seen.add(r["hash"])
            first.append(r)
    out.update({name: [r for r in first if r["aesthetic"] > t] for name, t in V1_CUTS.items()})
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("laion-released")
    release = write_laion_release(folder)
    storage = StorageResource(source=str(release.embeddings), safety=str(release.joined), data_root=str(folder / "out"))
    instance = dg.DagsterInstance.ephemeral()
    counts = run_graph(instance, storage, PredictorsResource())
    table = expected_table(release.embeddings, release.joined)
    return release, storage, instance, counts, table


def test_every_subset_equals_an_independent_recomputation(built):
    _, storage, _, counts, table = built
    expected = expected_subsets(table)
    for name in (*V2_CUTS, *V1_CUTS):
        got = pl.read_parquet(storage.layout.subset_dir(name) / "part-00000.parquet")
        want = expected[name]
        assert got.height == len(want) == counts[name] > 0, name
        assert got["hash"].to_list() == [r["hash"] for r in want], name
        score = "AESTHETIC_SCORE" if name in V2_CUTS else "aesthetic"
        np.testing.assert_allclose(got[score].to_numpy(), [r[score] for r in want], atol=1e-5, rtol=0)
        for column in ("URL", "TEXT", "WIDTH", "HEIGHT", "pwatermark"):
            assert got[column].to_list() == pytest.approx([r[column] for r in want]), (name, column)
        # LAION's punsafe exactly; ours (rows the table lacks) as float32 arithmetic reaches it.
        np.testing.assert_allclose(got["punsafe"].to_numpy(), [r["punsafe"] for r in want], atol=1e-6, rtol=0)
        if name in V1_CUTS:
            assert set(got["LANGUAGE"].to_list()) == {"en"}  # the declared language of a laion2B-en-like source


def test_awkward_rows_are_counted_and_never_published(built):
    _, storage, instance, _, table = built
    tags = instance.get_latest_materialization_event(dg.AssetKey("aesthetic_tags")).asset_materialization.metadata
    no_url = table.filter(pl.col("URL").is_null() | (pl.col("URL").str.strip_chars() == "")).height
    assert no_url > 0 and tags["rows_without_url"].value == no_url
    assert tags["rows_without_caption"].value == table["TEXT"].null_count() > 0
    untagged = int((table["punsafe"].is_null() | table["pwatermark"].is_null()).sum())
    assert tags["rows_without_safety_tags"].value == untagged > 0
    assert table["punsafe"].null_count() == 0  # rows LAION did not tag got our head's punsafe
    duplicates = table.height - table["hash"].n_unique()
    assert tags["duplicate_rows"].value == duplicates and tags["duplicate_rows_across_shards"].value > 0
    for name in (*V2_CUTS, *V1_CUTS):
        got = pl.read_parquet(storage.layout.subset_dir(name) / "part-00000.parquet")
        assert got.filter(pl.col("URL").is_null() | (pl.col("URL").str.strip_chars() == "")).height == 0
    # A null caption hashes as "" and its row is kept.
    assert pl.read_parquet(storage.layout.subset_dir("subset_4_5plus") / "part-00000.parquet")["TEXT"].null_count() > 0


def test_release_records_language_and_drops_and_verifies(built):
    release, storage, instance, _, _ = built
    folder = storage.layout.release_dir("v0.1.0")
    manifest = load_manifest(folder)
    assert manifest["inputs"]["language"] == "en" and manifest["inputs"]["excluded_shards"] == []
    assert [p["key"] for p in manifest["inputs"]["parts"]] == ["00000", "00001", "00003"]
    subsets = {s["name"]: s for s in manifest["subsets"]}
    assert subsets["subset_6_5plus"]["funnel"]["dropped_by_language"] == 0
    assert subsets["subset_6_5plus"]["funnel"]["dropped_without_url"] > 0
    card = (folder / "README.md").read_text()
    assert "dropped by language" in card and "Declared language of the source: `en`" in card
    for name in V2_CUTS:
        meta = instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
        assert meta["dropped_by_language"].value == 0 and meta["rows_candidates"].value > 0
    report = verify_release(folder, source=release.embeddings, safety=release.joined, workdir=folder.parent.parent)
    assert report.ok, report.text()


def test_no_declared_language_empties_v2_subsets_and_the_checks_stop_the_release(built, tmp_path):
    """With `language: ""` a source without a language column has unknown-language rows: V2 subsets are empty,
    and the completeness checks refuse that (rows meet the threshold) and stop the release."""
    release, _, _, _, _ = built
    storage = StorageResource(
        source=str(release.embeddings), safety=str(release.joined), data_root=str(tmp_path / "out"), language=""
    )
    with pytest.raises(SystemExit) as stopped:
        run_graph(dg.DagsterInstance.ephemeral(), storage, PredictorsResource())
    text = str(stopped.value)
    assert "subset_6_5plus:complete: subset_6_5plus is empty although" in text
    assert "dropped: by_language" in text
    assert not storage.layout.releases_dir.exists()
