"""CPU cost of the watermark head in image_embeddings' pass (one decode, two models) against a pass of its own.

On the same generated images, in one run, interleaved: (a) the image_embeddings step with CLIP only, (b) the step
with CLIP and the watermark head in the same pass over the decoded images, (c) the watermark head alone in its own
pass over the tars (what ``rescore`` does for a shard it outdates). (b) - (a) is what the head adds to the step;
(c) - ((b) - (a)) is the decoding a second pass would repeat. CPU time counts this process and its DataLoader
workers; on a shared box it is the stable figure.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/watermark.py            # ViT-B-32 + watermark, random weights, CPU
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch
from embed import cpu_seconds, write_tars  # noqa: E402  (bench/embed.py writes the same img2dataset-style tars)
from PIL import Image

from laion_assets.demos.url_server import url_frame, write_images
from laion_assets.images.clip_model import ClipSpec, load_clip
from laion_assets.images.image_embeddings import embed_shard
from laion_assets.images.watermark import WatermarkSpec, load_watermark, watermark_pixels
from laion_assets.images.watermark_scores import score_tars
from laion_assets.sources.url_sources import ROW_COLUMN


def timed(fn) -> float:
    """CPU seconds (process + finished children) of ``fn()``."""
    start = cpu_seconds()
    fn()
    return cpu_seconds() - start


def read(tars, preprocess, extra, args):
    """Batches of the image loader alone."""
    from laion_assets.images.image_reader import image_loader

    return image_loader(tars, preprocess, args.batch_size, args.workers, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    clip = load_clip(ClipSpec(args.model, "none", args.device))
    mark = load_watermark(WatermarkSpec("random", args.device))
    runs: dict[str, list[float]] = {
        "clip": [],
        "clip+watermark": [],
        "watermark alone": [],
        "read clip": [],
        "read both": [],
        "read watermark": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = write_images(folder / "images", args.images, seed=0)
        tars = write_tars(folder, names, 10000)
        source = url_frame([f"http://127.0.0.1/{n}" for n in names]).with_row_index(ROW_COLUMN)
        source = source.with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
        out = folder / "out"
        # Warm-up (kernel selection) before anything is timed.
        clip.encode_images(torch.stack([clip.preprocess(Image.new("RGB", (64, 48)))] * 2))
        mark.score(torch.stack([watermark_pixels(Image.new("RGB", (64, 48)))] * 2))
        for _ in range(args.repeats):
            runs["clip"].append(
                timed(lambda: embed_shard(tars, source, clip, out, 0, args.batch_size, args.workers, False))
            )
            runs["clip+watermark"].append(
                timed(
                    lambda: embed_shard(
                        tars,
                        source,
                        clip,
                        out,
                        0,
                        args.batch_size,
                        args.workers,
                        False,
                        watermark=mark,
                        watermark_out=out / "watermark.parquet",
                    )  # fmt: skip
                )
            )
            runs["watermark alone"].append(timed(lambda: score_tars(tars, mark, args.batch_size, args.workers)))
            # The loader alone (decode + preprocess, no model): what one decode for two models saves.
            for name, first, extra in (
                ("read clip", clip.preprocess, None),
                ("read both", clip.preprocess, watermark_pixels),
                ("read watermark", watermark_pixels, None),
            ):
                runs[name].append(timed(lambda f=first, e=extra: list(read(tars, f, e, args))))
    print(
        f"{args.model} + watermark (EfficientNet-B3, 256 px) on {clip.device}, {args.images} images, batch "
        f"{args.batch_size}, {args.workers} loader worker(s), torch threads {torch.get_num_threads()}, "
        f"{args.repeats} repeats (median)"
    )
    median = {k: float(np.median(v)) for k, v in runs.items()}
    for name, seconds in median.items():
        per = 1000 * seconds / args.images
        print(f"  {name:<16} {seconds:7.2f} CPU-s  {per:7.1f} CPU-ms/image  runs {[round(r, 2) for r in runs[name]]}")
    added = median["clip+watermark"] - median["clip"]
    print(f"  the head in the shared pass adds {1000 * added / args.images:.1f} CPU-ms/image")
    print(f"  a pass of its own would cost {1000 * (median['watermark alone'] - added) / args.images:.1f} more")
    saved = median["read clip"] + median["read watermark"] - median["read both"]
    print(f"  reading: one decode for both saves {1000 * saved / args.images:.1f} CPU-ms/image")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
