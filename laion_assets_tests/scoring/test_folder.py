"""`laion-assets score`'s pure half: one fused pass per part, scores_N.parquet each, resumable, bad parts named."""

from __future__ import annotations

import os
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from laion_assets.cli import main
from laion_assets.core.errors import BadInputError
from laion_assets.scoring.active import load_active
from laion_assets.scoring.folder import score_folder, score_folder_part, scores_file, select_parts
from laion_assets.scoring.parts import read_identities
from laion_assets.scoring.stored import score_array
from laion_assets.sources.layout import discover_parts
from laion_assets.sources.metadata import read_hashes, read_metadata


@pytest.fixture(scope="module")
def predictors():
    return load_active(768)


@pytest.fixture(scope="module")
def gappy(small_sample_session, tmp_path_factory):
    """The small sample with its parts renumbered 3, 10 and 42, zero-padded to four digits (gaps in the numbering)."""
    out = tmp_path_factory.mktemp("gappy") / "src"
    for old, new in zip(range(3), ("0003", "0010", "0042"), strict=True):
        for kind, name, ext in (("img_emb", "img_emb", "npy"), ("metadata", "metadata", "parquet")):
            (out / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(small_sample_session / kind / f"{name}_{old}.{ext}", out / kind / f"{name}_{new}.{ext}")
    return out


def test_cli_scores_a_folder_with_gaps_and_zero_padded_names(gappy, tmp_path, predictors, capsys):
    out = tmp_path / "scores"
    main(["score", str(gappy), "--out", str(out), "--workers", "2"])
    assert sorted(p.name for p in out.iterdir()) == [
        "scores_0003.parquet",
        "scores_0010.parquet",
        "scores_0042.parquet",
    ]
    for part in discover_parts(gappy):
        table = pl.read_parquet(scores_file(part, out))
        assert table.schema == pl.Schema(
            {"hash": pl.Int64, "aesthetic": pl.Float32, "AESTHETIC_SCORE": pl.Float32, "punsafe": pl.Float32}
        )
        # row-aligned with the part: LAION's hash as clip_embeddings computes it, scores of the same row
        assert table["hash"].equals(read_metadata(part.metadata)["hash"])
        expected = score_array(np.load(part.embeddings), predictors)
        for name in predictors:
            np.testing.assert_allclose(table[name].to_numpy(), expected[name], rtol=0, atol=1e-5)
        assert read_identities(scores_file(part, out)) == {k: p.identity for k, p in predictors.items()}
    err = capsys.readouterr().err
    assert "3 part(s) of" in err and "400 rows in" in err and "rows/s" in err and "-> scores_0042.parquet" in err

    # a second run skips every part; changed inputs or other heads score a part again; --force scores all
    main(["score", str(gappy), "--out", str(out)])
    assert capsys.readouterr().err.count("skipped") == 3
    meta = gappy / "metadata" / "metadata_0010.parquet"
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 1_000_000_000))
    main(["score", str(gappy), "--out", str(out)])
    err = capsys.readouterr().err
    assert err.count("skipped") == 2 and "part 10: 400 rows" in err
    main(["score", str(gappy), "--out", str(out), "--heads", "AESTHETIC_SCORE", "--parts", "3,40-50"])
    err = capsys.readouterr().err
    assert "2 part(s)" in err and err.count("400 rows in") == 2
    assert pl.read_parquet(out / "scores_0042.parquet").columns == ["hash", "AESTHETIC_SCORE"]


def test_unknown_heads_and_parts_are_named(gappy, tmp_path):
    with pytest.raises(
        SystemExit, match=r"unknown head\(s\) \['nsfw'\].*\['aesthetic', 'AESTHETIC_SCORE', 'punsafe'\]"
    ):
        main(["score", str(gappy), "--out", str(tmp_path), "--heads", "aesthetic,nsfw"])
    parts = discover_parts(gappy)
    assert [p.number for p in select_parts(parts, "0-5, 42")] == [3, 42]
    with pytest.raises(BadInputError, match="no part numbered 4 "):
        select_parts(parts, "4")
    assert not list(tmp_path.iterdir())


def damage(part, kind):
    emb = np.load(part.embeddings)
    if kind == "nan":
        emb[5, 3] = np.nan
    elif kind == "norm":
        emb[5] *= 3
    elif kind == "width":
        emb = emb[:, :512]
    elif kind == "rows":
        emb = emb[:-1]
    np.save(part.embeddings, emb)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan", r"img_emb_1\.npy: row 5 has NaN or Inf values"),
        ("norm", r"img_emb_1\.npy: row 5 has L2 norm (2\.99|3\.00)\d\d; stored embeddings must be L2-normalised"),
        ("width", r"img_emb_1\.npy: embedding width is 512, expected 768"),
        ("rows", r"img_emb_1\.npy: 399 embedding rows but .*metadata_1\.parquet has 400 rows"),
    ],
)
def test_a_bad_part_is_named_writes_nothing_and_the_others_go_on(small_sample, tmp_path, predictors, kind, message):
    parts = discover_parts(small_sample)
    damage(parts[1], kind)
    with pytest.raises(BadInputError, match=message):
        score_folder_part(parts[1], predictors, tmp_path)
    results = dict(score_folder(parts, predictors, tmp_path / "all", workers=2))
    assert isinstance(results[parts[1]], BadInputError)
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["scores_0.parquet", "scores_2.parquet"]
    assert not (tmp_path / "scores_1.parquet").exists()


def test_hashes_read_alone_equal_the_indexed_ones(small_sample):
    part = discover_parts(small_sample)[0]
    frame = pl.read_parquet(part.metadata)
    # clip-retrieval's lowercase columns, and an all-null URL beside a filled url: the same mapping as read_metadata
    frame = frame.rename({"URL": "url", "TEXT": "caption"}).with_columns(pl.lit(None, pl.String).alias("URL"))
    frame.write_parquet(part.metadata)
    assert read_hashes(part.metadata).equals(read_metadata(part.metadata)["hash"])
    assert pq.read_metadata(part.metadata).num_rows == 400


def test_score_parts_scores_indexed_parts_in_parallel_and_reports_each(small_sample, tmp_path, predictors):
    from laion_assets.scoring.parallel import score_parts
    from laion_assets.scoring.parts import ScoredPart
    from laion_assets.sources.indexing import index_part

    parts = discover_parts(small_sample)
    jobs = []
    for part in parts:
        index_part(part, tmp_path / f"metadata_{part.key}.parquet", 768)
        jobs.append((part, tmp_path / f"metadata_{part.key}.parquet", tmp_path / f"scores_{part.key}.parquet"))
    damage(parts[2], "nan")  # changed since it was indexed: refused, naming the shard; the others are scored
    results = dict(score_parts(jobs, predictors, workers=2))
    assert all(isinstance(results[p], ScoredPart) and results[p].rows == 400 for p in parts[:2])
    assert isinstance(results[parts[2]], Exception) and f"shard {parts[2].key}" in str(results[parts[2]])
    folder = dict(score_folder(parts[:2], predictors, tmp_path / "cli"))
    for part in parts[:2]:
        mine = pl.read_parquet(folder[part].out)
        assert mine.equals(pl.read_parquet(tmp_path / f"scores_{part.key}.parquet"))


def test_a_folder_behind_a_url_is_streamed_and_scores_the_same(small_sample_session, tmp_path):
    from upath import UPath

    url = f"memory://score-{tmp_path.name}"
    for path in small_sample_session.rglob("*"):
        if path.is_file():
            UPath(f"{url}/{path.relative_to(small_sample_session).as_posix()}").write_bytes(path.read_bytes())
    main(["score", url, "--out", str(tmp_path / "remote"), "--parts", "1"])
    main(["score", str(small_sample_session), "--out", str(tmp_path / "local"), "--parts", "1"])
    remote, local = (pl.read_parquet(tmp_path / kind / "scores_1.parquet") for kind in ("remote", "local"))
    assert remote.height == 400 and remote.equals(local)
