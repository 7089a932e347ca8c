"""The release's dataset card (``README.md``): YAML front matter the Hub reads, then counts, rules and history.

The header follows the Hub's dataset card conventions (licence, languages, size and task categories), with one
``configs`` and ``dataset_info`` entry per subset under the names users know (``improved_aesthetics_6.5plus``), so
``datasets.load_dataset(repo, name)`` and the Hub viewer find each parquet folder. The card is a pure function of
the manifest (including ``hub_repo``, the repo its usage snippet names) and the histogram, so rebuilding it gives the
same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import yaml

from laion_assets.core.errors import BadInputError
from laion_assets.release.tables import (
    GUESS,
    HUB,
    HUB_LAION_POP,
    LAION_POP_COLUMNS,
    LAION_POP_CONFIG,
    OURS,
    SETTINGS,
    table_files,
)
from laion_assets.selection.histogram import LABELS
from laion_assets.selection.safety_columns import COMPUTED, PROVIDED, PROVIDED_ELSE_COMPUTED

DATA_LICENSE = "cc-by-4.0"  # LAION's metadata (URLs, captions, scores) is released under CC-BY 4.0

# Weights we know by identity digest (the sha256 of their tensors, see laion_assets/scoring/predictors.py; not the
# file's sha256): where they come from and their licence (data/models/SOURCES.md).
KNOWN_PREDICTORS: dict[str, tuple[str, str, str]] = {
    "732c52ede2a6514d99163a736259e64f1978edba8dfd9e2cb3b0ed99d46f242f": (
        "sa_0_4_vit_l_14_linear.pth",
        "LAION-AI/aesthetic-predictor",
        "MIT",
    ),
    "8865204c2fc01e887f05e482b90986c547f4c42936c8e3cf3d58dc1a0378f811": (
        "sac+logos+ava1-l14-linearMSE.pth",
        "christophschuhmann/improved-aesthetic-predictor",
        "Apache-2.0",
    ),
    "febd7069c1d70840935585d8e3ffd0ce89b1a34acbf7474a71eae3ac1a0c1319": (
        "ava+logos-l14-reluMSE.pth",
        "christophschuhmann/improved-aesthetic-predictor",
        "Apache-2.0",
    ),
    "b2b7aedb75b94b97e06f64d63c952cc9004315d30f5b1f5124e541379987fcf9": (
        "sac_public_2022_06_29_vit_l_14_linear.pth",
        "crowsonkb/simulacra-aesthetic-models",
        "MIT",
    ),
    # LAION's CLIP-based NSFW detector (punsafe), read out of its SavedModels (data/models/nsfw/ORIGIN.md).
    "653467282888853dc5b2b2262b20cf3af22d145e7a30f384eae347b6b7464a6f": (
        "nsfw/clip_autokeras_binary_nsfw.npz",
        "LAION-AI/CLIP-based-NSFW-Detector",
        "MIT",
    ),
    "f0232e78e2057f71521b2d6eef18a00b12cc31050e8a41695a89732daf0430cf": (
        "nsfw/clip_autokeras_nsfw_b32.npz",
        "LAION-AI/CLIP-based-NSFW-Detector",
        "MIT",
    ),
}


def subset_path(name: str) -> str:
    """Folder of one subset inside a release."""
    return f"data/{name}"


# LAION-Aesthetics was made to train image generators ("The intended usage of this dataset is image generation",
# LAION's laion-aesthetic.md); the Hub files its derivatives under text-to-image.
TASK_CATEGORIES = ["text-to-image"]
# The Hub's size buckets (DatasetCardData.size_categories), by upper bound of the number of rows.
SIZE_CATEGORIES = [
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]  # fmt: skip
# The config `load_dataset(repo)` picks without a name: the best-known subset (LAION-Aesthetics V2 6.5+).
DEFAULT_CONFIG = "improved_aesthetics_6.5plus"
# Shown in the usage snippet of a release not pushed yet; `laion-assets push` (hf_release) writes the repo in.
REPO_PLACEHOLDER = "ORG/NAME"
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


def config_name(subset: Mapping[str, object]) -> str:
    """The config name users know: LAION's Hub name for V2 (``improved_aesthetics_6.5plus``), else the subset's."""
    return str(subset.get("hub_name") or subset["name"])


def default_config(subsets: list[Mapping[str, object]]) -> str | None:
    """The config ``load_dataset(repo)`` loads when none is named: :data:`DEFAULT_CONFIG` when it has rows, else the
    highest V2 threshold with rows, else the first subset with rows; None when every subset is empty."""
    names = [config_name(s) for s in subsets]
    if DEFAULT_CONFIG in names:
        return DEFAULT_CONFIG
    v2 = [config_name(s) for s in subsets if s.get("hub_name")]
    return v2[-1] if v2 else (names[0] if names else None)


def released_rows(manifest: Mapping[str, object], subset: Mapping[str, object]) -> int:
    """Rows of one subset's parquet files in the release."""
    return sum(int(e["rows"]) for e in subset_files(manifest, str(subset["name"])).values())


def loadable(manifest: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The subsets that get a config: those with rows (``datasets`` refuses a split whose files hold none)."""
    return [s for s in manifest["subsets"] if released_rows(manifest, s)]  # type: ignore[attr-defined]


def size_category(rows: int) -> str:
    """The Hub's size bucket of a row count (``1K<n<10K`` for 5000)."""
    return next((label for bound, label in SIZE_CATEGORIES if rows < bound), "n>1T")


def subset_files(manifest: Mapping[str, object], name: str) -> dict[str, dict]:
    """The manifest entries of one subset's parquet files, by path inside the release."""
    prefix = f"{subset_path(name)}/"
    files: dict[str, dict] = manifest["files"]  # type: ignore[assignment]
    return {rel: e for rel, e in sorted(files.items()) if rel.startswith(prefix) and rel.endswith(".parquet")}


def _subset_info(manifest: Mapping[str, object], subset: Mapping[str, object]) -> dict:
    """One ``dataset_info`` entry: the subset's columns, its train split's rows and bytes, and its download size."""
    return _info(f"subset {subset['name']}", config_name(subset), subset_files(manifest, str(subset["name"])))


def tables(manifest: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The manifest's tables (LAION-POP) that get a config: those with rows."""
    return [t for t in manifest.get("tables") or [] if int(t["rows"])]  # type: ignore[attr-defined]


def table_parquet(manifest: Mapping[str, object], table: Mapping[str, object]) -> dict[str, dict]:
    """The manifest entries of one table's parquet parts, by path inside the release."""
    return {rel: e for rel, e in table_files(manifest, str(table["path"])).items() if rel.endswith(".parquet")}


def _info(what: str, config: str, files: Mapping[str, Mapping]) -> dict:
    # As the Hub writes them: name, then dtype.
    features = {json.dumps([{"name": f["name"], "dtype": f["dtype"]} for f in e["features"]]) for e in files.values()}
    if len(features) != 1:
        raise BadInputError(f"{what}: its files {sorted(files)} do not have one schema to declare")
    num_bytes = sum(int(e["arrow_bytes"]) for e in files.values())
    split = {"name": "train", "num_bytes": num_bytes, "num_examples": sum(int(e["rows"]) for e in files.values())}
    return {
        "config_name": config,
        "features": json.loads(features.pop()),
        "splits": [split],
        "download_size": sum(int(e["bytes"]) for e in files.values()),
        "dataset_size": num_bytes,
    }


def languages(manifest: Mapping[str, object]) -> list[str]:
    """ISO 639 codes of the rows released: each LANGUAGE column's values (primary subtag), and the V2 rule's language.

    V2 subsets keep only rows in the rule's language and drop the LANGUAGE column (as LAION's files do), so a
    non-empty file without one counts as that language. Values that are not 2-3 letter codes (``nolang``) are left out.
    """
    rule = str(manifest["thresholds"]["language"])  # type: ignore[index]
    found: set[str] = set()
    for subset in manifest["subsets"]:  # type: ignore[attr-defined]
        for entry in subset_files(manifest, str(subset["name"])).values():
            if "languages" in entry:
                found |= {str(code).split("-")[0].lower() for code in entry["languages"]}
            elif entry["rows"]:
                found.add(rule)
    return sorted(code for code in found if _LANGUAGE_CODE.match(code))


def front_matter(manifest: dict) -> dict:
    """The card's YAML header by the Hub's dataset card conventions: licence, tasks, size, languages and one
    ``configs`` and ``dataset_info`` entry per subset with rows (``improved_aesthetics_6.5plus`` is the default)."""
    subsets = loadable(manifest)
    default = default_config(subsets)
    configs = []
    for subset in subsets:
        name = config_name(subset)
        entry: dict = {
            "config_name": name,
            "data_files": [{"split": "train", "path": f"{subset_path(subset['name'])}/*.parquet"}],
        }
        if name == default:
            entry["default"] = True
        configs.append(entry)
    for table in tables(manifest):  # after the subsets, never the default
        configs.append(
            {"config_name": table["config"], "data_files": [{"split": "train", "path": f"{table['path']}/*.parquet"}]}
        )
    infos = [_subset_info(manifest, s) for s in subsets]
    infos += [_info(f"table {t['config']}", str(t["config"]), table_parquet(manifest, t)) for t in tables(manifest)]
    largest = max((info["splits"][0]["num_examples"] for info in infos), default=0)
    meta: dict = {"pretty_name": manifest["name"], "license": DATA_LICENSE}
    found = languages(manifest)
    if found:
        meta["language"] = found
    meta |= {
        # Subsets overlap (every V2 subset holds the next one), so the largest one is the dataset's size.
        "size_categories": [size_category(largest)],
        "task_categories": TASK_CATEGORIES,
        "tags": ["laion", "aesthetics", "clip", "image-text"]
        + (["laion-pop"] if any(t["config"] == LAION_POP_CONFIG for t in tables(manifest)) else []),
        "configs": configs,
        "dataset_info": infos,
    }
    return meta


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _licence(identity: str) -> tuple[str, str]:
    digest = identity.partition("@sha256:")[2]
    known = KNOWN_PREDICTORS.get(digest)
    if known is None:
        return "unknown origin", "unknown: check the weights file's licence before publishing"
    return f"{known[1]} (`{known[0]}`)", known[2]


def safety_lines(manifest: Mapping[str, object]) -> list[str]:
    """The card's lines on where ``punsafe`` and ``pwatermark`` came from: LAION's values, our heads', or both."""
    columns = manifest["inputs"].get("safety_columns") or {}  # type: ignore[union-attr]
    lines = []
    for column, entry in sorted(columns.items()):
        said = {
            PROVIDED: "LAION's provided values only",
            COMPUTED: "computed by our head only",
            PROVIDED_ELSE_COMPUTED: "LAION's provided value where there is one, else computed by our head",
        }.get(str(entry.get("from")), str(entry.get("from")))
        head = f" (`{str(entry['head'])[:40]}…`)" if entry.get("head") else ""
        computed = int(entry.get("computed_rows", 0))
        lines.append(
            f"- `{column}`: {said}; {int(entry.get('provided_rows', 0)):,} rows provided by LAION, "
            f"{computed:,} computed{head if computed else ''}."
        )
    return lines


def usage(manifest: Mapping[str, object]) -> list[str]:
    """The card's usage lines: ``load_dataset`` on the Hub repo the release was pushed to, or on a placeholder."""
    name = default_config(loadable(manifest))
    if name is None:
        return ["Every subset of this release is empty, so there is no config to load."]
    repo = manifest.get("hub_repo")
    lines = ["```python", "from datasets import load_dataset", ""]
    lines.append(f'ds = load_dataset("{repo or REPO_PLACEHOLDER}", "{name}", split="train")')
    if repo:
        return [*lines, "```"]
    folder = f"path/to/releases/{manifest['version']}"
    lines += [f'ds = load_dataset("{folder}", "{name}", split="train")  # the release folder itself', "```"]
    return [
        *lines,
        "",
        f"Not pushed to the Hub yet: `{REPO_PLACEHOLDER}` stands for the dataset repo. Pushing the release "
        f"(`laion-assets push RELEASE_DIR --repo-id {REPO_PLACEHOLDER}`, or `hf_release`) writes the repo in.",
    ]


def render_card(manifest: dict, histogram: dict) -> str:
    """Render ``README.md`` (front matter + body) from a manifest (without its README entry) and the histogram."""
    header = yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True, width=1000)
    lines = ["---", header.rstrip("\n"), "---", "", f"# {manifest['name']} {manifest['version']}", ""]
    lines += [
        "LAION-Aesthetics subsets rebuilt with laion-assets from stored CLIP ViT-L/14 "
        "embeddings. Every file's sha256 is in `manifest.json`; `laion-assets verify RELEASE_DIR` rebuilds the "
        "release from the inputs recorded there and names any file that differs.",
        "",
        "## Subsets",
        "",
    ]
    rows = []
    for subset in manifest["subsets"]:
        name = subset["name"]
        files = subset_files(manifest, name)
        funnel = subset.get("funnel", {})
        rows.append(
            [
                f"`{config_name(subset)}`",
                f"`{subset_path(name)}/`",
                subset["rule"],
                f"{sum(e['rows'] for e in files.values()):,}",
                f"{funnel.get('dropped_by_language', 0):,}",
                f"{funnel.get('dropped_without_url', 0):,}",
                ", ".join(f"`{e['sha256'][:16]}…`" for e in files.values()),
            ]
        )
    lines += _table(
        ["config", "folder", "filter rule", "rows", "dropped by language", "dropped without URL", "sha256"], rows
    )
    subsets = manifest["subsets"]
    empty = [f"`{config_name(s)}`" for s in subsets if not released_rows(manifest, s)]
    if empty:
        lines += [
            "",
            f"No rows met the rule of {', '.join(empty)}: their files are in the release, but they have no config in "
            "the header, as `datasets` cannot load a split whose files hold no rows.",
        ]
    if any(subset.get("funnel") for subset in subsets):
        lines += ["", "Rows meeting each score threshold, and which filter dropped the others:", ""]
        keys = [
            "candidates", "dropped_by_language", "dropped_without_url", "dropped_without_safety_tags",
            "dropped_unsafe_or_watermarked", "dropped_duplicate_hash",
        ]  # fmt: skip
        lines += _table(
            ["config", *(k.replace("_", " ") for k in keys)],
            [[f"`{config_name(s)}`", *(f"{s.get('funnel', {}).get(k, 0):,}" for k in keys)] for s in subsets],
        )
    lines += ["", *usage(manifest)]
    for table in manifest.get("tables") or []:
        lines += ["", *table_lines(manifest, table)]
    lines += [
        "",
        "## Score histograms",
        "",
        "Rows of the aesthetic-tags table per integer score bucket (a score s counts in `clip(floor(s), 0, 9)`).",
        "",
    ]
    counts = histogram["counts"]
    columns = sorted(counts)
    lines += _table(["bucket", *[f"`{c}`" for c in columns]], [[b, *[counts[c][b] for c in columns]] for b in LABELS])
    lines.append("")
    for column in columns:
        total = sum(counts[column].values())
        lines.append(f"- `{column}` ({total:,} rows), as LAION printed it: `{histogram['laion'][column]}`")
    lines += ["", "## Filter rules", ""]
    thresholds = manifest["thresholds"]
    lines += [
        f"- V2 subsets (`AESTHETIC_SCORE`, improved aesthetic predictor): English rows (`LANGUAGE == "
        f'"{thresholds["language"]}"`; a source without a language column takes its declared language, here '
        f"`{manifest['inputs'].get('language') or 'none'}`, and a null LANGUAGE counts as unknown, not English) "
        "with `AESTHETIC_SCORE >= t`.",
        f"- V1 subsets (`aesthetic`, LAION aesthetic predictor V1): `punsafe < {thresholds['punsafe_max']}` and "
        f"`pwatermark < {thresholds['pwatermark_max']}`, one row per `hash` (the first), then `aesthetic > t`.",
        *safety_lines(manifest),
        "- Every subset leaves out rows with a null or blank URL (img2dataset cannot fetch them); a null caption "
        'hashes as "" (as LAION did) and is kept.',
        "- KV files: `kv/aesthetic.kv` (`<qe`: hash, V1 score) and `kv/safety.kv` (`<qee`: hash, punsafe, "
        "pwatermark), records sorted by signed int64 hash, no header, nulls dropped, first row per hash.",
        "",
        "## Predictors and licences",
        "",
    ]
    rows = []
    for column, info in sorted(manifest["predictors"].items()):
        origin, licence = _licence(info["identity"])
        if str(info.get("file", "")).startswith("random"):  # a demo's or test's seeded random head
            origin, licence = f"seeded random weights (`{info['file']}`): its values mean nothing", "n/a"
        rows.append([f"`{column}`", f"`{info['identity'][:40]}…`", origin, licence])
    lines += _table(["score column", "identity (kind@sha256 of the tensors)", "origin", "licence"], rows)
    for column, info in sorted(manifest["predictors"].items()):
        if info.get("forced"):
            why = "; ".join(info.get("misfit", [])) or "it does not fit the column"
            lines += [
                "",
                f"> **Warning: `{column}` was scored by a forced predictor** (`{info['file']}`): {why}. The "
                f"configuration forced it; these `{column}` values are not what LAION's predictor for that column "
                "gives, and the subsets filtered on them differ from LAION's.",
            ]
    lines += [
        "",
        f"Data licence: {DATA_LICENSE} (LAION's metadata). Images stay with their owners: only URLs are listed.",
        "",
        "## Changelog",
        "",
    ]
    changelog = manifest["changelog"]
    if changelog["previous"] is None:
        lines.append("First release: no previous release to compare with.")
    else:
        lines.append(f"Compared with {changelog['previous']} (rows matched by `hash`):")
        lines.append("")
        for column, change in sorted(changelog.get("predictors", {}).items()):
            lines.append(f"- `{column}` re-scored: `{change['before']}` -> `{change['after']}`")
        for name, change in sorted(changelog.get("inputs", {}).items()):
            lines.append(f"- inputs, {name.replace('_', ' ')}: `{json.dumps(change, sort_keys=True)}`")
        if changelog.get("predictors") or changelog.get("inputs"):
            lines.append("")
        rows = [
            [f"`{name}`", c["rows_before"], c["rows_after"], f"+{c['added']}", f"-{c['removed']}"]
            for name, c in sorted(changelog["subsets"].items())
        ]
        lines += _table(["config", "rows before", "rows after", "added", "removed"], rows)
        for config, c in sorted(changelog.get("tables", {}).items()):
            settings = "; its settings changed" if c["settings_changed"] else ""
            lines += [
                "",
                f"- table `{config}`: {c['rows_before']:,} -> {c['rows_after']:,} rows, +{c['added']:,} "
                f"-{c['removed']:,} by `hash`{settings}.",
            ]
    inputs = manifest["inputs"]
    excluded = inputs.get("excluded_shards") or []
    lines += [
        "",
        "## Provenance",
        "",
        f"- Source: `{inputs['source'] or '(outside the project folder)'}`, {len(inputs['parts'])} part(s), "
        f"{sum(p['rows'] for p in inputs['parts']):,} rows; part hashes in `manifest.json`.",
        f"- Declared language of the source: `{inputs.get('language') or 'none'}`.",
        (
            f"- **Shards left out of this release by configuration**: {', '.join(f'`{k}`' for k in excluded)}."
            if excluded
            else "- Every registered shard is in this release."
        ),
        f"- Code: laion-assets {manifest['code']['package']}, commit `{manifest['code']['git_commit']}`.",
        "",
    ]
    return "\n".join(lines)


def _code(value: object) -> str:
    """``value`` as an inline code span that holds any backticks it contains (CommonMark)."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _block(text: str) -> list[str]:
    """``text`` as a fenced code block, its fence longer than any backtick run inside."""
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return [fence, *text.split("\n"), fence]


def _settings_list(settings: Mapping[str, object]) -> list[str]:
    return [
        f"  - `{key}`: {_code(json.dumps(value, sort_keys=True, ensure_ascii=False))}"
        for key, value in settings.items()
    ]


def table_lines(manifest: Mapping[str, object], table: Mapping[str, object]) -> list[str]:
    """The card's section on one table: LAION-POP's recipe, caption model, prompt and columns; others' settings."""
    config, path = str(table["config"]), str(table["path"])
    settings: dict = dict(table["settings"])  # type: ignore[call-overload]
    parts = table_parquet(manifest, table)
    rows = int(table["rows"])
    repo = manifest.get("hub_repo") or REPO_PLACEHOLDER
    where = (
        f"`{path}/` ({len(parts)} part(s), {rows:,} rows; `{path}/{SETTINGS}` records how it was made), config "
        f"`{config}`"
    )
    load = (
        ["```python", f'ds = load_dataset("{repo}", "{config}", split="train")', "```"]
        if rows
        else ["It holds no rows, so it has no config in the header."]
    )
    features = next(iter(parts.values()))["features"] if parts else []
    if config != LAION_POP_CONFIG:
        lines = [f"## {config}", "", f"A finished table released as it was built: {where}.", "", *load, ""]
        lines += ["Settings:", "", *_settings_list(settings), ""]
        return lines + _table(["column", "dtype"], [[f"`{f['name']}`", f["dtype"]] for f in features])
    selection = settings.get("selection") or {}
    concepts = settings.get("concepts") or {}
    centroids = settings.get("centroids") or {}
    captions = settings.get("captions") or {}
    lines = [
        "## LAION-POP",
        "",
        f"LAION-POP, after LAION's dataset of that name (`{HUB_LAION_POP}` on the Hub): rows selected near the "
        "centroids of a collection of popular concepts and by the filters below, each with a caption a "
        f"vision-language model wrote for its image. It is in {where}. Built by laion-assets, not copied from LAION; "
        "`laion-assets verify` checks its files (sha256, rows) but cannot rebuild its captions.",
        "",
        *load,
        "",
        "How it was made:",
        "",
        f"- Concepts: {int(concepts.get('rows', 0)):,} rows from {_code(concepts.get('source', 'unknown'))}, "
        f"clustered into {int(centroids.get('k', 0)):,} centroids (k-means, seed {centroids.get('seed')}, inertia "
        f"{centroids.get('inertia')}).",
        "- Selection recipe:",
        *_settings_list(selection),
        f"- Captions: {_code(captions.get('model', 'unknown'))}, at most {captions.get('max_new_tokens')} new "
        f"tokens; a caption starting with the trimmed prefix {_code(captions.get('trim_prefix', ''))} loses it. "
        "The prompt:",
        "",
        *_block(str(captions.get("prompt", ""))),
    ]
    known = {"format", "rows", "selection", "concepts", "centroids", "captions"}
    other = {k: v for k, v in settings.items() if k not in known}
    if other:
        lines += ["", "Other settings:", "", *_settings_list(other)]
    said = {
        HUB: f"`{HUB_LAION_POP}`",
        GUESS: f"`{HUB_LAION_POP}` (best guess: its card is disabled)",
        OURS: "ours",
    }
    lines += [
        "",
        f"Columns. Those marked `{HUB_LAION_POP}` have the names public loaders of LAION's dataset use (its Hub card "
        "is disabled); the others are ours.",
        "",
    ]
    columns = []
    for feature in features:
        meaning, origin = LAION_POP_COLUMNS.get(str(feature["name"]), ("", OURS))
        columns.append([f"`{feature['name']}`", feature["dtype"], meaning, said[origin]])
    return lines + _table(["column", "dtype", "meaning", "name as in"], columns)


def parse_front_matter(text: str) -> dict:
    """Parse the YAML header of a card (between the first two ``---`` lines)."""
    if not text.startswith("---\n"):
        raise ValueError("the card does not start with a '---' YAML block")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])
