"""LAION's CLIP-based NSFW detector (``punsafe``) run with numpy: no TensorFlow, no torch.

LAION-AI/CLIP-based-NSFW-Detector ships two autokeras SavedModels, one for CLIP ViT-L/14 (768-d) and one for
ViT-B/32 (512-d). ``scripts/nsfw_extract.py`` read them into ``data/models/nsfw/*.npz``; this module runs them.

The graph, as the SavedModel computes it (serving input float64, shape (n, d)):

1. ``multi_category_encoding``: cast to float32. A few columns (L14: 180, 316, 413, 440, 644; B32: 92, 133, 312;
   the file's ``lookup_columns``) are *categorical*: each value is printed as C ``"%f"`` (6 decimals,
   e.g. ``"-0.003643"``) and looked up in a string table (int64 ids 1..m; a miss is 0), and the id, as float32,
   replaces the value. Every other column passes through (NaN replaced by 0).
2. Keras ``Normalization``: ``(x - mean) / max(sqrt(variance), epsilon)``.
3. Dense + ReLU for every layer but the last, last Dense, sigmoid: ``punsafe``.

We compute in float32, as the SavedModel does after its first cast: the float64 serving input only matters through
that cast, which is exact for float32 (or float16) embeddings. Differences from the SavedModel are float32
summation order only (measured max |Δp| in the README).

The lookup is vectorised: for a float32 ``v``, ``v * 1e6`` is exact in float64 (24-bit mantissa times
15625 * 2**6 fits 53 bits), so ``rint`` of it (round half to even) is the integer ``"%f"`` prints, glibc rounding
the exact value half to even too. ``"%f"`` prints a minus sign on a negative value that rounds to zero
(``"-0.000000"``), so those get a code of their own. Keys become the same integer codes, so a row's id is one
``searchsorted`` on sorted int64 codes.

File format (``np.load(path, allow_pickle=False)``): ``mean``, ``variance``, ``epsilon`` (float32), ``dense{i}_kernel``
(in, out) and ``dense{i}_bias`` (out,) for i = 0.. in layer order, ``lookup_columns`` (int64, k), and per column c
of it ``lookup_keys_{c}`` (unicode strings as printed by ``"%f"``), ``lookup_values_{c}`` (int64 ids) and
``lookup_default_{c}`` (int64 scalar, the id of a miss).

Identity (:func:`arrays_sha256`): like the aesthetic heads' tensors (see
:mod:`laion_assets.scoring.predictors`), for every array in sorted name order one header line
``json.dumps([name, dtype, shape, nbytes]) + "\\n"`` then its elements, little-endian, C order; a numeric
``dtype`` is numpy's name (``"float32"``); a string array has dtype ``"utf8"`` and its payload is every element in
C order as UTF-8 followed by ``"\\n"`` (so the fixed width numpy stored it with does not count).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from laion_assets.core.errors import BadInputError

if TYPE_CHECKING:  # predictors.py imports this module; the identity type is only needed for annotations
    from laion_assets.scoring.predictors import PredictorIdentity

NSFW_L14 = "nsfw-autokeras-l14"
NSFW_B32 = "nsfw-autokeras-b32"

# Layer widths after the input of each released model: its kind follows from the input width and these.
_WIDTHS = {NSFW_L14: (768, (64, 512, 256, 1)), NSFW_B32: (512, (32, 32, 1))}

# A float32 value whose ``"%f"`` is "-0.000000"; real codes are |rint(v * 1e6)| < 2**62 (int64 min is unused).
_NEG_ZERO = np.iinfo(np.int64).min
# A value no key can have (NaN, Inf, or too large to be any key): always a miss.
_NO_KEY = np.iinfo(np.int64).max
_CODE_LIMIT = float(2**62)
_KEY_PATTERN = re.compile(r"-?\d+\.\d{6}")


def percent_f_codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of ``"%f" % v`` for float32 ``values``: the printed number times 1e6, "-0.000000" apart.

    Two values print the same ``"%f"`` string exactly when their codes are equal (NaN/Inf/huge: ``_NO_KEY``).
    """
    v = np.asarray(values, dtype=np.float32)
    scaled = np.rint(v.astype(np.float64) * 1e6)  # exact product, rounded half to even as glibc's printf
    ok = np.abs(scaled) < _CODE_LIMIT  # False for NaN and Inf too
    codes = np.where(ok, scaled, 0.0).astype(np.int64)
    codes[~ok] = _NO_KEY
    codes[ok & (scaled == 0) & np.signbit(v)] = _NEG_ZERO
    return codes


def key_codes(keys: np.ndarray, where: str = "keys") -> np.ndarray:
    """Integer codes of ``"%f"``-formatted key strings (as :func:`percent_f_codes` gives for the values printed so)."""
    codes = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys.tolist()):
        if not _KEY_PATTERN.fullmatch(key):
            raise BadInputError(f"{where}: key {key!r} (entry {i}) is not a number as C '%f' prints one")
        digits = int(key.replace(".", ""))
        if abs(digits) >= _CODE_LIMIT:
            raise BadInputError(f"{where}: key {key!r} (entry {i}) is too large for a float32 embedding value")
        codes[i] = _NEG_ZERO if digits == 0 and key.startswith("-") else digits
    return codes


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Hex sha256 of named arrays in the canonical encoding described in this module's docstring."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        if array.dtype.kind == "U":
            data = "".join(f"{s}\n" for s in array.reshape(-1).tolist()).encode("utf-8")
            dtype = "utf8"
        elif array.dtype.kind in "biuf":
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            dtype = array.dtype.name
        else:
            raise ValueError(f"array {name} has dtype {array.dtype}; only numbers and strings have an encoding")
        digest.update(json.dumps([name, dtype, list(array.shape), len(data)]).encode("utf-8") + b"\n")
        digest.update(data)
    return digest.hexdigest()


def looks_like_nsfw_file(path: str | Path) -> bool:
    """True when ``path`` is a numpy ``.npz`` archive (how NSFW heads ship; aesthetic heads are torch files)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: NSFW head file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{path}: cannot read as a numpy .npz of arrays (no pickles): {exc}") from exc


@dataclass(frozen=True)
class NsfwHead:
    """The checked arrays of one NSFW head file and its kind (dim and layer widths)."""

    kind: str
    arrays: dict[str, np.ndarray]
    layers: int
    lookup_columns: tuple[int, ...]


def _layers(arrays: dict[str, np.ndarray]) -> int:
    count = 0
    while f"dense{count}_kernel" in arrays:
        count += 1
    return count


def check_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> NsfwHead:
    """Check an NSFW head's arrays (names, dtypes, shapes, lookup tables) and name its kind; errors name the file."""
    needed = ["mean", "variance", "epsilon", "lookup_columns", "dense0_kernel"]
    missing = [n for n in needed if n not in arrays]
    if missing:
        raise BadInputError(
            f"{path}: arrays {missing} missing; an NSFW head has {needed[:4]} and dense{{i}}_kernel/bias"
        )
    layers = _layers(arrays)
    dim = int(np.asarray(arrays["mean"]).shape[0]) if np.asarray(arrays["mean"]).ndim == 1 else -1
    shapes: dict[str, tuple[int, ...]] = {"mean": (dim,), "variance": (dim,), "epsilon": ()}
    fan_in, widths = dim, []
    for i in range(layers):
        kernel = np.asarray(arrays[f"dense{i}_kernel"])
        width = int(kernel.shape[-1]) if kernel.ndim == 2 else -1
        shapes[f"dense{i}_kernel"], shapes[f"dense{i}_bias"] = (fan_in, width), (width,)
        fan_in = width
        widths.append(width)
    columns = np.asarray(arrays["lookup_columns"])
    if columns.dtype != np.int64 or columns.ndim != 1:
        raise BadInputError(f"{path}: lookup_columns must be a 1-d int64 array, got {columns.dtype} {columns.shape}")
    lookup = [int(c) for c in columns]
    if len(set(lookup)) != len(lookup) or any(not 0 <= c < dim for c in lookup):
        raise BadInputError(f"{path}: lookup_columns {lookup} must be distinct columns of the {dim}-d input")
    expected = set(shapes) | {"lookup_columns"}
    for c in lookup:
        expected |= {f"lookup_keys_{c}", f"lookup_values_{c}", f"lookup_default_{c}"}
    absent, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if absent or extra:
        raise BadInputError(f"{path}: arrays missing {absent}, unexpected {extra}")
    for name, shape in shapes.items():
        array = np.asarray(arrays[name])
        if array.dtype != np.float32 or array.shape != shape:
            raise BadInputError(f"{path}: {name} is {array.dtype} {array.shape}, expected float32 {shape}")
    if widths[-1:] != [1]:
        raise BadInputError(f"{path}: the last dense layer has width {widths[-1:]}, expected 1 (the logit)")
    for c in lookup:
        keys, values = np.asarray(arrays[f"lookup_keys_{c}"]), np.asarray(arrays[f"lookup_values_{c}"])
        default = np.asarray(arrays[f"lookup_default_{c}"])
        if keys.dtype.kind != "U" or keys.ndim != 1 or values.dtype != np.int64 or values.shape != keys.shape:
            raise BadInputError(
                f"{path}: lookup table of column {c}: keys must be 1-d strings and values int64 of the same length "
                f"(got {keys.dtype} {keys.shape}, {values.dtype} {values.shape})"
            )
        if default.dtype != np.int64 or default.shape != ():
            raise BadInputError(f"{path}: lookup_default_{c} must be an int64 scalar")
        codes = key_codes(keys, f"{path}: lookup_keys_{c}")
        if len(np.unique(codes)) != len(codes):
            raise BadInputError(f"{path}: lookup_keys_{c} holds the same key twice")
    kind = next((k for k, (d, w) in _WIDTHS.items() if d == dim and tuple(widths) == w), None)
    if kind is None:
        raise BadInputError(
            f"{path}: an NSFW head {dim} -> {widths} fits neither released detector "
            f"(ViT-L/14: 768 -> {list(_WIDTHS[NSFW_L14][1])}, ViT-B/32: 512 -> {list(_WIDTHS[NSFW_B32][1])})"
        )
    return NsfwHead(kind, dict(arrays), layers, tuple(lookup))


def non_finite_problems(head: NsfwHead) -> list[str]:
    """Which float arrays of a head hold NaN or Inf (empty when none do), in sorted name order."""
    problems = []
    for name in sorted(head.arrays):
        array = head.arrays[name]
        if array.dtype.kind == "f":
            bad = int((~np.isfinite(array)).sum())
            if bad:
                problems.append(f"array {name} holds {bad} NaN/Inf value(s) of {array.size}")
    return problems


class NsfwPredictor:
    """LAION's CLIP-based NSFW detector: ``score`` gives ``punsafe``, the probability the image is unsafe."""

    def __init__(self, identity: PredictorIdentity, head: NsfwHead) -> None:
        self.identity = identity
        self.kind = head.kind
        a = head.arrays
        self.dim = int(a["mean"].shape[0])
        self.mean = a["mean"].astype(np.float32)
        # Keras Normalization: (x - mean) / maximum(sqrt(variance), epsilon), in float32 like the graph.
        self.scale = np.maximum(np.sqrt(a["variance"]), a["epsilon"]).astype(np.float32)
        self.layers = [(a[f"dense{i}_kernel"], a[f"dense{i}_bias"]) for i in range(head.layers)]
        self.lookups = []
        for c in head.lookup_columns:
            codes = key_codes(a[f"lookup_keys_{c}"], f"lookup_keys_{c}")
            order = np.argsort(codes)
            ids = a[f"lookup_values_{c}"][order].astype(np.float32)
            self.lookups.append((c, codes[order], ids, np.float32(a[f"lookup_default_{c}"])))

    def lookup_ids(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(column, float32 ids)`` of every lookup column of a float32 (n, d) batch (a miss gets the default)."""
        out = []
        for column, codes, ids, default in self.lookups:
            wanted = percent_f_codes(x[:, column])
            if not len(codes):
                out.append((column, np.full(len(wanted), default, dtype=np.float32)))
                continue
            at = np.minimum(np.searchsorted(codes, wanted), len(codes) - 1)
            out.append((column, np.where(codes[at] == wanted, ids[at], default).astype(np.float32)))
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """autokeras' multi_category_encoding of a float32 (n, d) batch (a new array): ids in the lookup columns,
        NaN -> 0 in the others (a lookup column's NaN prints "nan", which is no key)."""
        out = np.where(np.isnan(x), np.float32(0), x).astype(np.float32)
        for column, ids in self.lookup_ids(x):
            out[:, column] = ids
        return out

    def normalized(self, x: np.ndarray) -> np.ndarray:
        """The Normalization layer's output for a float32 (n, d) batch: ``(encode(x) - mean) / scale``.

        The same float32 operations as :meth:`encode` then the layer, fused into one pass over the batch (this runs
        on every chunk of every part): the subtraction first, then the few columns that differ replaced.
        """
        h = np.subtract(x, self.mean, dtype=np.float32)
        if np.isnan(h.sum(dtype=np.float32)):  # cheap test; NaN (or inf - inf) somewhere: the exact rule
            h = np.where(np.isnan(x), -self.mean, h)
        for column, ids in self.lookup_ids(x):
            h[:, column] = ids - self.mean[column]
        h /= self.scale
        return h

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """The last dense layer's output (before the sigmoid), float32 (n,)."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BadInputError(f"NSFW head {self.identity} takes (n, {self.dim}) embeddings, got {x.shape}")
        h = self.normalized(x)
        for i, (kernel, bias) in enumerate(self.layers):
            h = h @ kernel
            h += bias
            if i < len(self.layers) - 1:
                np.maximum(h, 0, out=h)
        return h[:, 0]

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """``punsafe`` of a (n, d) batch: float32 (n,) in [0, 1]."""
        z = self.logits(embeddings)
        # sigmoid without overflow warnings for large |z|: exp of a non-positive number only.
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def load_nsfw(path: str | Path) -> tuple[NsfwHead, str]:
    """Read and check an NSFW head file; returns the head and its canonical sha256."""
    arrays = read_arrays(path)
    head = check_arrays(path, arrays)
    return head, arrays_sha256(arrays)
