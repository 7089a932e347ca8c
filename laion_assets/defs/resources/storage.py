"""Where the stored embeddings are read from and where every asset writes."""

import os
from pathlib import Path

import dagster as dg

from laion_assets.layout import Part, find_part
from laion_assets.outputs import OutputLayout
from laion_assets.paths import resolve
from laion_assets.predictors import CLIP_L14_DIM


class StorageResource(dg.ConfigurableResource):
    """The embeddings source (clip-retrieval layout) and the data root; relative paths start at the project.

    Their defaults can be moved with the environment variables ``LAION_ASSETS_SOURCE`` and
    ``LAION_ASSETS_DATA_ROOT`` (read when the code location loads).
    """

    source: str = os.environ.get("LAION_ASSETS_SOURCE", "data/sample")
    data_root: str = os.environ.get("LAION_ASSETS_DATA_ROOT", "data/out")
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
