"""What a release is called, which version it is, which registered shards it leaves out, and whether it carries
LAION-POP."""

import dagster as dg
from pydantic import Field

from laion_assets.release.build import AUTO, DEFAULT_NAME


class ReleaseResource(dg.ConfigurableResource):
    """Release version (folder ``releases/<version>`` and Hub tag), the dataset's name, shards left out, LAION-POP."""

    version: str = Field(
        default=AUTO,
        description="'auto': the newest release when its contents are unchanged, else the next patch version "
        "(v0.1.0 first); an explicit version that exists with other contents is refused (versions are immutable)",
    )
    name: str = DEFAULT_NAME
    exclude_shards: list[str] = Field(
        default_factory=list,
        description="registered shards to leave out of the release-level assets on purpose (e.g. a part refused "
        "for NaN embeddings); recorded in the manifest and the dataset card",
    )
    laion_pop: bool = Field(
        default=False,
        description="include data_root/pop/table (written by pop_captions) as the laion_pop config, under "
        "data/laion-pop/; the release fails naming the folder when the table is missing",
    )
