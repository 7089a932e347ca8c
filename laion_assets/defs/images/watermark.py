"""The watermark head resource: LAION's watermark detector (``pwatermark``), off until its weights are given.

A resource of its own rather than fields of ``clip``: the ``rescore`` job and schedule and ``laion-assets stale``
need the head (its identity, or the model to re-score from images) without loading CLIP, and the head keeps its
own weights, device, precision and batch size.
"""

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from laion_assets.core.identity import HeadIdentity
from laion_assets.core.paths import resolve
from laion_assets.core.settings import WATERMARK
from laion_assets.defs.sources.storage import StorageResource, from_environment
from laion_assets.images.watermark import (
    OFF,
    LoadedWatermark,
    WatermarkSpec,
    identity_of,
    load_watermark,
    random_seed,
    weights_state,
)
from laion_assets.images.watermark_scores import NEEDS_IMAGES, WatermarkState, watermark_states
from laion_assets.sources.layout import Part, parts_by_key


@lru_cache(maxsize=2)
def _loaded(spec: WatermarkSpec, version: tuple[int, int] | None) -> LoadedWatermark:
    # One model per process and spec (and file version, so replacing the file in place loads the new one).
    return load_watermark(spec)


@lru_cache(maxsize=8)
def _identity(weights: str, version: tuple[int, int] | None) -> HeadIdentity:
    return identity_of(weights_state(weights))


def _version(weights: str) -> tuple[int, int] | None:
    """The file's (mtime, size), so cached models and identities follow a file replaced in place."""
    path = Path(weights)
    if random_seed(weights) is not None or not path.is_file():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def embedded_parts(storage: StorageResource, keys: Sequence[str]) -> dict[str, Part]:
    """The parts ``image_embeddings`` wrote under the data root, by key (also when ``storage.urls`` is not given
    here, e.g. to ``laion-assets stale``: what the data root holds decides, not this configuration)."""
    folder = storage.layout.embedded_dir
    storage.pull(folder)
    if not folder.is_dir():
        return {}
    listed = parts_by_key(folder)
    return {key: listed[key] for key in keys if key in listed}


class WatermarkResource(dg.ConfigurableResource):
    """LAION's watermark detector (EfficientNet-B3, LAION's weights file), scoring ``pwatermark`` from images.

    It runs in ``image_embeddings``' pass over the decoded images (one decode, two models) and in ``rescore`` for
    shards it outdates. Off by default: LAION's ``watermark_model_v1.pt`` cannot be shipped; place it locally and
    name it here.
    """

    weights: str = Field(
        default="",
        description="LAION's watermark_model_v1.pt (a local file; relative paths from the project folder), 'random' "
        "or 'random:SEED' (seeded random weights for tests and demos: the values mean nothing), or 'off'. Empty: "
        f"${WATERMARK.env} when the run starts, else off",
    )
    device: str = Field(default="auto", description="auto (cuda when available), cuda or cpu")
    precision: str = Field(
        default="fp32", description="fp32 (as LAION ran it), fp16, bf16, or auto (fp16 on cuda, fp32 on cpu)"
    )
    batch_size: int = Field(default=256, description="images per forward pass; halved on CUDA out-of-memory")
    num_workers: int = Field(default=2, description="DataLoader processes decoding images when re-scoring")

    @property
    def weights_value(self) -> str:
        """``weights``, else ``$LAION_ASSETS_WATERMARK``, else empty (off); a relative file path made absolute."""
        value = from_environment(WATERMARK, self.weights).strip()
        if value.lower() in OFF:
            return ""
        return value if random_seed(value) is not None else str(resolve(value))

    @property
    def enabled(self) -> bool:
        """True when a watermark head is configured."""
        return bool(self.weights_value)

    def spec(self) -> WatermarkSpec:
        """The head's spec (weights resolved as :attr:`weights_value`)."""
        return WatermarkSpec(self.weights_value, self.device, self.precision)

    def load(self) -> LoadedWatermark:
        """The loaded model (built on the first call in this process)."""
        spec = self.spec()
        return _loaded(spec, _version(spec.weights))

    def identity(self) -> HeadIdentity | None:
        """The configured head's identity (kind + sha256 of its tensors), None when the head is off."""
        weights = self.weights_value
        return _identity(weights, _version(weights)) if weights else None

    def states(self, storage: StorageResource, keys: Sequence[str]) -> list[WatermarkState]:
        """Each shard's watermark state against the configured head (empty when the head is off)."""
        active = self.identity()
        if active is None:
            return []
        layout = storage.layout
        storage.pull(*(p for key in keys for p in (layout.shard_watermark(key), layout.shard_metadata(key))))
        parts = embedded_parts(storage, keys)
        states = watermark_states(keys, layout, active, parts, storage.url_mode)
        if storage.mirror is None:
            return states
        # A remote data root: the images of a shard to re-score are fetched only now, so "needs images" is checked
        # against the remote's own folder.
        lacking = [s.key for s in states if s.status == NEEDS_IMAGES]
        if not lacking:
            return states
        storage.pull(*(layout.images_dir(key) for key in lacking))
        again = {s.key: s for s in watermark_states(lacking, layout, active, parts, storage.url_mode)}
        return [again.get(s.key, s) for s in states]
