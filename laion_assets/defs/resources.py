"""Resources of the laion_assets code location, one per file."""

from laion_assets.defs.images.clip import ClipResource
from laion_assets.defs.images.downloader import DownloaderResource
from laion_assets.defs.images.watermark import WatermarkResource
from laion_assets.defs.pop.config import PopResource
from laion_assets.defs.pop.vlm import VlmResource
from laion_assets.defs.release.config import ReleaseResource
from laion_assets.defs.release.hub import HfResource
from laion_assets.defs.scoring.predictors import PredictorsResource
from laion_assets.defs.sources.storage import StorageResource

__all__ = [
    "ClipResource",
    "DownloaderResource",
    "HfResource",
    "PopResource",
    "PredictorsResource",
    "ReleaseResource",
    "StorageResource",
    "VlmResource",
    "WatermarkResource",
]
