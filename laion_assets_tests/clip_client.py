"""clip-retrieval's own ``ClipClient``, loaded from a test-only folder so that our service is checked against it.

Why a folder and a file path: clip-retrieval 2.45.0's ``clip_retrieval/clip_client.py`` needs only ``requests``
(in our venv), but ``import clip_retrieval`` runs the package's ``__init__``, which imports the whole back end
(flask, faiss, torch, ...) under pins our stack can't take (numpy < 2 among them). So ``make`` installs the wheel
without its dependencies into ``.venv/clip-retrieval/`` (off ``sys.path``), and ``load_clip_client`` imports that one
file by path under its own module name: clip-retrieval's code unchanged, only the package ``__init__`` bypassed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CLIP_RETRIEVAL = "clip-retrieval==2.45.0"  # the Makefile's CLIP_RETRIEVAL
MODULE_NAME = "clip_retrieval_client"


def clip_retrieval_dir() -> Path:
    """The folder ``make`` installs clip-retrieval into: ``clip-retrieval/`` in the running venv."""
    return Path(sys.prefix) / "clip-retrieval"


def load_clip_client() -> ModuleType:
    """clip-retrieval's ``clip_client`` module (``ClipClient``, ``Modality``), imported from its file alone."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    path = clip_retrieval_dir() / "clip_retrieval" / "clip_client.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"clip-retrieval's client is not installed at {path}: run `make venv`, or "
            f"`{sys.executable} -m pip install --no-deps --target {clip_retrieval_dir()} {CLIP_RETRIEVAL}`"
        )
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    assert spec is not None and spec.loader is not None, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # before running it, as an import does (enum and dataclass look it up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module
