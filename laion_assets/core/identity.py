"""A model head's identity: ``kind@sha256:<hex>``, the sha256 of its tensors in one canonical encoding.

The same encoding as :mod:`laion_assets.scoring.predictors` (whose docstring describes it): for each key of the
state_dict in sorted order, a header line ``json.dumps([key, dtype, shape, nbytes]) + "\\n"`` then the tensor's
elements, C-contiguous, little-endian. It lives in ``core`` so that heads of earlier stages (the watermark head of
``images``) record identities in the very format the scoring heads do; a test holds the two implementations equal.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: loading the definitions must not pay for it
    import torch

# Key under which a scores file records which head made each of its columns: ``{column: "kind@sha256:hex"}``.
IDENTITY_KEY = "laion_assets.predictors"


@dataclass(frozen=True)
class HeadIdentity:
    """Which head made a column: its kind and the canonical sha256 of its tensors (:func:`weights_sha256`)."""

    kind: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.kind}@sha256:{self.sha256}"

    @classmethod
    def parse(cls, text: str) -> HeadIdentity:
        """Parse the ``kind@sha256:hex`` form written by ``str()``."""
        kind, _, digest = text.partition("@sha256:")
        if not kind or len(digest) != 64:
            raise ValueError(f"not a head identity: {text!r}")
        return cls(kind, digest)


def tensor_bytes(key: str, tensor: torch.Tensor) -> bytes:
    """A tensor's elements as little-endian, C-contiguous bytes (the payload of the canonical encoding)."""
    import torch

    if tensor.layout != torch.strided:
        raise ValueError(f"tensor {key} has layout {tensor.layout}; only dense tensors have a canonical encoding")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8)
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.reshape(-1, flat.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a state_dict's tensors in the canonical encoding described in this module's docstring."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        data = tensor_bytes(key, tensor)
        header = json.dumps([key, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), len(data)])
        digest.update(header.encode("utf-8") + b"\n")
        digest.update(data)
    return digest.hexdigest()
