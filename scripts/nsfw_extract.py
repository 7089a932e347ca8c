"""Read LAION's CLIP-based NSFW detector SavedModels into the numpy head files laion-assets ships, and record the
SavedModels' own outputs for the tests.

Runs ONLY in a throwaway environment with TensorFlow (checked with tensorflow-cpu 2.21.0, numpy 2.4.6); laion-assets
never depends on TensorFlow. The package itself is not installed there: this script puts the project folder on
``sys.path`` and imports only :mod:`laion_assets.scoring.nsfw` (numpy).

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0
    /tmp/tfenv/bin/python scripts/nsfw_extract.py --zips DIR_WITH_THE_TWO_ZIPS [--reference-weights DIR]

``DIR_WITH_THE_TWO_ZIPS`` holds ``clip_autokeras_binary_nsfw.zip`` (ViT-L/14) and ``clip_autokeras_nsfw_b32.zip``
(ViT-B/32) from LAION-AI/CLIP-based-NSFW-Detector (see data/models/nsfw/ORIGIN.md). It writes:

- ``data/models/nsfw/clip_autokeras_binary_nsfw.npz`` and ``clip_autokeras_nsfw_b32.npz``: the Normalization and
  Dense weights (read from the checkpoint), the Normalization epsilon (a graph constant) and the string lookup
  tables of the columns autokeras treated as categorical (exported from the graph's hash tables), in the format
  :mod:`laion_assets.scoring.nsfw` documents;
- ``laion_assets_tests/scoring/data/nsfw_keras_reference.npz``: the SavedModel's ``punsafe`` on reproducible inputs
  (the seed; the inputs' sha256; for the vocabulary-hitting inputs the values set in the lookup columns).

Which table belongs to which column is read from the graph (the ``LookupTableFindV2`` fed by ``AsString`` of
``split:output:N``) and then checked by probing: one input per (column, key) with only that column set; the
SavedModel's output must equal the port's, which uses the table under that column.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from laion_assets.scoring.nsfw import NsfwPredictor, check_arrays, key_codes  # noqa: E402

MODELS = {"clip_autokeras_binary_nsfw": 64, "clip_autokeras_nsfw_b32": 32}  # SavedModel -> reference rows
SEED = 20221124


def reference_inputs(seed: int, rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The recipe the tests repeat: ``rows`` random unit vectors (float32), then ``rows`` more for the vocab rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * rows, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    return x[:rows], x[rows:].copy()


def sha256(array: np.ndarray) -> str:
    """sha256 of an array's C-order little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def extract(saved_model: Path) -> dict[str, np.ndarray]:
    """The arrays of one head file, read from a SavedModel folder."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    reader = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
    names = reader.get_variable_to_shape_map()

    def var(name: str) -> np.ndarray:
        return reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")

    # Layer 1 is the Normalization, layers 2.. the Dense layers (layer 0 is the categorical encoding).
    arrays: dict[str, np.ndarray] = {
        "mean": var("layer_with_weights-1/mean"),
        "variance": var("layer_with_weights-1/variance"),
    }
    layer = 2
    while f"layer_with_weights-{layer}/kernel/.ATTRIBUTES/VARIABLE_VALUE" in names:
        arrays[f"dense{layer - 2}_kernel"] = var(f"layer_with_weights-{layer}/kernel")
        arrays[f"dense{layer - 2}_bias"] = var(f"layer_with_weights-{layer}/bias")
        layer += 1

    serving = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    graph = serving.graph.as_graph_def()
    wrapped = [f for f in graph.library.function if "wrapped_model" in f.signature.name]
    if len(wrapped) != 1:
        raise SystemExit(f"{saved_model}: expected one __inference__wrapped_model function, got {len(wrapped)}")
    nodes = {n.name: n for n in wrapped[0].node_def}
    epsilon = tensor_util.MakeNdarray(nodes["model/normalization/Maximum/y"].attr["value"].tensor)
    arrays["epsilon"] = np.asarray(epsilon, dtype=np.float32).reshape(())
    # Column of each table handle argument: LookupTableFindV2(handle, AsString(split:output:N), default).
    args = [a.name for a in wrapped[0].signature.input_arg]
    column_of_arg: dict[str, int] = {}
    for node in wrapped[0].node_def:
        if node.op == "LookupTableFindV2":
            as_string = nodes[node.input[1].split(":")[0]]
            match = re.fullmatch(r"model/multi_category_encoding/split:output:(\d+)", as_string.input[0])
            if as_string.op != "AsString" or match is None:
                raise SystemExit(f"{saved_model}: lookup {node.name} is not fed by AsString of an input column")
            attrs = as_string.attr
            printed = (attrs["precision"].i, attrs["shortest"].b, attrs["scientific"].b, attrs["width"].i)
            if printed != (-1, False, False, -1):
                raise SystemExit(f"{saved_model}: {as_string.name} does not print as C '%f'")
            column_of_arg[node.input[0]] = int(match.group(1))
    table_args = [a for a in args if a.endswith("_table_handle")]
    if sorted(column_of_arg) != sorted(table_args):
        raise SystemExit(f"{saved_model}: table arguments {table_args} vs lookups {sorted(column_of_arg)}")
    # The serving function captures (table, default) pairs in the order of those arguments.
    captured = [ext for ext, _ in serving.graph.captures]
    tables = [c for c in captured if c.dtype == tf.resource][: len(table_args)]
    defaults = [c for c in captured if c.dtype == tf.int64][: len(table_args)]
    columns = [column_of_arg[a] for a in table_args]
    arrays["lookup_columns"] = np.asarray(columns, dtype=np.int64)
    for column, table, default in zip(columns, tables, defaults, strict=True):
        keys, values = tf.raw_ops.LookupTableExportV2(table_handle=table, Tkeys=tf.string, Tvalues=tf.int64)
        keys = np.asarray([k.decode("ascii") for k in keys.numpy()])
        order = np.argsort(key_codes(keys), kind="stable")
        arrays[f"lookup_keys_{column}"] = keys[order]
        arrays[f"lookup_values_{column}"] = values.numpy().astype(np.int64)[order]
        arrays[f"lookup_default_{column}"] = np.asarray(default.numpy(), dtype=np.int64).reshape(())
    return arrays


def run_savedmodel(saved_model: Path, x: np.ndarray) -> np.ndarray:
    """The SavedModel's ``punsafe`` for float32 rows given to it as float64, as its serving signature takes."""
    import tensorflow as tf

    serving = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    out = serving(input_1=tf.constant(x.astype(np.float64)))
    return np.asarray(next(iter(out.values())).numpy()[:, 0], dtype=np.float32)


def main() -> None:
    """Extract both heads, check them, write the head files and the reference numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zips", type=Path, required=True, help="folder holding the two SavedModel zips")
    parser.add_argument("--reference-weights", type=Path, help="folder of *_weights.npz to compare the weights with")
    parser.add_argument("--models-out", type=Path, default=PROJECT / "data" / "models" / "nsfw")
    reference_out = PROJECT / "laion_assets_tests" / "scoring" / "data" / "nsfw_keras_reference.npz"
    parser.add_argument("--reference-out", type=Path, default=reference_out)
    args = parser.parse_args()
    reference: dict[str, np.ndarray] = {"seed": np.asarray(SEED, dtype=np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in MODELS.items():
            zip_path = args.zips / f"{name}.zip"
            print(f"{zip_path}: sha256 {hashlib.sha256(zip_path.read_bytes()).hexdigest()}")
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp)
            saved_model = Path(tmp) / name
            arrays = extract(saved_model)
            if args.reference_weights:
                ref = np.load(args.reference_weights / f"{name}_weights.npz")
                for key in ref.files:
                    if not np.array_equal(ref[key], arrays[key]):
                        raise SystemExit(f"{name}: {key} differs from {args.reference_weights}")
                print(f"{name}: weights equal to {args.reference_weights}/{name}_weights.npz ({len(ref.files)} arrays)")
            head = check_arrays(name, arrays)
            port = NsfwPredictor(None, head)  # type: ignore[arg-type]
            dim = port.dim
            columns = [int(c) for c in arrays["lookup_columns"]]
            print(f"{name}: {head.kind}, lookup columns {columns}, table sizes "
                  f"{[len(arrays[f'lookup_keys_{c}']) for c in columns]}")  # fmt: skip
            # Probe each column alone with a few of its keys: proves which table serves which column.
            rng = np.random.default_rng(0)
            probes = []
            for c in columns:
                keys = arrays[f"lookup_keys_{c}"]
                for key in keys[rng.choice(len(keys), 4, replace=False)]:
                    row = np.zeros(dim, dtype=np.float32)
                    row[c] = np.float32(float(key))
                    assert "%f" % float(row[c]) == key  # noqa: UP031 (C's "%f" is the point)
                    probes.append(row)
            probes = np.stack(probes)
            d_probe = np.abs(run_savedmodel(saved_model, probes) - port.score(probes)).max()
            print(f"{name}: single-column probes ({len(probes)}): max |dp| {d_probe:.3g}")
            if d_probe > 1e-4:
                raise SystemExit(f"{name}: the port disagrees with the SavedModel on lookup probes: table order?")
            random, vocab = reference_inputs(SEED, rows, dim)
            values = np.empty((rows, len(columns)), dtype=np.float32)
            for j, c in enumerate(columns):
                keys = arrays[f"lookup_keys_{c}"]
                values[:, j] = keys[rng.integers(0, len(keys), rows)].astype(np.float64).astype(np.float32)
            vocab[:, columns] = values
            assert (port.encode(vocab)[:, columns] > 0).all(), "every vocab row hits every table"
            short = "l14" if head.kind.endswith("l14") else "b32"
            for case, x in (("random", random), ("vocab", vocab)):
                p = run_savedmodel(saved_model, x)
                reference[f"{short}_{case}_p"] = p
                reference[f"{short}_{case}_sha256"] = np.asarray(sha256(x))
                print(f"{name}: {case} ({rows} rows): max |dp| {np.abs(p - port.score(x)).max():.3g}, "
                      f"p in [{p.min():.4f}, {p.max():.4f}]")  # fmt: skip
            reference[f"{short}_vocab_values"] = values
            args.models_out.mkdir(parents=True, exist_ok=True)
            out = args.models_out / f"{name}.npz"
            np.savez_compressed(out, **arrays)  # the key strings compress well
            print(f"wrote {out} (sha256 {hashlib.sha256(out.read_bytes()).hexdigest()})")
    args.reference_out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.reference_out, **reference)
    print(f"wrote {args.reference_out}")


if __name__ == "__main__":
    main()
