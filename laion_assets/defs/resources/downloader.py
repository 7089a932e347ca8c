"""img2dataset settings for the ``images`` asset (LAION's by default) and the success-rate floor of its check."""

import dagster as dg
from pydantic import Field

from laion_assets.downloading import DownloadOptions


class DownloaderResource(dg.ConfigurableResource):
    """How img2dataset downloads a URL shard; ``distributor`` may be img2dataset's pyspark or ray on a cluster."""

    image_size: int = 384
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    skip_reencode: bool = True
    encode_format: str = "jpg"
    processes_count: int = 2
    thread_count: int = 64
    timeout: int = Field(default=10, description="seconds before a slow URL counts as failed")
    retries: int = 0
    number_sample_per_shard: int = 10000
    distributor: str = Field(default="multiprocessing", description="multiprocessing, pyspark or ray")
    min_image_size: int = 0
    min_success_rate: float = Field(
        default=0.8, description="the images check warns when fewer than this fraction of a shard's URLs succeeded"
    )

    def options(self) -> DownloadOptions:
        """The img2dataset options of this resource."""
        return DownloadOptions(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            resize_only_if_bigger=self.resize_only_if_bigger,
            skip_reencode=self.skip_reencode,
            encode_format=self.encode_format,
            processes_count=self.processes_count,
            thread_count=self.thread_count,
            timeout=self.timeout,
            retries=self.retries,
            number_sample_per_shard=self.number_sample_per_shard,
            distributor=self.distributor,
            min_image_size=self.min_image_size,
        )
