"""Where the stored embeddings are read from and where every asset writes."""

from pathlib import Path

import dagster as dg

from laion_assets.layout import Part, find_part
from laion_assets.outputs import OutputLayout
from laion_assets.paths import resolve
from laion_assets.predictors import CLIP_L14_DIM


class StorageResource(dg.ConfigurableResource):
    """The embeddings source (clip-retrieval layout) and the data root; relative paths start at the project.

    Setting ``urls`` (a folder of numbered parquet/CSV URL shards) switches the shards to the URL chain: images
    are downloaded and embedded under the data root, and ``source`` is not read.
    """

    source: str = "data/sample"
    data_root: str = "data/out"
    embedding_dim: int = CLIP_L14_DIM
    urls: str = ""
    swap_width_height: bool = False

    @property
    def url_mode(self) -> bool:
        """True when shards come from URL shards rather than stored embeddings."""
        return bool(self.urls)

    @property
    def urls_path(self) -> Path:
        """The URL source folder as an absolute path."""
        return resolve(self.urls)

    @property
    def shard_source(self) -> Path:
        """The folder whose numbered files define the shard partitions (URL shards or stored parts)."""
        return self.urls_path if self.url_mode else self.source_path

    @property
    def source_path(self) -> Path:
        """The source folder as an absolute path."""
        return resolve(self.source)

    @property
    def layout(self) -> OutputLayout:
        """Paths of every output below the data root."""
        return OutputLayout(resolve(self.data_root))

    def part(self, key: str) -> Part:
        """The stored part behind a shard partition key (in URL mode, the part embedded from its images)."""
        return find_part(self.layout.embedded_dir if self.url_mode else self.source_path, key)
