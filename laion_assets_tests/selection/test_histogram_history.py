from laion_assets.selection.histogram import LABELS
from laion_assets.selection.histogram_history import changed_columns, previous_for, read_document

OLD = {"aesthetic": "v1-linear@sha256:" + "a" * 64, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "b" * 64}
NEW = {**OLD, "AESTHETIC_SCORE": "v2-mlp-linear@sha256:" + "c" * 64}
COUNTS = {"aesthetic": dict.fromkeys(LABELS, 1), "AESTHETIC_SCORE": dict.fromkeys(LABELS, 2)}


def test_previous_is_kept_across_rebuilds_until_the_next_change():
    first = {"counts": COUNTS, "identities": OLD, "previous": None}
    assert previous_for(first, OLD) is None  # same predictors: nothing to compare
    kept = previous_for(first, NEW)
    assert kept == {"identities": OLD, "counts": COUNTS}
    assert changed_columns(kept, NEW) == ["AESTHETIC_SCORE"]
    rebuilt = {"counts": COUNTS, "identities": NEW, "previous": kept}
    assert previous_for(rebuilt, NEW) == kept  # a rebuild with the same predictors keeps the before
    assert previous_for({}, NEW) is None


def test_an_absent_history_reads_as_empty(tmp_path):
    assert read_document(tmp_path / "absent.json") == {}
