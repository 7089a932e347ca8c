"""LAION's CLIP-based NSFW detector as the ``punsafe`` head: the numpy port against the Keras SavedModel (issue 12
acceptance 1), its "%f" lookup, its identity and bad files, staleness and re-scoring when the head changes
(acceptance 3), and ``laion-assets score --heads punsafe`` on float16 and float32 folders (acceptance 5).

The reference numbers were made once with TensorFlow (``scripts/nsfw_extract.py``, in a throwaway environment):
the SavedModel's output on inputs the tests rebuild from the recorded seed (their sha256 is recorded too).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from laion_assets.cli import main
from laion_assets.core.errors import BadInputError
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.paths import NSFW_B32_WEIGHTS, NSFW_L14_WEIGHTS, V1_WEIGHTS, V2_WEIGHTS
from laion_assets.defs.resources import PredictorsResource
from laion_assets.scoring.active import load_active, read_active, write_active
from laion_assets.scoring.nsfw import (
    NSFW_B32,
    NSFW_L14,
    NsfwPredictor,
    arrays_sha256,
    key_codes,
    percent_f_codes,
    read_arrays,
)
from laion_assets.scoring.parts import read_identities, score_part
from laion_assets.scoring.predictors import inspect_weights, load_for_column, load_predictor
from laion_assets.scoring.rescoring import CURRENT, STALE, rescore, shard_states
from laion_assets.sources.indexing import index_part
from laion_assets.sources.layout import discover_parts

REFERENCE = Path(__file__).parent / "data" / "nsfw_keras_reference.npz"
# As data/models/nsfw/ORIGIN.md records them.
L14_IDENTITY = "nsfw-autokeras-l14@sha256:653467282888853dc5b2b2262b20cf3af22d145e7a30f384eae347b6b7464a6f"
B32_IDENTITY = "nsfw-autokeras-b32@sha256:f0232e78e2057f71521b2d6eef18a00b12cc31050e8a41695a89732daf0430cf"


@pytest.fixture(scope="module")
def l14() -> NsfwPredictor:
    return load_for_column(NSFW_L14_WEIGHTS, "punsafe")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def b32() -> NsfwPredictor:
    return load_for_column(NSFW_B32_WEIGHTS, "punsafe", dim=512)  # type: ignore[return-value]


def reference_inputs(seed: int, rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """scripts/nsfw_extract.py's recipe: 2*rows random unit vectors, float32; the second half gets vocab values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * rows, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    return x[:rows], x[rows:].copy()


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


@pytest.mark.parametrize("model", ["l14", "b32"])
def test_port_matches_the_keras_savedmodel(model, request):
    predictor = request.getfixturevalue(model)
    ref = np.load(REFERENCE, allow_pickle=False)
    rows = len(ref[f"{model}_random_p"])
    random, vocab = reference_inputs(int(ref["seed"]), rows, predictor.dim)
    columns = [c for c, *_ in predictor.lookups]
    vocab[:, columns] = ref[f"{model}_vocab_values"]
    for case, x in (("random", random), ("vocab", vocab)):
        assert sha256(x) == str(ref[f"{model}_{case}_sha256"]), f"{case}: not the inputs the SavedModel was run on"
        p = predictor.score(x)
        assert p.dtype == np.float32 and p.shape == (rows,)
        diff = np.abs(p - ref[f"{model}_{case}_p"]).max()
        assert diff < 1e-3  # the acceptance bound; measured: L14 1.5e-8, B32 5.1e-7
        assert diff < 1e-5
    # the vocab rows really go through the lookup: every lookup column gets a non-zero id
    assert (predictor.encode(vocab)[:, columns] > 0).all()
    # and the lookup matters: the raw values in place of the ids give other logits
    raw = (vocab - predictor.mean) / predictor.scale
    for kernel, bias in predictor.layers[:-1]:
        raw = np.maximum(raw @ kernel + bias, 0)
    raw = (raw @ predictor.layers[-1][0] + predictor.layers[-1][1])[:, 0]
    assert np.abs(raw - predictor.logits(vocab)).max() > 0.1


def test_percent_f_codes_equal_c_printf_strings():
    rng = np.random.default_rng(1)
    ties = np.arange(-1024, 1025, dtype=np.float32) * np.float32(2**-7)  # odd multiples print 7 decimals ending in 5
    values = np.concatenate(
        [
            ties,
            ties + np.float32(2**-20),
            rng.standard_normal(20000).astype(np.float32) * np.float32(0.05),
            rng.standard_normal(5000).astype(np.float32) * np.float32(1e-6),  # around the last printed digit
            (rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 9, 2000)).astype(np.float32),
            np.array([0.0, -0.0, 4e-7, -4e-7, 5e-7, -5e-7, 6e-7, -6e-7, 1e-45, -1e-45], dtype=np.float32),
        ]
    )
    printed = np.array(["%f" % float(v) for v in values])  # noqa: UP031 (C's "%f" is what TF's AsString prints)
    assert "-0.000000" in printed and "0.000000" in printed
    np.testing.assert_array_equal(percent_f_codes(values), key_codes(printed))
    # NaN, Inf and values too large for any key are misses, never a code a key can have
    odd = percent_f_codes(np.array([np.nan, np.inf, -np.inf, 3e38], dtype=np.float32))
    assert (odd == np.iinfo(np.int64).max).all()


def test_encoding_handles_nan_like_autokeras(l14):
    x = np.zeros((2, 768), dtype=np.float32)
    key = l14.lookups[0][0], float(read_arrays(NSFW_L14_WEIGHTS)[f"lookup_keys_{l14.lookups[0][0]}"][0])
    x[:, key[0]] = key[1]
    x[1, 7] = np.nan  # a numeric column: NaN -> 0
    x[1, key[0]] = np.nan  # a lookup column: "nan" is no key -> id 0
    encoded = l14.encode(x)
    assert encoded[0, key[0]] > 0 and encoded[1, key[0]] == 0 and encoded[1, 7] == 0
    # the fused pass the head runs is the same float32 operations as the encoding then the Normalization layer
    x[0, 100] = np.float32(0.123)
    assert np.array_equal(l14.normalized(x), (l14.encode(x) - l14.mean) / l14.scale)
    y = np.random.default_rng(2).standard_normal((64, 768)).astype(np.float32) * np.float32(0.05)
    assert np.array_equal(l14.normalized(y), (l14.encode(y) - l14.mean) / l14.scale)
    assert np.isfinite(l14.score(x)).all()


def test_identities_are_the_recorded_ones_and_follow_the_arrays(l14, b32, tmp_path):
    assert str(l14.identity) == L14_IDENTITY and str(b32.identity) == B32_IDENTITY
    assert (l14.kind, b32.kind) == (NSFW_L14, NSFW_B32)
    arrays = read_arrays(NSFW_L14_WEIGHTS)
    # the same arrays saved again, uncompressed and with wider key strings: the same identity
    wide = {k: (v.astype("<U32") if v.dtype.kind == "U" else v) for k, v in arrays.items()}
    np.savez(tmp_path / "again.npz", **wide)
    assert str(inspect_weights(tmp_path / "again.npz").identity) == L14_IDENTITY
    # one bias changed, or one lookup id changed: another identity
    changed = dict(arrays, dense3_bias=arrays["dense3_bias"] + np.float32(0.5))
    assert arrays_sha256(changed) != arrays_sha256(arrays)
    relabelled = dict(arrays, lookup_values_180=arrays["lookup_values_180"][::-1].copy())
    assert arrays_sha256(relabelled) != arrays_sha256(arrays)


def test_bad_files_are_refused_naming_the_file(tmp_path):
    arrays = read_arrays(NSFW_L14_WEIGHTS)

    def saved(name: str, **changes) -> Path:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{k: v for k, v in {**arrays, **changes}.items() if v is not None})
        return path

    with pytest.raises(BadInputError, match=r"missing\.npz: NSFW head file not found"):
        load_for_column(tmp_path / "missing.npz", "punsafe")
    with pytest.raises(BadInputError, match=r"no_mean\.npz: arrays \['mean'\] missing"):
        load_for_column(saved("no_mean", mean=None), "punsafe")
    with pytest.raises(
        BadInputError, match=r"shape\.npz: dense1_kernel is float32 \(63, 512\), expected float32 \(64,"
    ):
        load_for_column(saved("shape", dense1_kernel=arrays["dense1_kernel"][:63]), "punsafe")
    with pytest.raises(BadInputError, match=r"table\.npz: lookup_values_413 missing|table\.npz: arrays missing"):
        load_for_column(saved("table", lookup_values_413=None), "punsafe")
    np.savez(tmp_path / "pickled.npz", **arrays, extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadInputError, match=r"pickled\.npz: cannot read as a numpy \.npz of arrays \(no pickles\)"):
        load_for_column(tmp_path / "pickled.npz", "punsafe")
    variance = arrays["variance"].copy()
    variance[3] = np.nan
    nan = saved("nan", variance=variance)
    with pytest.raises(BadInputError, match=r"nan\.npz: refused as the predictor of 'punsafe': array variance holds 1"):
        load_for_column(nan, "punsafe")
    assert inspect_weights(nan, "punsafe").problems == ("array variance holds 1 NaN/Inf value(s) of 768",)
    assert load_for_column(nan, "punsafe", force=True).kind == NSFW_L14
    # kinds: an NSFW head is not an aesthetic head, nor the reverse; the B32 head takes 512-d embeddings
    with pytest.raises(BadInputError, match="its kind is nsfw-autokeras-l14, but 'aesthetic' takes v1-linear"):
        load_for_column(NSFW_L14_WEIGHTS, "aesthetic")
    with pytest.raises(BadInputError, match="its kind is v1-linear, but 'punsafe' takes nsfw-autokeras-l14 or"):
        load_for_column(V1_WEIGHTS, "punsafe")
    with pytest.raises(BadInputError, match=r"clip_autokeras_nsfw_b32\.npz: NSFW head nsfw-autokeras-b32 takes 512"):
        load_predictor(NSFW_B32_WEIGHTS)


def test_optional_punsafe_in_the_predictors_file(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(f"aesthetic: {V1_WEIGHTS}\nAESTHETIC_SCORE: {V2_WEIGHTS}\n")  # written before the NSFW head
    assert list(read_active(old)) == ["aesthetic", "AESTHETIC_SCORE"]
    assert list(PredictorsResource(config_file=str(old)).weights()) == ["aesthetic", "AESTHETIC_SCORE"]
    with pytest.raises(BadInputError, match=r"\['punsafe'\] is optional and .*old\.yaml does not configure it"):
        load_active(768, ["punsafe"], old)
    main(["activate", "punsafe", str(NSFW_L14_WEIGHTS), "--config", str(old)])
    assert read_active(old)["punsafe"] == str(NSFW_L14_WEIGHTS)
    assert str(load_active(768, ["punsafe"], old)["punsafe"].identity) == L14_IDENTITY
    # the B32 head is activated for 512-d embeddings
    main(["activate", "punsafe", str(NSFW_B32_WEIGHTS), "--config", str(old), "--dim", "512"])
    assert str(load_active(512, ["punsafe"], old)["punsafe"].identity) == B32_IDENTITY
    # the shipped file configures it
    assert read_active()["punsafe"] == "data/models/nsfw/clip_autokeras_binary_nsfw.npz"


def test_another_nsfw_head_outdates_exactly_the_shards_it_did_not_score(small_sample, tmp_path):
    arrays = read_arrays(NSFW_L14_WEIGHTS)
    other = tmp_path / "other_nsfw.npz"
    np.savez(other, **dict(arrays, dense3_bias=arrays["dense3_bias"] + np.float32(1.0)))
    config = tmp_path / "predictors.yaml"
    write_active(read_active(), config)
    released = PredictorsResource(config_file=str(config))
    swapped = PredictorsResource(config_file=str(config), nsfw_weights=str(other))
    layout = OutputLayout(tmp_path / "out")
    parts = {p.key: p for p in discover_parts(small_sample)[:2]}
    for key, part in parts.items():
        index_part(part, layout.shard_metadata(key), 768)
    score_part(parts["00000"], layout.shard_metadata("00000"), released.load(), layout.shard_scores("00000"))
    score_part(parts["00001"], layout.shard_metadata("00001"), swapped.load(), layout.shard_scores("00001"))
    before = pl.read_parquet(layout.shard_scores("00000"))
    assert before.columns == ["hash", "aesthetic", "AESTHETIC_SCORE", "punsafe"]

    active = swapped.identities()
    assert active["aesthetic"] == released.identities()["aesthetic"]
    assert active["punsafe"] != released.identities()["punsafe"]
    states = {s.key: s for s in shard_states(list(parts), layout, active)}
    assert {k: s.status for k, s in states.items()} == {"00000": STALE, "00001": CURRENT}
    assert states["00000"].reason == f"scored by other predictors (punsafe: {L14_IDENTITY} -> {active['punsafe']})"

    done = [s.key for s in rescore([k for k, s in states.items() if s.needs_scores], layout, parts, swapped.load())]
    assert done == ["00000"]
    assert {s.status for s in shard_states(list(parts), layout, active)} == {CURRENT}
    assert read_identities(layout.shard_scores("00000")) == active
    after = pl.read_parquet(layout.shard_scores("00000"))
    for column in ("aesthetic", "AESTHETIC_SCORE"):  # the aesthetic heads did not change, nor their scores
        assert after[column].equals(before[column])
    assert (after["punsafe"].to_numpy() > before["punsafe"].to_numpy()).all()  # a larger bias: larger punsafe


def test_score_cli_heads_punsafe_on_float16_and_float32_folders(small_sample_session, tmp_path, l14):
    f32 = tmp_path / "f32"
    shutil.copytree(small_sample_session, f32)
    part = discover_parts(f32)[0]
    vectors = np.load(part.embeddings)
    assert vectors.dtype == np.float16
    np.save(part.embeddings, vectors.astype(np.float32))
    for name, folder in (("f16", small_sample_session), ("f32", f32)):
        out = tmp_path / f"scores-{name}"
        main(["score", str(folder), "--out", str(out), "--heads", "punsafe", "--parts", "0", "--workers", "1"])
        table = pl.read_parquet(out / "scores_0.parquet")
        assert table.schema == pl.Schema({"hash": pl.Int64, "punsafe": pl.Float32})
        expected = l14.score(np.load(discover_parts(folder)[0].embeddings).astype(np.float32))
        np.testing.assert_allclose(table["punsafe"].to_numpy(), expected, rtol=0, atol=1e-6)
        assert read_identities(out / "scores_0.parquet") == {"punsafe": l14.identity}
    with pytest.raises(SystemExit):
        main(["score", str(f32), "--out", str(tmp_path / "x"), "--heads", "nsfw"])
