"""Where every command finds the source, the data root, the safety table and the Dagster instance.

One precedence for all of them, in every ``laion-assets`` subcommand, in ``make demo`` and in the ``storage``
resource's defaults: the command-line flag, else the environment variable, else the project's default. (The
resource reads the variables through ``dg.EnvVar`` when a run uses it, never when the code location loads.)

| setting | flag | environment | default |
|---|---|---|---|
| source | ``--source`` | ``LAION_ASSETS_SOURCE`` | ``data/sample`` |
| data root | ``--data-root`` | ``LAION_ASSETS_DATA_ROOT`` | ``data/out`` |
| safety table | ``--safety`` | ``LAION_ASSETS_SAFETY`` | none |
| Dagster instance | ``--dagster-home`` | ``DAGSTER_HOME`` | ``.dagster`` (created, linking ``dagster.yaml``) |
| watermark head | (the ``watermark`` resource) | ``LAION_ASSETS_WATERMARK`` | none (off) |

Relative paths are taken from the project folder, as everywhere else in the project. An empty value counts as
not given. This module is pure (no dagster import) so that the CLI, the demo and the resources share it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import Location, is_local, location
from laion_assets.core.paths import resolve


@dataclass(frozen=True)
class Spec:
    """How one setting is given: its flag, its environment variable and its default."""

    name: str
    flag: str
    env: str
    default: str
    help: str
    default_help: str = ""  # how --help shows the default, when not simply as ``default``


SOURCE = Spec("source", "--source", "LAION_ASSETS_SOURCE", "data/sample", "clip-retrieval folder or URL")
DATA_ROOT = Spec("data root", "--data-root", "LAION_ASSETS_DATA_ROOT", "data/out", "output folder or URL")
SAFETY = Spec("safety table", "--safety", "LAION_ASSETS_SAFETY", "", "safety-tags table (folder, file or URL)")
WATERMARK = Spec(
    "watermark head",
    "--watermark",
    "LAION_ASSETS_WATERMARK",
    "",
    "LAION's watermark_model_v1.pt (a local file), 'random' / 'random:SEED' (demos), or 'off'",
)
# Where `laion-assets serve` is reached, for the links in asset metadata (read when an asset runs).
SERVE_URL_ENV = "LAION_ASSETS_SERVE_URL"
DEFAULT_SERVE_URL = "http://127.0.0.1:1234"
DAGSTER_HOME = Spec(
    "Dagster instance",
    "--dagster-home",
    "DAGSTER_HOME",
    ".dagster",
    "Dagster instance folder, an existing one",
    ".dagster/ in the project, created with a link to dagster.yaml",
)
PRECEDENCE = (
    "Each setting comes from its flag, else its environment variable, else its default; relative paths are "
    "taken from the project folder."
)


@dataclass(frozen=True)
class Setting:
    """One resolved setting: its value and where it came from (the flag, the variable, or ``default``)."""

    spec: Spec
    value: str
    origin: str

    @property
    def is_default(self) -> bool:
        """True when neither the flag nor the environment gave a value."""
        return self.origin == "default"

    @property
    def location(self) -> Location:
        """The value as a local path (relative ones taken from the project folder) or a URL."""
        return location(self.value)

    def describe(self) -> str:
        """``PATH (from ORIGIN)``, for messages that say where a command looked."""
        return f"{self.location if self.value else 'none'} (from {self.origin})"

    def how_to_change(self) -> str:
        """The sentence a message ends with: which flag or variable points elsewhere."""
        return f"pass {self.spec.flag} or set {self.spec.env}"


def resolve_setting(spec: Spec, flag: str | None = None, environ: Mapping[str, str] | None = None) -> Setting:
    """The flag's value when given, else the environment variable's, else the default."""
    environ = os.environ if environ is None else environ
    if flag:
        return Setting(spec, flag, spec.flag)
    if environ.get(spec.env):
        return Setting(spec, environ[spec.env], spec.env)
    return Setting(spec, spec.default, "default")


def instance_dir(setting: Setting) -> Path:
    """The absolute instance folder; the project's default is created with a link to its ``dagster.yaml``.

    A folder given by flag or environment must already exist, as Dagster requires: creating it would turn a typo
    into a new, empty instance that has no shards registered.
    """
    path = resolve(setting.value)
    if setting.is_default:
        path.mkdir(parents=True, exist_ok=True)
        link = path / "dagster.yaml"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path("..") / "dagster.yaml")
        return path
    if not path.is_dir():
        raise BadInputError(
            f"Dagster instance folder {path} (from {setting.origin}) does not exist: create it, or "
            f"{setting.how_to_change()} to an existing one"
        )
    return path


def use_instance(setting: Setting) -> Path:
    """Resolve the instance folder and export it as ``DAGSTER_HOME``, so Dagster and the processes it starts use it."""
    path = instance_dir(setting)
    os.environ[DAGSTER_HOME.env] = str(path)
    return path


def new_sample_folder(setting: Setting) -> Path:
    """The local folder a new sample may be written to: writing replaces the folder, so it must be new or empty."""
    if not is_local(setting.location):
        raise BadInputError(f"the sample is written to a local folder, not to {setting.describe()}")
    folder = Path(setting.location)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        held = (
            "holds parts"
            if (folder / "img_emb").is_dir() or (folder / "metadata").is_dir()
            else "is not an empty folder"
        )
        raise BadInputError(
            f"{setting.describe()} {held}; the sample is only written to a new or empty folder "
            f"(give another folder, or {setting.how_to_change()})"
        )
    return folder


def flag_help(spec: Spec) -> str:
    """The ``--help`` text of a flag, saying where the value comes from when the flag is not given."""
    return f"{spec.help} (default: ${spec.env}, else {spec.default_help or spec.default or 'none'})"


def add_flags(parser: argparse.ArgumentParser, *specs: Spec) -> None:
    """Add the shared flags of ``specs`` to a subcommand; each defaults to None so that the environment can fill it."""
    for spec in specs:
        dest = spec.flag.removeprefix("--").replace("-", "_")
        parser.add_argument(spec.flag, dest=dest, default=None, metavar="DIR", help=flag_help(spec))


def serve_url(environ: Mapping[str, str] | None = None) -> str:
    """Where ``laion-assets serve`` is reached (``LAION_ASSETS_SERVE_URL``, else its default), for metadata links."""
    env = os.environ if environ is None else environ
    return (env.get(SERVE_URL_ENV) or DEFAULT_SERVE_URL).rstrip("/")
