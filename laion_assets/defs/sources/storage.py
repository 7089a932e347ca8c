"""Where the stored embeddings (and optional safety tags) are read from and where every asset writes."""

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.core.hints import build_hint
from laion_assets.core.locations import Location, is_local, location
from laion_assets.core.outputs import OutputLayout
from laion_assets.core.settings import DATA_ROOT, SAFETY, SOURCE, Spec
from laion_assets.scoring.predictors import CLIP_L14_DIM
from laion_assets.selection.gating import ShardSettings
from laion_assets.selection.safety_columns import DEFAULT_SOURCE, SOURCES, SafetySources
from laion_assets.sources.layout import Part, parts_by_key
from laion_assets.sources.metadata import ENGLISH
from laion_assets.sources.mirror import Mirror

# Read when a run uses the resource, like the paths: how many shards one run processes at once.
WORKERS_ENV = "LAION_ASSETS_WORKERS"


def from_environment(spec: Spec, configured: str) -> str:
    """The configured value, else the spec's variable read through ``dg.EnvVar`` now, else the spec's default.

    Called when a run, sensor or schedule uses the resource, never when the code location loads: importing the
    definitions reads no setting from the environment, and a variable set for a run (``LAION_ASSETS_DATA_ROOT=…
    dagster asset materialize …``) takes effect in it. An empty value counts as not given, as everywhere.
    """
    return configured or dg.EnvVar(spec.env).get_value() or spec.default


def _unset(spec: Spec) -> str:
    """The description of a setting whose empty config means "from the environment, else the default"."""
    return f"empty: ${spec.env} when the run starts, else {spec.default or 'none'}"


class StorageResource(dg.ConfigurableResource):
    """Sources and data root: local paths (relative ones start at the project folder) or fsspec URLs.

    ``source`` is a clip-retrieval folder (``img_emb/``, ``metadata/``). Setting ``urls`` (a folder of numbered
    parquet/CSV URL shards) switches the shards to the URL chain instead: images are downloaded and embedded under
    the data root, and ``source`` is not read. ``safety`` optionally names LAION's separate safety-tags table
    (parquet files with ``hash, punsafe, pwatermark``). A remote ``data_root`` is mirrored through the local
    ``staging`` folder, which a pull brings to the remote's current content (see
    :class:`~laion_assets.sources.mirror.Mirror`; what was synced is kept in ``staging/.mirror/``). Left empty,
    ``source``, ``data_root`` and ``safety`` come from ``LAION_ASSETS_SOURCE``, ``LAION_ASSETS_DATA_ROOT`` and
    ``LAION_ASSETS_SAFETY`` (``dg.EnvVar``, read when a run uses the resource), else the project's defaults
    (``laion_assets/core/settings.py``). Credentials for URLs come from the environment fsspec reads (``AWS_*``,
    ``HF_TOKEN``, …), never from this config.
    """

    source: str = Field(default="", description=f"clip-retrieval folder or URL ({_unset(SOURCE)})")
    data_root: str = Field(default="", description=f"output folder or URL ({_unset(DATA_ROOT)})")
    safety: str = Field(default="", description=f"safety-tags table, folder, file or URL ({_unset(SAFETY)})")
    staging: str = ""
    swap_width_height: bool = False
    embedding_dim: int = CLIP_L14_DIM
    urls: str = ""
    workers: int = Field(
        default=0,
        description=f"shards processed at once inside one run, by threads (0: ${WORKERS_ENV}, else one per CPU core)",
    )
    punsafe_from: str = Field(
        default=DEFAULT_SOURCE,
        description=f"where punsafe comes from, one of {list(SOURCES)}: LAION's provided value (the safety table, "
        "else the metadata's column), our NSFW head's (computed in aesthetic_scores), or LAION's where it has one "
        "and ours elsewhere",
    )
    pwatermark_from: str = Field(
        default=DEFAULT_SOURCE,
        description=f"where pwatermark comes from, one of {list(SOURCES)}: LAION's provided value, our watermark "
        "head's (computed in image_embeddings from the images), or LAION's where it has one and ours elsewhere",
    )
    language: str = Field(
        default=ENGLISH,
        description="the source's declared language: rows of a part with no language column (or an all-null one) "
        "take it, as laion2B-en's rows are English by source; '' declares none (such rows stay unknown)",
    )

    @property
    def source_value(self) -> str:
        """``source``, else ``$LAION_ASSETS_SOURCE``, else ``data/sample``."""
        return from_environment(SOURCE, self.source)

    @property
    def data_root_value(self) -> str:
        """``data_root``, else ``$LAION_ASSETS_DATA_ROOT``, else ``data/out``."""
        return from_environment(DATA_ROOT, self.data_root)

    @property
    def safety_value(self) -> str:
        """``safety``, else ``$LAION_ASSETS_SAFETY``, else none (``""``)."""
        return from_environment(SAFETY, self.safety)

    @property
    def safety_sources(self) -> SafetySources:
        """Where each of punsafe and pwatermark comes from (``punsafe_from``, ``pwatermark_from``), checked."""
        return SafetySources(self.punsafe_from, self.pwatermark_from)

    @property
    def url_mode(self) -> bool:
        """True when shards come from URL shards rather than stored embeddings."""
        return bool(self.urls)

    @property
    def urls_path(self) -> Location:
        """The URL source folder (a local path or a UPath)."""
        return location(self.urls)

    @property
    def shard_source(self) -> Location:
        """The folder whose numbered files define the shard partitions (URL shards or stored parts)."""
        return self.urls_path if self.url_mode else self.source_path

    @property
    def parts_source(self) -> Location:
        """The clip-retrieval folder the per-shard parts are read from (in URL mode, the one we embedded)."""
        return self.layout.embedded_dir if self.url_mode else self.source_path

    @property
    def swap_stored_metadata(self) -> bool:
        """Whether indexing a stored part swaps WIDTH/HEIGHT (in URL mode the swap happened on download)."""
        return self.swap_width_height and not self.url_mode

    @property
    def source_path(self) -> Location:
        """The source folder (a local path or a UPath)."""
        return location(self.source_value)

    @property
    def safety_path(self) -> Location | None:
        """The safety-tags table, or None when the metadata carries punsafe/pwatermark itself."""
        safety = self.safety_value
        return location(safety) if safety else None

    @property
    def _local_root(self) -> Path:
        root = location(self.data_root_value)
        if is_local(root):
            return root
        if self.staging:
            return location(self.staging)
        digest = hashlib.sha256(self.data_root_value.encode()).hexdigest()[:16]
        return Path.home() / ".cache" / "laion-assets" / "staging" / digest

    @property
    def layout(self) -> OutputLayout:
        """Paths of every output below the (local working copy of the) data root."""
        return OutputLayout(self._local_root, build_hint(self.source_value, self.data_root_value, self.urls))

    @property
    def shard_settings(self) -> ShardSettings:
        """The settings a shard must have been indexed with to be released."""
        return ShardSettings(self.language, self.swap_stored_metadata)

    @property
    def mirror(self) -> Mirror | None:
        """The remote mirror of the data root, or None when it is local."""
        root = location(self.data_root_value)
        return None if is_local(root) else Mirror(self._local_root, root)

    def pull(self, *paths: Path) -> None:
        """Bring inputs under the data root down from a remote data root (no-op when local)."""
        if self.mirror is not None:
            for path in paths:
                self.mirror.pull(path)

    def push(self, *paths: Path) -> None:
        """Send outputs under the data root up to a remote data root (no-op when local)."""
        if self.mirror is not None:
            for path in paths:
                self.mirror.push(path)

    def part(self, key: str) -> Part:
        """The stored part behind a shard partition key (in URL mode, the part embedded from its images)."""
        found = self.parts([key])
        if key not in found:
            raise MissingUpstreamError(
                f"{self.parts_source}: no part with key {key!r} (is the shard still registered?)"
            )
        return found[key]

    def parts(self, keys: Sequence[str] | None = None) -> dict[str, Part]:
        """The stored parts behind ``keys`` (every part when None), from ONE listing of the source.

        Each part carries its files' sizes and mtimes/etags as the listing saw them, so a step over many shards
        lists the source once and compares what was validated without a request per file. Absent keys are left out.
        """
        if self.url_mode:  # embedded under the data root, maybe by another machine of a remote root
            self.pull(self.layout.embedded_dir)
        listed = parts_by_key(self.parts_source)
        return listed if keys is None else {key: listed[key] for key in keys if key in listed}

    @property
    def shard_workers(self) -> int:
        """How many shards a run processes at once: ``workers``, else ``$LAION_ASSETS_WORKERS``, else the cores."""
        configured = self.workers or dg.EnvVar(WORKERS_ENV).get_value("") or ""
        if not configured:
            return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        try:
            workers = int(configured)
        except ValueError:
            raise BadInputError(f"${WORKERS_ENV}={configured!r} is not a number of shards to process at once") from None
        if workers < 1:
            raise BadInputError(f"storage.workers / ${WORKERS_ENV} must be at least 1, not {workers}")
        return workers
