"""Re-scoring ``pwatermark`` in the ``rescore`` job: the shards the configured watermark head outdates, from images.

Each re-scored shard is recorded as an observation of its ``image_embeddings`` partition (its embeddings are
unchanged; the observation carries the watermark figures ``image_embeddings`` records); shards that have no images
to re-score from are logged as warnings and listed in the rescore's metadata, with what to run.
"""

from dataclasses import dataclass, field

import dagster as dg

from laion_assets.defs.images.assets import image_embeddings, watermark_metadata
from laion_assets.defs.images.watermark import embedded_parts
from laion_assets.defs.metadata import rounded
from laion_assets.defs.resources import StorageResource, WatermarkResource
from laion_assets.images.watermark_scores import NEEDS_IMAGES, WatermarkState, rescore_watermark


@dataclass
class WatermarkRescore:
    """What the watermark part of a rescore did: shards re-scored, and the states before and after."""

    rescored: list[str] = field(default_factory=list)
    before: list[WatermarkState] = field(default_factory=list)
    after: list[WatermarkState] = field(default_factory=list)

    @property
    def needs_images(self) -> list[WatermarkState]:
        """Shards the head outdates that have no images to re-score from."""
        return [s for s in self.after if s.status == NEEDS_IMAGES]

    def metadata(self) -> dict[str, object]:
        """The rescore's watermark figures (empty when the head is off)."""
        if not self.before:
            return {}
        counts: dict[str, int] = {}
        for state in self.after:
            counts[state.status] = counts.get(state.status, 0) + 1
        table = "\n".join(
            ["| shard | status | reason |", "|---|---|---|"]
            + [f"| {s.key} | {s.status} | {s.reason} |" for s in self.after]
        )
        return {
            "watermark/rescored": dg.MetadataValue.json(self.rescored),
            "watermark/shards": dg.MetadataValue.json(counts),
            "watermark/needs_images": dg.MetadataValue.json([s.key for s in self.needs_images]),
            "watermark/per_shard": dg.MetadataValue.md(table),
        }


def rescore_watermarks(
    context: dg.AssetExecutionContext, storage: StorageResource, watermark: WatermarkResource, keys: list[str]
) -> WatermarkRescore:
    """Re-score from their images the shards whose ``pwatermark`` the configured head outdates (none when off)."""
    before = watermark.states(storage, keys)
    done = WatermarkRescore(before=before, after=before)
    if not before:
        return done
    stale = [s for s in before if s.needs_scores]
    for state in before:
        if state.status == NEEDS_IMAGES:
            context.log.warning(f"shard {state.key}: pwatermark needs images: {state.reason}")
    if not stale:
        context.log.info(f"pwatermark: nothing to re-score with {watermark.identity()}")
        return done
    layout, loaded = storage.layout, watermark.load()
    parts = embedded_parts(storage, [s.key for s in stale])
    for state in stale:
        context.log.info(f"shard {state.key}: pwatermark {state.reason}")
        storage.pull(layout.images_dir(state.key))
        scored = rescore_watermark(
            state.key, layout, parts[state.key], loaded, watermark.batch_size, watermark.num_workers
        )
        storage.push(layout.shard_watermark(state.key))
        done.rescored.append(state.key)
        context.log_event(
            dg.AssetObservation(
                asset_key=image_embeddings.key,
                partition=state.key,
                metadata=rounded(
                    {
                        **watermark_metadata(scored, layout.shard_watermark(state.key)),
                        "rescored_by_run": context.run.run_id,
                    }
                ),
            )
        )
    done.after = watermark.states(storage, keys)
    return done
