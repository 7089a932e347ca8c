"""What the UI shows: rounded floats, column schemas and previews of written parquet, owners and tags on every asset."""

import math

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from laion_assets.definitions import defs
from laion_assets.defs.metadata import (
    OWNERS,
    PREVIEW_CHARS,
    PREVIEW_ROWS,
    STAGES,
    V1_RANGE,
    round_float,
    rounded,
    table_metadata,
)


def test_round_float_keeps_four_decimals_or_four_significant_digits():
    assert round_float(0.1 + 0.2) == 0.3 and repr(round_float(0.1 + 0.2)) == "0.3"
    assert round_float(6.532143) == 6.5321
    assert round_float(-1.234567) == -1.2346
    assert round_float(0.000123456) == 0.0001235  # an MSE keeps its digits instead of becoming 0
    assert round_float(0.99999994) == 1.0
    assert round_float(0.0) == 0.0 and round_float(float("inf")) == float("inf")
    assert math.isnan(round_float(float("nan")))


def test_rounded_reaches_plain_float_and_json_values_and_leaves_the_rest():
    out = rounded(
        {
            "plain": 0.1 + 0.2,
            "numpy": np.float32(0.3),  # 0.30000001192092896 as a Python float
            "float_value": dg.MetadataValue.float(2 / 3),
            "json": dg.MetadataValue.json({"a": [1 / 3, {"b": 2.0000001}], "n": 7, "flag": True}),
            "int": 12345678901,
            "flag": True,
            "text": "0.30000000000000004",
        }
    )
    assert out["plain"] == 0.3 and out["numpy"] == 0.3 and type(out["numpy"]) is float
    assert out["float_value"].value == 0.6667
    assert out["json"].data == {"a": [0.3333, {"b": 2.0}], "n": 7, "flag": True}
    assert out["int"] == 12345678901 and out["flag"] is True and out["text"] == "0.30000000000000004"


def test_table_metadata_reads_the_footer_and_the_first_rows(tmp_path):
    path = tmp_path / "t.parquet"
    rows = 20
    table = pa.table(
        {
            "URL": [f"https://example.com/{'x' * 200}/{i}.jpg" for i in range(rows)],
            "hash": pa.array([2**62 + i if i % 2 else i for i in range(rows)], pa.int64()),
            "aesthetic": pa.array([i / 3 for i in range(rows)], pa.float32()),
            "WIDTH": pa.array([float(i) for i in range(rows)], pa.float64()),
        }
    )
    # Several row groups: the preview must still come from the first rows.
    pq.write_table(table, path, row_group_size=4)
    meta = table_metadata(path)
    schema = meta["dagster/column_schema"]
    assert [(c.name, c.type) for c in schema.columns] == [
        ("URL", "String"),
        ("hash", "Int64"),
        ("aesthetic", "Float32"),
        ("WIDTH", "Float64"),
    ]
    assert schema.columns[1].description.startswith("LAION's hash")
    preview = meta["preview"]
    assert [c.name for c in preview.schema.columns] == ["URL", "hash", "aesthetic", "WIDTH"]
    assert len(preview.records) == PREVIEW_ROWS
    first = pl.read_parquet(path).head(PREVIEW_ROWS)
    for record, row in zip(preview.records, first.iter_rows(named=True), strict=True):
        assert len(record.data["URL"]) == PREVIEW_CHARS and record.data["URL"].endswith("…")
        assert row["URL"].startswith(record.data["URL"][:-1])
        # Past 2**53 the JavaScript UI would show another number: such hashes show as text.
        assert record.data["hash"] == (str(row["hash"]) if row["hash"] > 2**53 else row["hash"])
        assert record.data["aesthetic"] == round_float(row["aesthetic"])
        assert record.data["WIDTH"] == row["WIDTH"]


def test_every_asset_has_the_owner_and_the_tags_of_its_stage():
    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) == 28
    for asset in defs.assets:
        # The stage tag names the defs/<stage>/ package that wires the asset.
        stage = asset.op.compute_fn.decorated_fn.__module__.split(".")[2]
        assert stage in STAGES
        for spec in asset.specs:
            assert list(spec.owners) == OWNERS, spec.key
            assert spec.tags["stage"] == stage, spec.key
            assert spec.tags["data"], spec.key


def test_v1_range_and_the_predictor_path_are_explained():
    descriptions = {spec.key.to_user_string(): spec.description for spec in defs.resolve_all_asset_specs()}
    assert "below 0 and above 10 are normal" in V1_RANGE and "V1 > 7" in V1_RANGE and "V1 > 8" in V1_RANGE
    for name in ("aesthetic_scores", "aesthetic_tags", "laion_aesthetic", "laion_art", "score_histogram"):
        assert V1_RANGE in descriptions[name], name
    trained = descriptions["aesthetic_predictor_trained"]
    assert "laion-assets activate AESTHETIC_SCORE" in trained and "`rescore` job" in trained
