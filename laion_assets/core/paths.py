"""Where the project's shipped files and default outputs live."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # laion_assets/, this file being laion_assets/core/paths.py
PROJECT_DIR = PACKAGE_DIR.parent
DATA_DIR = PROJECT_DIR / "data"
MODELS_DIR = DATA_DIR / "models"
REFERENCE_DIR = DATA_DIR / "reference"

DEFAULT_SOURCE = DATA_DIR / "sample"
DEFAULT_DATA_ROOT = DATA_DIR / "out"
V1_WEIGHTS = MODELS_DIR / "sa_0_4_vit_l_14_linear.pth"
V2_WEIGHTS = MODELS_DIR / "sac+logos+ava1-l14-linearMSE.pth"
V2_RELU_WEIGHTS = MODELS_DIR / "ava+logos-l14-reluMSE.pth"
# LAION's CLIP-based NSFW detector (punsafe) as numpy arrays: ViT-L/14 and ViT-B/32 (data/models/nsfw/ORIGIN.md).
NSFW_L14_WEIGHTS = MODELS_DIR / "nsfw" / "clip_autokeras_binary_nsfw.npz"
NSFW_B32_WEIGHTS = MODELS_DIR / "nsfw" / "clip_autokeras_nsfw_b32.npz"


def resolve(path: str | Path) -> Path:
    """Resolve a relative path against the project folder (so the CLI and the UI agree), else as given."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path
