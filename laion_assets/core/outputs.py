"""Where every asset writes under the data root (default ``data/out``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from laion_assets.core.errors import MissingUpstreamError

BUILD_HINT = "run `make demo` to build the whole graph from the sample"


@dataclass(frozen=True)
class OutputLayout:
    """Paths of the per-shard and release-level outputs below one data root.

    ``hint`` says how to build a missing output in the user's setup (``hints.build_hint``).
    """

    root: Path
    hint: str = BUILD_HINT

    def require(self, path: Path, what: str, command: str | None = None) -> Path:
        """Return ``path`` if it exists, else raise naming what is missing and how to build it in this setup."""
        return require(path, what, command or self.hint)

    def shard_dir(self, key: str) -> Path:
        """Folder of one shard's outputs."""
        return self.root / "shards" / key

    def shard_metadata(self, key: str) -> Path:
        """clip_embeddings: the shard's validated metadata with its LAION hash."""
        return self.shard_dir(key) / "metadata.parquet"

    def shard_scores(self, key: str) -> Path:
        """aesthetic_scores: hash plus the V1 and V2 score of every row."""
        return self.shard_dir(key) / "scores.parquet"

    def shard_watermark(self, key: str) -> Path:
        """image_embeddings (or rescore): hash plus the watermark head's pwatermark of every row of the shard's
        embedded part (URL shards with the head on)."""
        return self.shard_dir(key) / "watermark.parquet"

    def images_dir(self, key: str) -> Path:
        """images: img2dataset's attempts for one URL shard (tars, parquet, stats)."""
        return self.root / "images" / key

    @property
    def embedded_dir(self) -> Path:
        """image_embeddings: the URL shards' embeddings in clip-retrieval layout."""
        return self.root / "embedded"

    @property
    def tags_dir(self) -> Path:
        """aesthetic_tags: one parquet per shard."""
        return self.root / "tags"

    def tags_part(self, key: str) -> Path:
        """The aesthetic-tags file of one shard."""
        return self.tags_dir / f"part-{key}.parquet"

    @property
    def safety_dir(self) -> Path:
        """safety_tags: LAION's separate safety table, de-duplicated and sorted by hash."""
        return self.root / "safety"

    @property
    def subsets_dir(self) -> Path:
        """Parent folder of every subset."""
        return self.root / "subsets"

    def subset_dir(self, name: str) -> Path:
        """Folder of one subset's parquet files."""
        return self.subsets_dir / name

    @property
    def buckets_dir(self) -> Path:
        """bucket_embeddings: ``rating{k}.npy``."""
        return self.root / "buckets"

    @property
    def stats_dir(self) -> Path:
        """Histograms and other statistics."""
        return self.root / "stats"

    @property
    def histogram_history_path(self) -> Path:
        """The histogram with the predictors that made it and the one before a predictor change (not released)."""
        return self.stats_dir / "score_histogram_history.json"

    @property
    def histogram_path(self) -> Path:
        """score_histogram's JSON file."""
        return self.stats_dir / "score_histogram.json"

    @property
    def kv_dir(self) -> Path:
        """aesthetic_kv: LAION's on-disk KV files."""
        return self.root / "kv"

    @property
    def viz_dir(self) -> Path:
        """aesthetic_viz: static HTML galleries and PNG histograms."""
        return self.root / "viz"

    @property
    def knn_dir(self) -> Path:
        """knn_index: the faiss files, the catalog parts and index.json."""
        return self.root / "knn"

    @property
    def pop_dir(self) -> Path:
        """LAION-POP: concepts, centroids, the selection, its images, captions and the released table."""
        return self.root / "pop"

    @property
    def pop_concepts_path(self) -> Path:
        """pop_concepts: the concept collection's embedding files, rows and dimension (a JSON record)."""
        return self.pop_dir / "concepts.json"

    @property
    def pop_centroids_path(self) -> Path:
        """pop_centroids: the k-means centroids, float32 (k, d), L2-normalised."""
        return self.pop_dir / "centroids.npy"

    @property
    def pop_centroids_info(self) -> Path:
        """pop_centroids: parameters, inertia and cluster sizes (JSON)."""
        return self.pop_dir / "centroids.json"

    @property
    def pop_selection_dir(self) -> Path:
        """laion_pop: the selected rows, parquet parts."""
        return self.pop_dir / "laion_pop"

    def pop_images_dir(self, key: str) -> Path:
        """pop_images: img2dataset's attempts for one shard of the selection."""
        return self.pop_dir / "images" / key

    @property
    def pop_captions_dir(self) -> Path:
        """pop_captions: one caption parquet per image shard (and the finished chunks of an unfinished one)."""
        return self.pop_dir / "captions"

    @property
    def pop_table_dir(self) -> Path:
        """pop_captions: the released LAION-POP table (selection joined with captions) and its settings.json."""
        return self.pop_dir / "table"

    @property
    def releases_dir(self) -> Path:
        """Parent folder of every versioned release."""
        return self.root / "releases"

    def release_dir(self, version: str) -> Path:
        """Folder of one release."""
        return self.releases_dir / version


def require(path: Path, what: str, command: str = BUILD_HINT) -> Path:
    """Return ``path`` if it exists, else raise one sentence naming what is missing and how to build it."""
    if not path.exists():
        raise MissingUpstreamError(f"{what} is not materialized yet ({path} is missing): {command}.")
    return path
