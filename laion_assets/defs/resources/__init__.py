"""Resources of the laion_assets code location, one per file."""

from laion_assets.defs.resources.clip import ClipResource
from laion_assets.defs.resources.downloader import DownloaderResource
from laion_assets.defs.resources.hub import HfResource
from laion_assets.defs.resources.predictors import PredictorsResource
from laion_assets.defs.resources.release import ReleaseResource
from laion_assets.defs.resources.storage import StorageResource

__all__ = [
    "ClipResource",
    "DownloaderResource",
    "HfResource",
    "PredictorsResource",
    "ReleaseResource",
    "StorageResource",
]
