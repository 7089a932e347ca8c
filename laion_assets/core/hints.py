"""What to run next, said for the user's own setup: ``make demo`` only fits the shipped sample in ``data/out``."""

from __future__ import annotations

import shlex

from laion_assets.core.paths import DEFAULT_DATA_ROOT, DEFAULT_SOURCE, resolve
from laion_assets.core.settings import SOURCE

DEMO_HINT = "run `make demo` to build the whole graph from the sample"


def _is_default(value: str, default: object) -> bool:
    return "://" not in value and resolve(value) == resolve(str(default))


def build_hint(source: str, data_root: str, urls: str = "") -> str:
    """The command that builds missing outputs for this source (or URL folder) and data root."""
    if not urls and _is_default(source, DEFAULT_SOURCE) and _is_default(data_root, DEFAULT_DATA_ROOT):
        return DEMO_HINT
    root = shlex.quote(data_root)
    if urls:
        return (
            f"for this setup (URL shards in {urls}, data root {data_root}) materialize every shard's "
            "`images,image_embeddings,clip_embeddings,aesthetic_scores` (a backfill in the UI, or "
            "`dagster asset materialize --select ... --partition KEY`), then `aesthetic_tags` and what follows"
        )
    return (
        f"for this setup run `laion-assets demo --source {shlex.quote(source)} --data-root {root}` (registers the "
        "parts and builds the whole graph), or materialize every shard's `clip_embeddings,aesthetic_scores` and then "
        f"`aesthetic_tags` and what follows with LAION_ASSETS_SOURCE and LAION_ASSETS_DATA_ROOT set to these paths"
    )


def missing_source_hint(source: str) -> str:
    """What to do about a source folder that is not there: ``make demo`` only builds the project's own sample."""
    if _is_default(source, DEFAULT_SOURCE):
        return (
            "build the demo sample with `make demo` (or just the sample with `laion-assets sample`), or point the "
            f"source at a clip-retrieval output folder ({SOURCE.flag} DIR, {SOURCE.env} or `storage.source`)"
        )
    return (
        f"check the path, or point the source setting at a clip-retrieval output folder (img_emb/, metadata/): "
        f"{SOURCE.flag} DIR on `laion-assets` commands, the {SOURCE.env} environment variable, or the `storage` "
        "resource's `source` config"
    )


def missing_kv_hint(kv_file: str, source: str, data_root: str) -> str:
    """Why a data root has no KV file and what writes it there: ``aesthetic_kv``, run for this setup."""
    return (
        f"The `aesthetic_kv` asset writes kv/{kv_file} there once `aesthetic_tags` is built: "
        f"{build_hint(source, data_root)}"
    )
