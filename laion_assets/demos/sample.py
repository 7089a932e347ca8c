"""A deterministic LAION-like sample in clip-retrieval's layout, built from LAION's real bucket embeddings.

Each embedding starts on the path through LAION's ten ``rating{k}`` bucket means (the sums of real CLIP
ViT-L/14 embeddings per V1 score bucket), gets isotropic noise, and is then nudged inside the plane of the
V1 and V2 weight vectors until the real predictors give drawn target scores. The result spreads both scores
over 0-10 so every subset (laion_art and subset_6_5plus included) is non-empty, while each vector still
looks like a CLIP embedding (cosine to its bucket mean about 0.8). Metadata takes real URLs and captions from
img2dataset's ``test_1000.parquet`` and adds unsafe, watermarked, duplicate and non-English rows.

Run ``python -m laion_assets.demos.sample OUT_DIR`` to (re)build it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from laion_assets.core.atomic import atomic_dir, save_npy, write_parquet
from laion_assets.core.paths import DEFAULT_SOURCE, REFERENCE_DIR, V1_WEIGHTS, V2_WEIGHTS
from laion_assets.scoring.predictors import LinearPredictor, load_predictor
from laion_assets.sources.embeddings import l2_normalize

LANGUAGES = ("de", "fr", "es", "it", "pt", "nl", "ru", "ja", "zh", "pl")
SIZES = (256, 300, 320, 400, 450, 480, 500, 512, 600, 640, 720, 768, 800, 1024, 1200, 1280, 1600, 1920)


@dataclass(frozen=True)
class SampleSpec:
    """How big the sample is and how it is drawn."""

    parts: int = 4
    rows_per_part: int = 2500
    seed: int = 0
    noise: float = 0.75  # norm of the isotropic noise added to each bucket mean
    unsafe_share: float = 0.06
    watermark_share: float = 0.10
    duplicate_share: float = 0.02
    english_share: float = 0.72
    no_language_share: float = 0.05


def _ratings(reference_dir: Path) -> np.ndarray:
    folder = reference_dir / "vit_l_14_embeddings"
    return np.concatenate([np.load(folder / f"rating{k}.npy") for k in range(10)]).astype(np.float64)


def _embeddings(
    rng: np.random.Generator, n: int, spec: SampleSpec, ratings: np.ndarray, v1: LinearPredictor, v2: LinearPredictor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n unit embeddings whose V1/V2 scores hit correlated targets; returns (emb, v1_t, v2_t)."""
    z = rng.standard_normal(n)
    v2_target = 5.0 + 0.95 * z + 0.35 * rng.standard_normal(n)
    v1_target = 5.2 + 2.0 * z + 0.9 * rng.standard_normal(n)
    w1, w2 = v1.weight.astype(np.float64), v2.weight.astype(np.float64)
    # Walk the bucket means in V1-score order and place each row at its target's position along the path.
    means_v1 = ratings @ w1 + v1.bias
    pos = np.clip(np.interp(v1_target, means_v1, np.arange(10.0)), 0, 9)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, 9)
    frac = (pos - lo)[:, None]
    base = (1 - frac) * ratings[lo] + frac * ratings[hi]
    noise = rng.standard_normal((n, ratings.shape[1])) * (spec.noise / np.sqrt(ratings.shape[1]))
    emb = l2_normalize(l2_normalize(base) + noise)
    u = np.stack([w1 / np.linalg.norm(w1), w2 / np.linalg.norm(w2)])  # (2, d)
    gram = np.stack([u @ w1, u @ w2], axis=0)  # gram[i, j] = w_i . u_j
    for _ in range(6):
        gap = np.stack([v1_target - (emb @ w1 + v1.bias), v2_target - (emb @ w2 + v2.bias)], axis=1)
        step = np.linalg.solve(gram, gap.T).T  # (n, 2)
        emb = l2_normalize(emb + step @ u)
    return emb, v1_target, v2_target


def build_sample(
    spec: SampleSpec = SampleSpec(),
    reference_dir: Path = REFERENCE_DIR,
    v1_weights: Path = V1_WEIGHTS,
    v2_weights: Path = V2_WEIGHTS,
) -> tuple[np.ndarray, pl.DataFrame]:
    """Return the sample's float16 embeddings and its metadata frame (row-aligned)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.parts * spec.rows_per_part
    v1, v2 = load_predictor(v1_weights), load_predictor(v2_weights)
    assert isinstance(v1, LinearPredictor) and isinstance(v2, LinearPredictor)
    emb, _, _ = _embeddings(rng, n, spec, _ratings(reference_dir), v1, v2)

    pairs = pl.read_parquet(reference_dir / "test_1000.parquet", columns=["URL", "TEXT"])
    src = np.arange(n) % pairs.height
    urls = pairs["URL"].to_numpy()[src].astype(object)
    texts = pairs["TEXT"].to_numpy()[src].astype(object)
    rounds = np.arange(n) // pairs.height
    # Later rounds of the 1000 real pairs get a distinct query string so their keys differ.
    urls = np.array(
        [u if r == 0 else f"{u}{'&' if '?' in u else '?'}v={r}" for u, r in zip(urls, rounds, strict=True)],
        dtype=object,
    )

    # Duplicates: a row that repeats an earlier row's URL, caption and image (same LAION hash).
    dup = np.flatnonzero(rng.random(n) < spec.duplicate_share)
    dup = dup[dup > 0]
    origin = (rng.random(dup.size) * dup).astype(int)
    urls[dup], texts[dup], emb[dup] = urls[origin], texts[origin], emb[origin]

    language = np.where(rng.random(n) < spec.english_share, "en", rng.choice(LANGUAGES, n)).astype(object)
    language[rng.random(n) < spec.no_language_share] = None
    punsafe = rng.beta(0.6, 12.0, n)
    unsafe = rng.random(n) < spec.unsafe_share
    punsafe[unsafe] = rng.uniform(0.5, 1.0, unsafe.sum())
    pwatermark = rng.beta(1.2, 6.0, n)
    marked = rng.random(n) < spec.watermark_share
    pwatermark[marked] = rng.uniform(0.8, 1.0, marked.sum())
    meta = pl.DataFrame({
        "URL": urls.tolist(),
        "TEXT": texts.tolist(),
        "WIDTH": rng.choice(SIZES, n).astype(np.float64),
        "HEIGHT": rng.choice(SIZES, n).astype(np.float64),
        "similarity": np.clip(rng.normal(0.32, 0.035, n), 0.28, 0.5),
        "punsafe": punsafe.astype(np.float32),
        "pwatermark": pwatermark.astype(np.float32),
        "LANGUAGE": language.tolist(),
    }, schema={"URL": pl.String, "TEXT": pl.String, "WIDTH": pl.Float64, "HEIGHT": pl.Float64,
               "similarity": pl.Float64, "punsafe": pl.Float32, "pwatermark": pl.Float32,
               "LANGUAGE": pl.String})  # fmt: skip
    return emb.astype(np.float16), meta


def write_sample(out: str | Path, spec: SampleSpec = SampleSpec(), **kwargs: Path) -> list[Path]:
    """Build the sample and write it to ``out`` in clip-retrieval's layout (atomically, as a whole)."""
    emb, meta = build_sample(spec, **kwargs)
    width = len(str(spec.parts - 1))
    written = []
    with atomic_dir(out) as tmp:
        for p in range(spec.parts):
            rows = slice(p * spec.rows_per_part, (p + 1) * spec.rows_per_part)
            number = str(p).zfill(width)
            save_npy(emb[rows], tmp / "img_emb" / f"img_emb_{number}.npy")
            write_parquet(meta[rows].to_arrow(), tmp / "metadata" / f"metadata_{number}.parquet")
            written.append(Path(out) / "img_emb" / f"img_emb_{number}.npy")
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: build the sample into a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(DEFAULT_SOURCE))
    parser.add_argument("--parts", type=int, default=SampleSpec.parts)
    parser.add_argument("--rows-per-part", type=int, default=SampleSpec.rows_per_part)
    parser.add_argument("--seed", type=int, default=SampleSpec.seed)
    args = parser.parse_args(argv)
    spec = SampleSpec(parts=args.parts, rows_per_part=args.rows_per_part, seed=args.seed)
    paths = write_sample(args.out, spec)
    print(f"wrote {len(paths)} parts x {spec.rows_per_part} rows to {args.out}")


if __name__ == "__main__":
    main()
