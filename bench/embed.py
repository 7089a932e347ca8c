"""Images/s of the image_embeddings step against the bare model forward, on the same images, in one run.

The step streams img2dataset-style tars through the DataLoader (decode + preprocess in workers), embeds,
normalises and writes a clip-retrieval part; the bare figure times only ``encode_image`` on batches that were
preprocessed beforehand. Their ratio is the overhead of everything around the model (goal: >= 0.9).

    python bench/embed.py                                  # CPU here: ViT-B-32, random weights
    python bench/embed.py --model ViT-L-14 --pretrained openai --device cuda --images 8192 --batch-size 256 --workers 16
"""

import argparse
import io
import json
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from laion_assets.demos.url_server import url_frame, write_images
from laion_assets.images.clip_model import ClipSpec, load_clip
from laion_assets.images.image_embeddings import embed_shard
from laion_assets.sources.url_sources import ROW_COLUMN


def write_tars(folder: Path, names: list[str], per_tar: int) -> list[Path]:
    tars = []
    for start in range(0, len(names), per_tar):
        path = folder / f"{len(tars):05d}.tar"
        with tarfile.open(path, "w") as tar:
            for row in range(start, min(start + per_tar, len(names))):
                image = Image.open(folder / "images" / names[row]).convert("RGB")
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=90)
                meta = {"key": f"{row:09d}", ROW_COLUMN: row, "original_width": image.width}
                for ext, data in (("jpg", buf.getvalue()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{row:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        tars.append(path)
    return tars


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bare_forward(clip, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(wall, CPU) images/s of encode_image alone on batches preprocessed before timing."""
    count = sum(len(b) for b in batches)
    sync()
    wall, cpu = time.perf_counter(), cpu_seconds()
    for batch in batches:
        clip.encode_images(batch)
    sync()
    return count / (time.perf_counter() - wall), count / (cpu_seconds() - cpu)


def step(clip, tars: list[Path], source: pl.DataFrame, out: Path, args: argparse.Namespace, text: bool):
    """(wall, CPU) images/s of the image_embeddings step (embed_shard) on the tars."""
    cpu = cpu_seconds()
    result = embed_shard(tars, source, clip, out, 0, args.batch_size, args.workers, text)
    cpu = cpu_seconds() - cpu
    assert result.rows == args.images and np.load(result.part.embeddings).shape[0] == args.images
    return result.images_per_second, result.rows / cpu


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="tag, weights file or none (speed does not depend on it)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (0: decode in the main process)")
    parser.add_argument("--per-tar", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3, help="alternate bare/step runs; medians are reported")
    parser.add_argument("--with-text", action="store_true", help="also time the step with text_emb (clip default)")
    args = parser.parse_args()
    clip = load_clip(ClipSpec(args.model, args.pretrained, args.device, args.precision))
    bare, steps, text = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = write_images(folder / "images", args.images, seed=0)
        tars = write_tars(folder, names, args.per_tar)
        source = url_frame([f"http://127.0.0.1/{n}" for n in names]).with_row_index(ROW_COLUMN)
        source = source.with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
        images = [clip.preprocess(Image.open(folder / "images" / n).convert("RGB")) for n in names]
        batches = [torch.stack(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
        clip.encode_images(batches[0])  # warm-up (kernel selection) before either is timed
        # Alternating the two measurements spreads drift in machine load over both.
        for _ in range(args.repeats):
            bare.append(bare_forward(clip, batches))
            steps.append(step(clip, tars, source, folder / "out", args, False))
        if args.with_text:
            text = step(clip, tars, source, folder / "out", args, True)
    dtype = str(clip.dtype).removeprefix("torch.")
    print(
        f"model {args.model} on {clip.device} ({dtype}), {args.images} images, batch {args.batch_size}, "
        f"{args.workers} loader worker(s), torch threads {torch.get_num_threads()}, {args.repeats} repeats"
    )
    for label, index in (("wall", 0), ("cpu", 1)):
        b = float(np.median([r[index] for r in bare]))
        s = float(np.median([r[index] for r in steps]))
        unit = "images/s" if label == "wall" else "images per CPU-second"
        bare_runs, step_runs = [round(r[index], 2) for r in bare], [round(r[index], 2) for r in steps]
        print(f"[{label}] bare forward (preprocessed batches): {b:8.2f} {unit}  runs {bare_runs}")
        print(f"[{label}] image_embeddings step (images only):  {s:8.2f} {unit}  runs {step_runs}")
        print(f"[{label}] ratio step / bare: {s / b:.3f}")
    if text is not None:
        print(f"[wall] image_embeddings step with text_emb: {text[0]:.2f} images/s")


if __name__ == "__main__":
    main()
