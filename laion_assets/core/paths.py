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


def resolve(path: str | Path) -> Path:
    """Resolve a relative path against the project folder (so the CLI and the UI agree), else as given."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path
