"""What a release is called and which version it is."""

import dagster as dg

from laion_assets.release import DEFAULT_NAME


class ReleaseResource(dg.ConfigurableResource):
    """Release version (folder ``releases/<version>`` and Hub tag) and the dataset's name on its card."""

    version: str = "v0.1.0"
    name: str = DEFAULT_NAME
