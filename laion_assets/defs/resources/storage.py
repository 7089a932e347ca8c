"""Where the stored embeddings are read from and where every asset writes."""

from pathlib import Path

import dagster as dg

from laion_assets.layout import Part, find_part
from laion_assets.outputs import OutputLayout
from laion_assets.paths import resolve
from laion_assets.predictors import CLIP_L14_DIM


class StorageResource(dg.ConfigurableResource):
    """The embeddings source (clip-retrieval layout) and the data root; relative paths start at the project."""

    source: str = "data/sample"
    data_root: str = "data/out"
    embedding_dim: int = CLIP_L14_DIM

    @property
    def source_path(self) -> Path:
        """The source folder as an absolute path."""
        return resolve(self.source)

    @property
    def layout(self) -> OutputLayout:
        """Paths of every output below the data root."""
        return OutputLayout(resolve(self.data_root))

    def part(self, key: str) -> Part:
        """The stored part behind a shard partition key."""
        return find_part(self.source_path, key)
