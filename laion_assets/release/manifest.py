"""A release's ``manifest.json``: every file's sha256 and row count plus everything needed to rebuild it.

The manifest holds no timestamps, run ids or absolute paths, so two builds from the same inputs write the same
bytes. Inputs are located by paths relative to the project folder (when they live inside it) and checked by hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, file_sha256, is_local, list_files
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.scoring.predictors import inspect_weights
from laion_assets.sources.indexing import Validation
from laion_assets.sources.safety import SafetySource

MANIFEST = "manifest.json"
CARD = "README.md"
IMAGE_HEADS = ("pwatermark",)  # score columns computed from the images, which a rebuild from embeddings cannot redo
FORMAT_VERSION = 1
PACKAGES = ("laion-assets", "numpy", "polars", "pyarrow", "torch", "mmh3", "dagster", "huggingface_hub")


# Arrow types as the Hub and ``datasets`` name them (``Value(dtype)``); other Arrow types print their own name.
_HUB_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16"}
_PRIMITIVE = re.compile(r"^(u?int(8|16|32|64)|float(16|32|64)|bool|string|large_string)$")
# The column whose distinct values say which languages a table holds (LAION's cld3 codes).
LANGUAGE_COLUMN = "LANGUAGE"


def hub_dtype(arrow_type: pa.DataType, path: Path, column: str) -> str:
    """The Hub/``datasets`` dtype of an Arrow column type (``double`` -> ``float64``); raises for nested types."""
    name = _HUB_DTYPES.get(str(arrow_type), str(arrow_type))
    if not _PRIMITIVE.match(name):
        raise BadInputError(f"{path}: column {column!r} has type {arrow_type}, which the dataset card cannot declare")
    return name


def parquet_facts(path: Path) -> dict[str, object]:
    """Rows, columns (Hub dtypes), in-memory Arrow size and, with a LANGUAGE column, its languages of one parquet file.

    ``arrow_bytes`` is the Arrow size of the table read one row group at a time (memory stays bounded by a row
    group): what ``datasets`` reports as a split's ``num_bytes``, up to a few offset bytes per batch where it cuts
    batches otherwise.
    """
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    facts: dict[str, object] = {
        "rows": parquet.metadata.num_rows,
        "features": [{"name": f.name, "dtype": hub_dtype(f.type, path, f.name)} for f in schema],
    }
    arrow_bytes, languages = 0, set()
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        arrow_bytes += table.nbytes
        if LANGUAGE_COLUMN in schema.names:
            languages |= set(pc.unique(table[LANGUAGE_COLUMN]).drop_null().to_pylist())
    facts["arrow_bytes"] = arrow_bytes
    if LANGUAGE_COLUMN in schema.names:
        facts["languages"] = sorted(languages)
    return facts


def bytes_entry(data: bytes) -> dict[str, int | str]:
    """sha256 and size of a file's content (what :func:`file_entry` records for a file holding ``data``)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def file_entry(path: Path, record_size: int | None = None) -> dict[str, object]:
    """sha256, size and, for KV files, the row count of one file; for parquet files :func:`parquet_facts` too."""
    entry: dict[str, object] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        entry.update(parquet_facts(path))
    elif record_size:
        entry["rows"] = path.stat().st_size // record_size
    return entry


def project_relative(path: Location) -> str | None:
    """``path`` relative to the project folder, its URL when remote, or None elsewhere (never an absolute path)."""
    if not is_local(path):
        return str(path)
    try:
        return Path(path).resolve().relative_to(PROJECT_DIR.resolve()).as_posix()
    except ValueError:
        return None


def _relative(path: str, source: Location) -> str:
    root = str(source).rstrip("/") + "/"
    if not path.startswith(root):
        raise BadInputError(f"{path}: not inside the source folder {source}; re-materialize clip_embeddings")
    return path[len(root) :]


def source_entry(source: Location, validations: Mapping[str, Validation]) -> dict[str, object]:
    """The source folder (project-relative, URL or None) and each released part's files, hashes and rows.

    The hashes are the ones ``clip_embeddings`` computed while validating each part (callers check first that the
    files are unchanged since), so a release never reads every part a second time.
    """
    entries = []
    for key, validation in sorted(validations.items()):
        entries.append(
            {
                "key": key,
                "embeddings": _relative(str(validation.embeddings["path"]), source),
                "embeddings_sha256": validation.embeddings["sha256"],
                "metadata": _relative(str(validation.metadata["path"]), source),
                "metadata_sha256": validation.metadata["sha256"],
                "rows": validation.rows,
            }
        )
    return {"source": project_relative(source), "parts": entries}


def safety_entry(safety: Location | None, joined: SafetySource | None = None) -> dict[str, object] | None:
    """The separate safety-tags table a release joined (project-relative folder or URL, each file's sha256).

    ``joined`` is what ``safety_tags`` recorded when it indexed the table (the files and hashes actually joined);
    without it the table is hashed as it is now.
    """
    if safety is None:
        return None
    if joined is not None:
        files = [
            {"path": str(f["path"]), "sha256": str(f["sha256"])} for f in sorted(joined.files, key=lambda f: f["path"])
        ]
        return {"source": project_relative(safety), "files": files}
    found = list_files(safety, ".parquet") if safety.is_dir() else [safety]
    return {
        "source": project_relative(safety),
        "files": [
            {"path": f.relative_to(safety).as_posix() if f != safety else f.name, "sha256": file_sha256(f)}
            for f in found
        ],
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the output bytes."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version() -> dict[str, object]:
    """The package version and the git commit of the project folder (None outside a git checkout)."""
    commit: str | None = None
    dirty: bool | None = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "laion_assets"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package_versions()["laion-assets"], "git_commit": commit, "git_dirty": dirty}


def dumps(manifest: dict) -> str:
    """Serialise a manifest stably (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_manifest(release_dir: Path) -> dict:
    """Read ``release_dir/manifest.json``; the error names the file and what is wrong."""
    path = Path(release_dir) / MANIFEST
    if not path.is_file():
        raise BadInputError(f"{path}: no manifest.json; is {release_dir} a release folder?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("version", "files", "inputs", "predictors"):
        if key not in manifest:
            raise BadInputError(f"{path}: missing the {key!r} field")
    if manifest.get("format") != FORMAT_VERSION:
        raise BadInputError(f"{path}: manifest format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    return manifest


def check_files(release_dir: Path, manifest: dict) -> dict[str, str]:
    """Compare the files in ``release_dir`` with the manifest: ``{relative path: problem}``, empty when all match."""
    release_dir = Path(release_dir)
    problems: dict[str, str] = {}
    for rel, entry in sorted(manifest["files"].items()):
        path = release_dir / rel
        if not path.is_file():
            problems[rel] = "missing"
        elif file_sha256(path) != entry["sha256"]:
            problems[rel] = f"sha256 {file_sha256(path)} != manifest {entry['sha256']}"
    listed = set(manifest["files"]) | {MANIFEST}
    for path in sorted(p for p in release_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(release_dir).as_posix()
        if rel not in listed:
            problems[rel] = "not listed in the manifest"
    return problems


IMAGE_INPUT = "images"  # the ``input`` of a head scored from the images (pwatermark), not from the embeddings


def image_head_entry(column: str, identity: str, weights: str, configured: str | None) -> dict[str, object]:
    """The manifest entry of a head scored from images (``pwatermark``): its identity, weights and ``input``.

    ``weights`` is how the head was configured (a file, or ``random:SEED``) and ``configured`` the identity of the
    head configured now; the recorded one must be it (else its shards are stale: re-score them first).
    """
    if configured is not None and configured != identity:
        raise BadInputError(
            f"{column} was computed by {identity} but the configured head is {configured}; re-score the stale "
            "shards first (`laion-assets stale`, then the rescore job)"
        )
    path = Path(weights)
    entry: dict[str, object] = {"identity": identity, "input": IMAGE_INPUT, "forced": False}
    if weights and path.is_file():
        entry.update({"file": project_relative(path) or path.name, "file_sha256": file_sha256(path)})
    else:
        entry["file"] = weights or "not configured now"
    return entry


def predictor_entries(
    identities: dict[str, str], files: dict[str, Path], image_heads: Mapping[str, tuple[str, str | None]] | None = None
) -> dict[str, dict[str, object]]:
    """``{column: {identity, file, file_sha256, forced[, misfit]}}``; raises when a file's weights did not score.

    The configured file must hold the weights that scored the column: its identity (kind + sha256 of the tensors,
    not of the file) must be the recorded one. ``file_sha256`` is provenance only. ``forced`` is true when the
    weights do not fit the column (another kind of head, NaN/Inf), which only a forced config lets through;
    ``misfit`` then says why. A head scored from images (``pwatermark``) is recorded by :func:`image_head_entry`
    from ``image_heads`` (``{column: (weights as configured, identity configured now)}``).
    """
    entries: dict[str, dict[str, object]] = {}
    for column, identity in sorted(identities.items()):
        if column in IMAGE_HEADS:
            weights, configured = (image_heads or {}).get(column, ("", None))
            entries[column] = image_head_entry(column, identity, weights, configured)
            continue
        path = files.get(column)
        if path is None:
            raise BadInputError(f"no weights file configured for score column {column!r} (scored by {identity})")
        info = inspect_weights(path, column)
        if str(info.identity) != identity:
            raise BadInputError(
                f"{path}: its weights ({info.identity}) are not the predictor that scored {column!r} ({identity}); "
                "re-score the shards or point the predictors config at the original weights"
            )
        entry: dict[str, object] = {
            "identity": identity,
            "file": project_relative(path) or Path(path).name,
            "file_sha256": file_sha256(path),
            "forced": bool(info.problems),
        }
        if info.problems:
            entry["misfit"] = list(info.problems)
        entries[column] = entry
    return entries
