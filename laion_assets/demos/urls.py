"""``make demo-urls``: the whole chain from URLs, on images served from 127.0.0.1 with a tiny CLIP model.

It writes a small generated image set, serves it on 127.0.0.1 (one URL in each shard is a 404 and one is not
an image, to show the failure stats), writes numbered URL shards, and materializes
``images -> image_embeddings -> clip_embeddings -> aesthetic_scores -> tags -> subsets`` with the tiny random
CLIP of ``data/models/tiny-clip/`` (768-d, so LAION's heads score it unchanged). The URL shards carry no
``punsafe``/``pwatermark``, as a list of one's own URLs would not: both are computed, by LAION's NSFW head on the
embeddings and by the watermark head (random weights here) on the images. A random CLIP never gets near LAION's V1
cut-offs (7 and 8), so the demo tilts its tiny CLIP's image projection towards the V1 head's direction
(:func:`tilted_clip`) and laion_aesthetic/laion_art get rows; the scores mean nothing, the wiring is what is shown.
Then LAION-POP (``pop_job``): concepts planted near some of the demo's own embeddings, k-means, the kNN selection,
the selected images downloaded again from 127.0.0.1 and captioned by a tiny random LLaVA, and a second release
with the ``laion_pop`` config. Real users point ``storage.urls`` at real URL shards and keep the clip resource's
defaults (ViT-L-14 / openai), and the vlm resource's (llava-hf/llava-1.5-7b-hf).
Usage: ``python -m laion_assets.demos.urls [--work DIR] [--shards N] [--per-shard N]``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg

from laion_assets.core.atomic import atomic_path
from laion_assets.core.paths import MODELS_DIR, V1_WEIGHTS, resolve
from laion_assets.definitions import (
    ClipResource,
    DownloaderResource,
    PopResource,
    PredictorsResource,
    StorageResource,
    VlmResource,
    WatermarkResource,
)
from laion_assets.demos.local import run_graph, run_pop
from laion_assets.demos.pop_concepts import write_planted_concepts
from laion_assets.demos.tiny_llava import write_tiny_llava
from laion_assets.demos.url_server import serve_images, url_frame, write_images

TINY_CLIP = MODELS_DIR / "tiny-clip" / "tiny-clip-768.json"
# How far the demo's CLIP image projection is tilted towards the V1 head's direction: about two thirds of the demo
# images then score above 7 and a third above 8 (with none tilted, all score 2.8-4.0).
TILT = 5.0
POP_CLUSTERS = 8


def tilted_clip(path: Path, tilt: float = TILT) -> Path:
    """Write the demo's tiny CLIP weights: random (seeded, as ``pretrained="none"`` builds them) with ``tilt`` times a
    rank-one map added to the image projection, from one fixed feature direction onto LAION's V1 weight direction."""
    import torch

    from laion_assets.images.clip_model import ClipSpec, load_clip

    clip = load_clip(ClipSpec(model=str(TINY_CLIP), pretrained="none", device="cpu"))
    v1 = torch.load(V1_WEIGHTS, map_location="cpu", weights_only=True)["weight"][0].float()
    proj = clip.model.visual.proj
    feature = torch.randn(proj.shape[0], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        proj += tilt * torch.outer(feature / feature.norm(), v1 / v1.norm())
    with atomic_path(path) as tmp:
        torch.save(clip.model.state_dict(), tmp)
    return path


def pop_resources(work: Path, storage: StorageResource) -> dict[str, dg.ConfigurableResource]:
    """LAION-POP at demo scale: concepts planted near 8 of the demo's embeddings, 8 centroids, a tiny random LLaVA.

    The URL shards' sizes are drawn from 64-1024 px, so the demo asks for a shortest side of 512 (LAION: 768).
    """
    concepts = work / "concepts"
    write_planted_concepts(storage.layout.embedded_dir, concepts, clusters=POP_CLUSTERS)
    llava = write_tiny_llava(work / "tiny-llava")
    return {
        "pop": PopResource(
            concepts=str(concepts), k=POP_CLUSTERS, nredo=3, neighbours=12, min_side=512, part_rows=40,
            check_centroids=POP_CLUSTERS, image_size=336,
        ),
        "vlm": VlmResource(model=str(llava), device="auto", batch_size=4, chunk_rows=8, max_new_tokens=12),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Command line entry point of the from-URLs demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="data/demo-urls", help="images, URL shards and outputs go here")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--per-shard", type=int, default=40)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    work = resolve(args.work)
    names = write_images(work / "served", args.shards * args.per_shard, seed=0)
    urls_dir = work / "urls"
    urls_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        print("DAGSTER_HOME is not set: runs go to a throwaway instance", file=sys.stderr)
        instance = dg.DagsterInstance.ephemeral()
    with serve_images(work / "served") as server:
        print(f"serving {len(names)} images on {server.base_url}", flush=True)
        for shard in range(args.shards):
            mine = names[shard * args.per_shard : (shard + 1) * args.per_shard]
            urls = [server.url(n) for n in mine]
            urls[0], urls[1] = server.url(mine[0], "missing"), server.url(mine[1], "corrupt")
            # The port changes every run, so a rerun is a new URL list (new fingerprint) and downloads afresh.
            frame = url_frame(urls, seed=shard).drop("punsafe", "pwatermark")  # our heads compute them
            frame.write_parquet(urls_dir / f"part-{shard:05d}.parquet")
        storage = StorageResource(urls=str(urls_dir), data_root=str(work / "out"))
        url_resources = {
            "downloader": DownloaderResource(processes_count=1, thread_count=16, timeout=5),
            "clip": ClipResource(
                model=str(TINY_CLIP),
                pretrained=str(tilted_clip(work / "tiny-clip-tilted.pt")),
                device="auto",
                batch_size=32,
                num_workers=1,
            ),
            # Seeded random weights: LAION's watermark_model_v1.pt cannot be shipped (see the README).
            "watermark": WatermarkResource(weights="random", batch_size=32, num_workers=1),
        }
        counts = run_graph(instance, storage, PredictorsResource(), url_resources)
        counts |= run_pop(instance, storage, {**url_resources, **pop_resources(work, storage)})
        print(f"{len(server.requests)} image requests served")
    width = max(map(len, counts))
    for name, rows in counts.items():
        print(f"  {name:<{width}}  {rows if rows is not None else '-'} rows")
    print(f"demo-urls done in {time.perf_counter() - start:.1f} s; outputs in {storage.layout.root}")
    print(f"embedded parts: {Path(storage.layout.embedded_dir)}")


if __name__ == "__main__":
    main()
