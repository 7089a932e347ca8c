"""``make demo-urls`` as the README shows it: the URL chain with both safety heads computed (issue 12, acceptance 2).

Its URL shards carry no ``punsafe``/``pwatermark``: LAION's NSFW head computes the one from the embeddings, the
watermark head (seeded random weights) the other from the images, and laion_aesthetic/laion_art are not empty.
The release's card says both were computed, and ``verify`` rebuilds it, taking pwatermark from the data root's
per-shard watermark files (a rebuild from embeddings cannot score images).
"""

from __future__ import annotations

import json
import re
import subprocess

import polars as pl
import pytest

from laion_assets.release.verify import verify_release
from laion_assets_tests.fresh_copy import copy_project, make_venv, section_commands, user_env

SECTION = "From URLs: img2dataset downloads and the CLIP embedding resource"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    copy = copy_project(tmp_path_factory.mktemp("project"))
    venv = make_venv(copy)
    (line,) = [c for c in section_commands(SECTION) if c.startswith("make demo-urls")]
    env = user_env(PATH=f"{venv / 'bin'}:{user_env()['PATH']}")
    run = subprocess.run(["bash", "-c", line], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    return copy, run


def test_demo_urls_fills_laion_aesthetic_and_laion_art_with_computed_safety_columns(demo):
    copy, run = demo
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    rows = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+) rows$", run.stdout, re.M)}
    assert rows["laion_aesthetic"] > 0 and rows["laion_art"] > 0, run.stdout
    out = copy / "data" / "demo-urls" / "out"
    tags = pl.read_parquet(sorted((out / "tags").glob("part-*.parquet")))
    for column in ("punsafe", "pwatermark"):
        assert tags[f"{column}_source"].to_list() == ["computed"] * tags.height
        assert tags[column].null_count() == 0
    art = pl.read_parquet(sorted((out / "subsets" / "laion_art").glob("part-*.parquet")))
    assert art.height == rows["laion_art"] and (art["punsafe"] < 0.5).all() and (art["pwatermark"] < 0.8).all()
    release = out / "releases" / "v0.1.0"
    manifest = json.loads((release / "manifest.json").read_text())
    for column, head in (("punsafe", "nsfw-autokeras-l14@"), ("pwatermark", "watermark-effnet-b3a@")):
        entry = manifest["inputs"]["safety_columns"][column]
        assert entry["computed_rows"] == tags.height and entry["provided_rows"] == 0
        assert entry["head"].startswith(head) and manifest["predictors"][column]["identity"] == entry["head"]
    assert manifest["predictors"]["pwatermark"]["input"] == "images"
    card = (release / "README.md").read_text()
    assert f"0 rows provided by LAION, {tags.height:,} computed (`nsfw-autokeras-l14@" in card
    assert f"0 rows provided by LAION, {tags.height:,} computed (`watermark-effnet-b3a@" in card


def test_demo_urls_runs_laion_pop_and_releases_it(demo):
    copy, run = demo
    assert run.returncode == 0
    assert [c.split("#")[0].strip() for c in section_commands("LAION-POP")] == ["make demo-urls"]
    rows = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+) rows$", run.stdout, re.M)}
    assert rows["pop_centroids"] == 8 and rows["laion_pop"] > 0 and rows["pop_captions"] > 0, run.stdout
    out = copy / "data" / "demo-urls" / "out"
    table = pl.read_parquet(sorted((out / "pop" / "table").glob("part-*.parquet")))
    assert table.height == rows["pop_captions"] and (table["llava_caption"].str.len_chars() > 0).all()
    assert table.select(pl.min_horizontal("width", "height") >= 512).to_series().all()
    release = out / "releases" / "v0.1.1"
    manifest = json.loads((release / "manifest.json").read_text())
    released = [rel for rel in manifest["files"] if rel.startswith("data/laion-pop/") and rel.endswith(".parquet")]
    assert released and sum(manifest["files"][rel]["rows"] for rel in released) == table.height
    assert "laion_pop" in (release / "README.md").read_text()


def test_the_demo_release_verifies_with_the_data_roots_watermark_files(demo, tmp_path):
    copy, run = demo
    assert run.returncode == 0
    out = copy / "data" / "demo-urls" / "out"
    # The manifest names the source project-relative: in this copy, not in the project the tests run from.
    report = verify_release(out / "releases" / "v0.1.0", source=out / "embedded", workdir=tmp_path)
    assert report.ok, report.differing
    assert any("pwatermark was computed from images" in note for note in report.notes)
