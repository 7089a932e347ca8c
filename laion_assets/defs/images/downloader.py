"""img2dataset settings for the ``images`` asset (LAION's by default) and the success-rate floor of its check."""

import dagster as dg
from pydantic import Field

from laion_assets.images.downloading import DownloadOptions

# One source of truth for the defaults: LAION's img2dataset options in laion_assets.images.downloading.
_DEFAULTS = DownloadOptions()


class DownloaderResource(dg.ConfigurableResource):
    """How img2dataset downloads a URL shard (http and https URLs only); ``distributor`` may be pyspark or ray."""

    image_size: int = _DEFAULTS.image_size
    resize_mode: str = _DEFAULTS.resize_mode
    resize_only_if_bigger: bool = _DEFAULTS.resize_only_if_bigger
    skip_reencode: bool = _DEFAULTS.skip_reencode
    encode_format: str = _DEFAULTS.encode_format
    processes_count: int = _DEFAULTS.processes_count
    thread_count: int = _DEFAULTS.thread_count
    timeout: int = Field(
        default=_DEFAULTS.timeout,
        description="img2dataset's timeout: seconds one socket operation (connect, one read) may wait",
    )
    max_url_bytes: int = Field(
        default=_DEFAULTS.max_url_bytes,
        description="largest response kept for one URL (bytes); a larger Content-Length is refused before reading",
    )
    url_deadline: float = Field(
        default=_DEFAULTS.url_deadline,
        description="seconds one URL may take in all (connect, headers, body), however slowly the server sends",
    )
    max_image_pixels: int = Field(
        default=_DEFAULTS.max_image_pixels,
        description="largest image kept, in pixels (width x height, read from its header before it is decoded); "
        "bounds the memory of decoding (about 6 bytes a pixel for RGB, ~75 with an alpha channel); 100 MP keeps "
        "50 MP camera photos",
    )
    shard_timeout: float = Field(
        default=_DEFAULTS.shard_timeout,
        description="seconds one download attempt of a shard may take; then img2dataset and all its processes are "
        "stopped, the sub-shards it finished are kept and the step fails",
    )
    retries: int = _DEFAULTS.retries
    number_sample_per_shard: int = _DEFAULTS.number_sample_per_shard
    distributor: str = Field(default=_DEFAULTS.distributor, description="multiprocessing, pyspark or ray")
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
            max_url_bytes=self.max_url_bytes,
            url_deadline=self.url_deadline,
            max_image_pixels=self.max_image_pixels,
            shard_timeout=self.shard_timeout,
            retries=self.retries,
            number_sample_per_shard=self.number_sample_per_shard,
            distributor=self.distributor,
            min_image_size=self.min_image_size,
        )
