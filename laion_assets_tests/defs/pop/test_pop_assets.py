"""The LAION-POP assets on a generated release with a known structure, images served from 127.0.0.1.

The data root holds three tags parts and their embeddings (with rows planted near four concept clusters), their
kNN index and bucket embeddings, as the release graph leaves them; the concept collection is noisy copies of the
four cluster centres. The pop assets run on it with a scripted tiny LLaVA (it answers "This image showcases a small
test picture"), so the selection, the downloads, the captions, the trimmed prefix and the resume are checked end
to end.
"""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

from laion_assets.defs.pop.assets import (
    POP_ASSETS,
    POP_CHECKS,
    laion_pop,
    laion_pop_meets_rule,
    pop_captions,
    pop_table_sound,
)
from laion_assets.defs.resources import DownloaderResource, PopResource, StorageResource, VlmResource
from laion_assets.demos.tiny_llava import write_tiny_llava
from laion_assets.demos.url_server import serve_images, write_images
from laion_assets.pop.table import TABLE_COLUMNS
from laion_assets.retrieval.index_build import IndexParams
from laion_assets.retrieval.index_folder import IndexedShard, build_index_folder

DIM = 768
SHARDS = (40, 40, 40)
CLUSTERS = 4
PLANTED = 5  # rows per cluster: 0-2 meet every filter, 3 is 600 px tall, 4 has pwatermark 0.95


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("pop-world")
    data_root = root / "out"
    names = write_images(root / "served", sum(SHARDS), seed=3)
    centres = unit(rng.normal(size=(CLUSTERS, DIM)))
    with serve_images(root / "served") as server:
        shards, first, planted = [], 0, {}
        for s, rows in enumerate(SHARDS):
            key = f"{s:05d}"
            v = unit(rng.normal(size=(rows, DIM)))
            width = np.full(rows, 1024.0)
            height = rng.choice([500.0, 900.0, 1500.0], rows)
            pwatermark = rng.uniform(0, 0.5, rows).astype(np.float32)
            if s == 1:
                for c in range(CLUSTERS):
                    for j in range(PLANTED):
                        row = 5 + PLANTED * c + j
                        v[row] = unit(centres[c] + 0.2 * unit(rng.normal(size=DIM)))
                        height[row] = 600.0 if j == 3 else 1200.0
                        pwatermark[row] = 0.95 if j == 4 else 0.1
                        planted[(c, j)] = first + row
            ids = np.arange(first, first + rows)
            tags = pl.DataFrame(
                {
                    "URL": [server.url(names[i]) for i in ids],
                    "TEXT": [f"alt text {i}" for i in ids],
                    "WIDTH": width,
                    "HEIGHT": height,
                    "similarity": rng.uniform(0.28, 0.4, rows),
                    "hash": (ids * 7919 + 3).astype(np.int64),
                    "aesthetic": rng.uniform(3, 8, rows).astype(np.float32),
                    "AESTHETIC_SCORE": rng.uniform(4, 7, rows).astype(np.float32),
                    "punsafe": rng.uniform(0, 1, rows).astype(np.float32),
                    "pwatermark": pwatermark,
                }
            )
            (data_root / "tags").mkdir(parents=True, exist_ok=True)
            tags.write_parquet(data_root / "tags" / f"part-{key}.parquet")
            emb = data_root / "emb" / f"img_emb_{s}.npy"
            emb.parent.mkdir(parents=True, exist_ok=True)
            np.save(emb, v.astype(np.float16))
            shards.append(IndexedShard(key, emb, data_root / "tags" / f"part-{key}.parquet"))
            first += rows
        build_index_folder(data_root / "knn", shards, IndexParams("flat"), "pop-test", {"test": True})
        (data_root / "buckets").mkdir()
        for k in range(10):
            np.save(data_root / "buckets" / f"rating{k}.npy", unit(rng.normal(size=(1, DIM))))
        concepts = root / "concepts" / "img_emb"
        concepts.mkdir(parents=True)
        noisy = unit(np.repeat(centres, 30, axis=0) + 0.25 * unit(rng.normal(size=(30 * CLUSTERS, DIM))))
        np.save(concepts / "img_emb_0.npy", noisy.astype(np.float16))
        llava = write_tiny_llava(root / "tiny-llava", scripted=True)
        resources = {
            "storage": StorageResource(source=str(root / "unused"), data_root=str(data_root)),
            "pop": PopResource(
                concepts=str(root / "concepts"),
                k=CLUSTERS,
                nredo=3,
                neighbours=8,
                part_rows=100,
                check_centroids=CLUSTERS,
                image_size=64,
            ),  # fmt: skip
            "downloader": DownloaderResource(processes_count=1, thread_count=8, timeout=5),
            "vlm": VlmResource(model=str(llava), device="cpu", batch_size=2, chunk_rows=4, max_new_tokens=12),
        }
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [*POP_ASSETS, *POP_CHECKS], resources=resources, instance=instance, raise_on_error=False
        )
        yield {
            "root": root,
            "data_root": data_root,
            "resources": resources,
            "result": result,
            "planted": planted,
            "server": server,
            "instance": instance,
        }


def _metadata(result, asset: str) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in mat.metadata.items()}


def test_laion_pop_finds_the_planted_rows_and_every_check_passes(world):
    result = world["result"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"laion_pop_meets_rule": True, "pop_table_sound": True, "pop_images_success_rate": True}
    rows = pl.read_parquet(sorted((world["data_root"] / "pop" / "laion_pop").glob("part-*.parquet")))
    hashes = {i: int(i * 7919 + 3) for i in world["planted"].values()}
    kept = dict(zip(rows["hash"].to_list(), rows["centroid"].to_list(), strict=True))
    centroid_of = {}
    for (c, j), i in world["planted"].items():
        if j < 3:  # meets every filter: found, all of a cluster's rows under one centroid
            assert hashes[i] in kept
            centroid_of.setdefault(c, kept[hashes[i]])
            assert kept[hashes[i]] == centroid_of[c]
        else:  # too short, or watermarked
            assert hashes[i] not in kept
    assert sorted(centroid_of.values()) == list(range(CLUSTERS))
    meta = _metadata(result, "laion_pop")
    assert meta["dagster/row_count"] == rows.height and meta["centroids_with_rows"] == CLUSTERS
    assert sum(meta["rows_per_centroid"]) == rows.height
    centroids = _metadata(result, "pop_centroids")
    assert centroids["cluster_sizes"] == [30] * CLUSTERS and centroids["inertia"] > 0


def test_the_captions_are_trimmed_and_the_table_follows_the_hub_columns(world):
    data_root = world["data_root"]
    table = pl.read_parquet(sorted((data_root / "pop" / "table").glob("part-*.parquet")))
    selection = pl.read_parquet(sorted((data_root / "pop" / "laion_pop").glob("part-*.parquet")))
    assert list(table.schema) == list(TABLE_COLUMNS)
    assert table.height == selection.height  # every selected URL is served: every row has an image and caption
    assert set(table["llava_caption"]) == {"a small test picture"}  # "This image showcases" trimmed
    assert table["url"].to_list() == selection["URL"].to_list()
    assert table["nsfw_prediction"].to_list() == selection["punsafe"].to_list()
    settings = json.loads((data_root / "pop" / "table" / "settings.json").read_text())
    # Folders outside the project are published by their last component only, never as a user's absolute path.
    assert settings["concepts"]["source"] == "<local folder concepts>"
    assert settings["captions"]["model"] == "<local folder tiny-llava>"
    requested = {p.rsplit("/", 1)[-1] for p in world["server"].requests}
    assert {u.rsplit("/", 1)[-1] for u in table["url"]} <= requested


def check_on_broken_part(world, folder, break_rows, asset, check):
    """Rewrite the first part of ``folder`` with ``break_rows`` applied, run ``check`` alone, put the part back."""
    part = sorted(folder.glob("part-*.parquet"))[0]
    original = part.read_bytes()
    rows = pl.read_parquet(part)
    try:
        break_rows(rows).write_parquet(part)
        result = dg.materialize(
            [asset, check],
            selection=dg.AssetSelection.checks(check),
            resources=world["resources"],
            instance=world["instance"],
            raise_on_error=False,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return rows, evaluation
    finally:
        part.write_bytes(original)


def test_the_check_fails_on_a_row_that_breaks_a_filter(world):
    first = pl.int_range(pl.len())
    rows, evaluation = check_on_broken_part(
        world,
        world["data_root"] / "pop" / "laion_pop",
        lambda rows: rows.with_columns(pl.when(first == 0).then(300.0).otherwise(pl.col("HEIGHT")).alias("HEIGHT")),
        laion_pop,
        laion_pop_meets_rule,
    )
    assert not evaluation.passed
    problems = evaluation.metadata["problems"].value
    assert any(f"hash {rows['hash'][0]}" in p and "shortest side" in p for p in problems)


def test_the_readme_run_config_is_valid_for_pop_job():
    import re

    import yaml

    from laion_assets.core.paths import PROJECT_DIR
    from laion_assets.definitions import defs, pop_job

    readme = (PROJECT_DIR / "README.md").read_text()
    section = re.search(r"^## LAION-POP.*?\n(.*?)(?=^## )", readme, re.S | re.M).group(1)
    (block,) = re.findall(r"^```yaml\n(.*?)^```", section, re.S | re.M)
    config = yaml.safe_load(block)
    job = defs.resolve_job_def(pop_job.name)
    assert dg.validate_run_config(job, config)
    assert config["resources"]["pop"]["config"]["k"] == PopResource().k == 10_000
    assert config["resources"]["vlm"]["config"]["model"] == VlmResource().model == "llava-hf/llava-1.5-7b-hf"
    for name, value in config["resources"]["pop"]["config"].items():
        if name != "concepts":  # the README's values are the defaults
            assert getattr(PopResource(), name) == value, name


class InterruptedVlm(VlmResource):
    """The vlm resource whose model fails on its third batch: a run stopped in the middle of a part."""

    def load(self):
        from dataclasses import fields

        loaded = super().load()

        class FailsOnThirdBatch(type(loaded)):
            calls = 0

            def generate(self, images):
                FailsOnThirdBatch.calls += 1
                if FailsOnThirdBatch.calls == 3:
                    raise RuntimeError("interrupted on purpose")
                return super().generate(images)

        return FailsOnThirdBatch(**{f.name: getattr(loaded, f.name) for f in fields(loaded)})


def test_pop_captions_resumes_after_an_interrupted_run(world):
    import shutil

    pop = world["data_root"] / "pop"
    before = pl.read_parquet(sorted((pop / "table").glob("part-*.parquet")))
    shutil.rmtree(pop / "captions")
    resources = dict(world["resources"])
    vlm = resources["vlm"]
    resources["vlm"] = InterruptedVlm(**vlm.model_dump())
    failed = dg.materialize([pop_captions], resources=resources, instance=world["instance"], raise_on_error=False)
    assert not failed.success
    assert any(
        "interrupted on purpose" in str(e.step_failure_data.error) for e in failed.all_events if e.is_step_failure
    )
    chunks = sorted((pop / "captions").glob("part-*.chunks/chunk-*.parquet"))
    assert len(chunks) == 1 and not list((pop / "captions").glob("part-*.parquet"))  # two batches of 2 = one chunk
    resumed = dg.materialize([pop_captions], resources=world["resources"], instance=world["instance"])
    meta = _metadata(resumed, "pop_captions")
    assert meta["resumed_from_chunks"] == 4 and meta["captioned_now"] == before.height - 4
    assert pl.read_parquet(sorted((pop / "table").glob("part-*.parquet"))).equals(before)
    assert not list((pop / "captions").glob("*.chunks"))
    again = _metadata(dg.materialize([pop_captions], resources=world["resources"], instance=world["instance"]),
                      "pop_captions")  # fmt: skip
    assert again["captioned_now"] == 0 and again["parts_kept"] == 1


def test_an_interrupted_caption_run_resumes_on_another_machine_from_a_remote_data_root(world, tmp_path):
    import shutil

    remote = tmp_path / "remote"
    for name in ("laion_pop", "images", "concepts.json", "centroids.json", "centroids.npy"):
        source = world["data_root"] / "pop" / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        (remote / "pop").mkdir(parents=True, exist_ok=True)
        copy(source, remote / "pop" / name)
    expected = pl.read_parquet(sorted((world["data_root"] / "pop" / "table").glob("part-*.parquet")))

    def resources(machine: str, vlm_class=VlmResource) -> dict:
        storage = StorageResource(source=str(tmp_path / "unused"), data_root=f"local://{remote}",
                                  staging=str(tmp_path / machine))  # fmt: skip
        return {**world["resources"], "storage": storage, "vlm": vlm_class(**world["resources"]["vlm"].model_dump())}

    failed = dg.materialize([pop_captions], resources=resources("first", InterruptedVlm), raise_on_error=False)
    assert not failed.success
    assert len(list((remote / "pop" / "captions").glob("part-*.chunks/chunk-*.parquet"))) == 1  # pushed as written
    done = dg.materialize([pop_captions], resources=resources("second"))  # a fresh staging folder: another machine
    meta = _metadata(done, "pop_captions")
    assert meta["resumed_from_chunks"] == 4 and meta["captioned_now"] == expected.height - 4
    assert pl.read_parquet(sorted((remote / "pop" / "table").glob("part-*.parquet"))).equals(expected)
    assert not list((remote / "pop" / "captions").glob("*.chunks"))


def test_no_image_fetched_means_no_model_loaded(world, tmp_path):
    import shutil

    root = tmp_path / "out"
    for name in ("laion_pop", "concepts.json", "centroids.json", "centroids.npy"):
        source = world["data_root"] / "pop" / name
        (root / "pop").mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / "pop" / name)
    (root / "pop" / "images" / "00000").mkdir(parents=True)  # every URL failed: no attempt holds an image
    resources = {
        **world["resources"],
        "storage": StorageResource(source=str(tmp_path / "unused"), data_root=str(root)),
        "vlm": VlmResource(model=str(tmp_path / "no-such-model")),  # loading it would fail the step
    }
    meta = _metadata(dg.materialize([pop_captions], resources=resources), "pop_captions")
    assert meta["dagster/row_count"] == 0 and meta["captioned_now"] == 0


def test_the_table_check_fails_on_an_untrimmed_or_empty_caption(world):
    first = pl.int_range(pl.len())
    caption = (
        pl.when(first == 0)
        .then(pl.lit("This image showcases a cat"))
        .when(first == 1)
        .then(pl.lit(" "))
        .otherwise(pl.col("llava_caption"))
        .alias("llava_caption")
    )
    table, evaluation = check_on_broken_part(
        world, world["data_root"] / "pop" / "table", lambda rows: rows.with_columns(caption), pop_captions,
        pop_table_sound,
    )  # fmt: skip
    assert not evaluation.passed
    assert evaluation.metadata["problems"].value == [
        f"1 row(s) have no caption, e.g. hash {table['hash'][1]}",
        "1 caption(s) still start with 'This image showcases'",
    ]
