"""LAION's released layout as it is: lowercase clip-retrieval columns, 4-digit parts with gaps, safety tags apart,
and sources and data root behind fsspec URLs."""

import re
import shutil
import uuid

import dagster as dg
import numpy as np
import polars as pl
import pytest
from upath import UPath

from laion_assets.definitions import ASSETS, CHECKS, default_resources
from laion_assets.defs.metadata import PREVIEW_ROWS
from laion_assets.defs.resources import PredictorsResource, StorageResource
from laion_assets.defs.sources.partitions import register_shards
from laion_assets.demos.local import run_graph, run_sample_pop
from laion_assets.release.manifest import load_manifest
from laion_assets.release.verify import verify_release
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS
from laion_assets.sources.hashing import laion_hashes
from laion_assets.sources.layout import discover_parts

SUBSETS = [r.asset_name for r in V2_SUBSETS + V1_SUBSETS]
NUMBERS = (0, 1, 3)  # a gap: part 2 is missing


def read_subsets(storage: StorageResource) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(storage.layout.subset_dir(name) / "part-00000.parquet") for name in SUBSETS}


def to_clip_retrieval(sample, out):
    """Rewrite our sample as clip-retrieval writes it, with LAION's safety tags in a separate table.

    Also returns the same rows in our sample layout with the safety values the join must produce, so that
    both layouts can be run and their subsets compared.
    """
    parts = discover_parts(sample)
    rng = np.random.default_rng(0)
    expected = out / "expected"
    safety_rows = []
    seen: dict[int, tuple[float, float]] = {}  # what the join must give each hash: its first safety row wins
    for number, part in zip(NUMBERS, parts, strict=True):
        meta = pl.read_parquet(part.metadata)
        n = meta.height
        lower = pl.DataFrame({
            "image_path": [f"{number:04d}/{i:05d}.jpg" for i in range(n)],
            "caption": meta["TEXT"], "url": meta["URL"], "key": [f"{number:04d}{i:05d}" for i in range(n)],
            "status": ["success"] * n, "error_message": [None] * n,
            "width": [224] * n, "height": [224] * n,
            "original_width": meta["WIDTH"].cast(pl.Int64), "original_height": meta["HEIGHT"].cast(pl.Int64),
            "exif": ["{}"] * n, "similarity": meta["similarity"], "NSFW": ["UNLIKELY"] * n,
            "LICENSE": ["?"] * n, "md5": ["0" * 32] * n, "LANGUAGE": meta["LANGUAGE"],
        })  # fmt: skip
        for folder in ("img_emb", "metadata"):
            (out / "laion" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(part.embeddings, out / "laion" / "img_emb" / f"img_emb_{number:04d}.npy")
        lower.write_parquet(out / "laion" / "metadata" / f"metadata_{number:04d}.parquet")

        hashes = laion_hashes(meta["URL"], meta["TEXT"])
        has_tags = rng.random(n) > 0.05  # about 5 % of rows have no safety tags at all
        no_watermark = rng.random(n) < 0.1  # about 10 % miss pwatermark -> 0.5
        punsafe = meta["punsafe"].to_numpy()
        pwatermark = np.where(no_watermark, np.nan, meta["pwatermark"].to_numpy())
        for i in range(n):
            if has_tags[i]:
                safety_rows.append(
                    (int(hashes[i]), float(punsafe[i]), None if no_watermark[i] else float(pwatermark[i]))
                )
                seen.setdefault(int(hashes[i]), (float(punsafe[i]), 0.5 if no_watermark[i] else float(pwatermark[i])))
        # Later duplicates of tagged rows must lose to the first occurrence.
        safety_rows.extend((int(h), 0.99, 0.99) for h, tagged in zip(hashes[:20], has_tags[:20], strict=True) if tagged)
    (expected / "img_emb").mkdir(parents=True)
    (expected / "metadata").mkdir(parents=True)
    for number, part in zip(NUMBERS, parts, strict=True):
        meta = pl.read_parquet(part.metadata)
        hashes = laion_hashes(meta["URL"], meta["TEXT"])
        meta.with_columns(
            pl.Series("punsafe", [seen.get(int(h), (None, None))[0] for h in hashes], pl.Float32),
            pl.Series("pwatermark", [seen.get(int(h), (None, None))[1] for h in hashes], pl.Float32),
        ).write_parquet(expected / "metadata" / f"metadata_{number}.parquet")
        shutil.copy(part.embeddings, expected / "img_emb" / f"img_emb_{number}.npy")
    # Several files, like LAION's joined metadata; URL/TEXT carried but unused.
    frame = pl.DataFrame(safety_rows, schema={"hash": pl.Int64, "punsafe": pl.Float32, "pwatermark": pl.Float32},
                         orient="row")  # fmt: skip
    (out / "safety").mkdir()
    for i, chunk in enumerate(frame.iter_slices(n_rows=frame.height // 3 + 1)):
        chunk.with_columns(pl.lit("http://x").alias("URL"), pl.lit("t").alias("TEXT")).write_parquet(
            out / "safety" / f"part-{i:05d}-joined.parquet"
        )
    return out / "laion", out / "safety", expected


@pytest.fixture
def laion_layout(small_sample_session, tmp_path):
    return to_clip_retrieval(small_sample_session, tmp_path)


def test_laion_layout_with_separate_safety_gives_the_same_subsets(laion_layout, tmp_path):
    laion, safety, expected = laion_layout
    assert [p.key for p in discover_parts(laion)] == ["00000", "00001", "00003"]
    storage = StorageResource(source=str(laion), safety=str(safety), data_root=str(tmp_path / "out-laion"))
    instance = dg.DagsterInstance.ephemeral()
    counts = run_graph(instance, storage, PredictorsResource())
    reference = StorageResource(source=str(expected), data_root=str(tmp_path / "out-ref"))
    run_graph(dg.DagsterInstance.ephemeral(), reference, PredictorsResource())
    got, want = read_subsets(storage), read_subsets(reference)
    for name in SUBSETS:
        assert got[name].equals(want[name]), name
        assert got[name].height == counts[name] > 0
    tags = pl.read_parquet(sorted(storage.layout.tags_dir.glob("*.parquet")))
    # Rows the safety table lacks take our NSFW head's punsafe (provided_else_computed); pwatermark has no head here.
    computed = tags.filter(pl.col("punsafe_source") == "computed")
    assert computed.height > 0 and computed["pwatermark"].null_count() == computed.height
    assert (tags["punsafe_source"] == "provided").sum() == tags.height - computed.height
    # Rows without safety tags are never in the V1 subsets.
    no_tags = set(tags.filter(pl.col("punsafe").is_null() | pl.col("pwatermark").is_null())["hash"].to_list())
    assert no_tags
    assert not no_tags & set(got["laion_aesthetic"]["hash"].to_list())
    # LAION-POP's selection on this layout: its blocking check passes (run_sample_pop stops on a failed check), and
    # rows the safety table lacks (no pwatermark) are never selected.
    pop = run_sample_pop(instance, storage)
    selected = pl.read_parquet(sorted((storage.layout.pop_selection_dir).glob("part-*.parquet")))
    assert selected.height == pop["laion_pop"] > 0
    assert selected["pwatermark"].null_count() == 0 and not no_tags & set(selected["hash"].to_list())
    # The release records the safety table, and verify rebuilds it byte for byte from both inputs.
    release_dir = storage.layout.release_dir("v0.1.0")
    assert len(load_manifest(release_dir)["inputs"]["safety"]["files"]) == 3
    report = verify_release(release_dir, source=laion, safety=safety, workdir=tmp_path)
    assert report.ok, report.text()
    # safety_tags shows its three row-aligned npy columns as a table: their types and first rows.
    meta = instance.get_latest_materialization_event(dg.AssetKey("safety_tags")).asset_materialization.metadata
    columns = {n: np.load(storage.layout.safety_dir / f"{n}.npy") for n in ("hash", "punsafe", "pwatermark")}
    published = [(c.name, c.type) for c in meta["dagster/column_schema"].schema.columns]
    assert published == [(n, {"int64": "Int64", "float32": "Float32"}[str(a.dtype)]) for n, a in columns.items()]
    records = meta["preview"].records
    assert len(records) == PREVIEW_ROWS
    for i, record in enumerate(records):
        assert record.data["hash"] in (int(columns["hash"][i]), str(columns["hash"][i]))
        assert record.data["punsafe"] == pytest.approx(float(columns["punsafe"][i]), abs=5e-5)


def test_safety_table_without_hash_fails_naming_the_file(laion_layout, tmp_path):
    laion, safety, _ = laion_layout
    bad = safety / "part-00001-joined.parquet"
    pl.read_parquet(bad).drop("hash").write_parquet(bad)
    storage = StorageResource(source=str(laion), safety=str(safety), data_root=str(tmp_path / "out"))
    resources = {**default_resources(), "storage": storage}
    result = dg.materialize([*ASSETS, *CHECKS], selection=["safety_tags"], resources=resources, raise_on_error=False)
    text = "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)
    assert re.search(r"part-00001-joined\.parquet: safety table has no 'hash' column", text), text


def test_source_and_data_root_through_fsspec_urls(small_sample_session, tmp_path):
    bucket = UPath(f"memory://laion-assets-e2e-{uuid.uuid4().hex}")
    for path in small_sample_session.rglob("*"):
        if path.is_file():
            target = bucket / "src" / path.relative_to(small_sample_session).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    remote = StorageResource(source=str(bucket / "src"), data_root=str(bucket / "out"), staging=str(tmp_path / "stg"))
    counts = run_graph(dg.DagsterInstance.ephemeral(), remote, PredictorsResource())
    local = StorageResource(source=str(small_sample_session), data_root=str(tmp_path / "local"))
    run_graph(dg.DagsterInstance.ephemeral(), local, PredictorsResource())
    for name in SUBSETS:
        pushed = bucket / "out" / "subsets" / name / "part-00000.parquet"
        assert pl.read_parquet(pushed.read_bytes()).equals(read_subsets(local)[name]), name
        assert counts[name] > 0
    for k in range(10):
        assert (bucket / "out" / "buckets" / f"rating{k}.npy").read_bytes() == (
            local.layout.buckets_dir / f"rating{k}.npy"
        ).read_bytes()
    # A fresh working copy (another machine) pulls what it needs and rebuilds a subset from the remote root alone.
    elsewhere = StorageResource(source=str(bucket / "src"), data_root=str(bucket / "out"), staging=str(tmp_path / "b"))
    instance = dg.DagsterInstance.ephemeral()
    register_shards(instance, elsewhere.source_path)
    # It passes the release gate from the remote root alone (each shard's recorded validation is pulled) and
    # finds the release already holds these contents.
    result = dg.materialize([*ASSETS, *CHECKS], selection=["subset_6_5plus", "bucket_embeddings", "release"],
                            instance=instance, resources={**default_resources(), "storage": elsewhere,
                                                          "predictors": PredictorsResource()})  # fmt: skip
    assert result.success
    release = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("release"))
    assert release.materialization.metadata["unchanged"].value is True
    bucket.fs.rm(bucket.path, recursive=True)
