"""The six ``improved_aesthetics`` subsets (V2) plus ``laion_aesthetic`` and ``laion_art`` (V1), with checks."""

from collections.abc import Sequence

import dagster as dg
import polars as pl
from pydantic import Field

from laion_assets.defs.errors import as_failure
from laion_assets.defs.metadata import OWNERS, V1_RANGE, asset_tags, preview_table, rounded, table_metadata
from laion_assets.defs.resources import StorageResource
from laion_assets.defs.selection.tags import aesthetic_tags
from laion_assets.selection.audit import audit_subset
from laion_assets.selection.schemas import V1_SUBSET_COLUMNS, V2_SUBSET_COLUMNS, schema_mismatches
from laion_assets.selection.subsets import (
    SUBSET_PART_ROWS,
    rule_funnel,
    rule_violations,
    subset_files,
    subset_rows,
    top_rows,
    write_rule,
)
from laion_assets.selection.tags import tag_files
from laion_assets.selection.thresholds import V1_SUBSETS, V2_SUBSETS, V1Subset, V2Subset

TOP_ROWS = 10


class SubsetConfig(dg.Config):
    """How a subset is split into parquet parts."""

    part_rows: int = Field(
        default=SUBSET_PART_ROWS,
        gt=0,
        description="rows per parquet part at most (part-00000.parquet, part-00001.parquet, ... in row order); "
        "about 70 bytes a row compressed, so the default makes parts of a few hundred MB",
    )


def _rule_text(rule: V1Subset | V2Subset) -> str:
    if isinstance(rule, V2Subset):
        return f"English rows with a URL and AESTHETIC_SCORE >= {rule.threshold:g} (LAION's {rule.hub_name})"
    return f"rows with punsafe < 0.5, pwatermark < 0.8 and a URL, one per hash, aesthetic > {rule.threshold:g}"


def _description(rule: V1Subset | V2Subset) -> str:
    if isinstance(rule, V2Subset):
        return f"{_rule_text(rule)}."
    return f"{_rule_text(rule)}. {V1_RANGE}"


def _subset_asset(rule: V1Subset | V2Subset) -> dg.AssetsDefinition:
    score = "AESTHETIC_SCORE" if isinstance(rule, V2Subset) else "aesthetic"

    @dg.asset(
        name=rule.asset_name,
        deps=[aesthetic_tags],
        group_name="subsets",
        kinds={"parquet"},
        owners=OWNERS,
        tags=asset_tags("selection", "subset", predictor="v2" if isinstance(rule, V2Subset) else "v1"),
        code_version="1",
        description=_description(rule),
        metadata={"threshold": rule.threshold, "score_column": score},
    )
    def _subset(
        context: dg.AssetExecutionContext, config: SubsetConfig, storage: StorageResource
    ) -> dg.MaterializeResult:
        layout = storage.layout
        with as_failure(rule.asset_name):
            storage.pull(layout.tags_dir)
            files = tag_files(layout)
            parts = write_rule(files, rule, layout.subset_dir(rule.asset_name), config.part_rows)
            storage.push(layout.subset_dir(rule.asset_name))
        rows = subset_rows(parts)
        funnel = rule_funnel(files, rule, rows)
        stats = (
            pl.scan_parquet(parts)
            .select(
                pl.col(score).min().alias("min"), pl.col(score).mean().alias("mean"), pl.col(score).max().alias("max")
            )
            .collect()
        )
        top = top_rows(parts, score, TOP_ROWS).select("URL", "TEXT", score)
        context.log.info(f"{rule.asset_name}: {rows} rows; " + ", ".join(f"{k} {v}" for k, v in funnel.items()))
        return dg.MaterializeResult(
            metadata=rounded(
                {
                    "dagster/row_count": rows,
                    "rule": _rule_text(rule),
                    **{f"rows_{k}" if k == "candidates" else k: v for k, v in funnel.items()},
                    **{
                        f"{score}/{k}": (None if stats[k].item() is None else float(stats[k].item()))
                        for k in stats.columns
                    },
                    "path": dg.MetadataValue.path(str(layout.subset_dir(rule.asset_name))),
                    "parts": len(parts),
                    **table_metadata(parts[0]),
                    "top_rows": preview_table(top),
                }
            )
        )

    return _subset


def _checks(rule: V1Subset | V2Subset, asset: dg.AssetsDefinition) -> list[dg.AssetChecksDefinition]:
    expected = V2_SUBSET_COLUMNS if isinstance(rule, V2Subset) else V1_SUBSET_COLUMNS

    @dg.asset_check(
        asset=asset,
        name="meets_rule",
        blocking=True,
        description=f"Soundness: every row meets the rule: {_rule_text(rule)}.",
    )
    def _meets_rule(storage: StorageResource) -> dg.AssetCheckResult:
        storage.pull(storage.layout.subset_dir(rule.asset_name))
        with as_failure(f"{rule.asset_name} meets_rule"):
            bad = rule_violations(subset_files(storage.layout.subset_dir(rule.asset_name)), rule)
        return dg.AssetCheckResult(passed=bad == 0, metadata={"violating_rows": bad})

    @dg.asset_check(
        asset=asset,
        name="complete",
        blocking=True,
        additional_deps=[aesthetic_tags],
        description="Completeness: the subset's row count and (hash, score) rows equal an independent recount over "
        "aesthetic_tags (a polars query, not the writer's code); an empty subset fails while rows meet its "
        "score threshold.",
    )
    def _complete(storage: StorageResource) -> dg.AssetCheckResult:
        layout = storage.layout
        storage.pull(layout.tags_dir, layout.subset_dir(rule.asset_name))
        with as_failure(f"{rule.asset_name} complete"):
            files = tag_files(layout)
            parts = subset_files(layout.require(layout.subset_dir(rule.asset_name), rule.asset_name))
            result = audit_subset(rule.asset_name, files, parts, rule, rule_funnel(files, rule, subset_rows(parts)))
        return dg.AssetCheckResult(
            passed=result.passed,
            description=" | ".join(result.problems)[:3000] or None,
            metadata=result.metadata(),
        )

    @dg.asset_check(
        asset=asset, name="schema_matches", blocking=True, description="Columns, order and types are LAION's."
    )
    def _schema(storage: StorageResource) -> dg.AssetCheckResult:
        storage.pull(storage.layout.subset_dir(rule.asset_name))
        with as_failure(f"{rule.asset_name} schema_matches"):
            parts = subset_files(storage.layout.subset_dir(rule.asset_name))
        # Every part carries the schema: a part written otherwise is named.
        problems = [
            f"{path.name}: {problem}"
            for path in parts
            for problem in schema_mismatches(pl.read_parquet_schema(path), expected)
        ]
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    return [_meets_rule, _complete, _schema]


V2_SUBSET_ASSETS = [_subset_asset(rule) for rule in V2_SUBSETS]
V1_SUBSET_ASSETS = [_subset_asset(rule) for rule in V1_SUBSETS]
SUBSET_ASSETS = V2_SUBSET_ASSETS + V1_SUBSET_ASSETS
SUBSET_CHECKS = [
    check for rule, asset in zip(V2_SUBSETS + V1_SUBSETS, SUBSET_ASSETS, strict=True) for check in _checks(rule, asset)
]


def nesting_problems(storage: StorageResource, names: Sequence[str]) -> dict[str, int]:
    """For each consecutive pair (looser, stricter), count hashes of the stricter subset missing from the looser."""
    layout = storage.layout
    missing: dict[str, int] = {}
    storage.pull(*(layout.subset_dir(name) for name in names))
    for looser, stricter in zip(names, names[1:], strict=False):
        outer = pl.scan_parquet(subset_files(layout.require(layout.subset_dir(looser), looser))).select("hash")
        inner = pl.scan_parquet(subset_files(layout.require(layout.subset_dir(stricter), stricter))).select("hash")
        # Count rows (not distinct hashes) so a duplicated row in the stricter subset also shows.
        n = inner.join(outer.unique(), on="hash", how="anti").select(pl.len()).collect().item()
        missing[f"{stricter} ⊄ {looser}"] = int(n)
    return missing


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "subsets_nested",
            asset=V2_SUBSET_ASSETS[-1].key,
            blocking=True,
            additional_deps=[a.key for a in SUBSET_ASSETS if a.key != V2_SUBSET_ASSETS[-1].key],
        ),
    ],
    description="improved_aesthetics_4.5plus ⊇ … ⊇ 6.5plus and laion_aesthetic ⊇ laion_art, row for row.",
)
def subsets_nested(storage: StorageResource):  # noqa: ANN201 - generator of check results
    """Check that each stricter subset is contained in the looser one."""
    with as_failure("subsets_nested"):
        problems = nesting_problems(storage, [r.asset_name for r in V2_SUBSETS])
        problems.update(nesting_problems(storage, [r.asset_name for r in V1_SUBSETS]))
    yield dg.AssetCheckResult(
        check_name="subsets_nested",
        asset_key=V2_SUBSET_ASSETS[-1].key,
        passed=not any(problems.values()),
        metadata={"rows_missing_from_looser": dg.MetadataValue.json(problems)},
    )
