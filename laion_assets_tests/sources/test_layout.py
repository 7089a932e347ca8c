import pytest

from laion_assets.core.errors import BadInputError, MissingUpstreamError
from laion_assets.sources.layout import discover_parts, find_part, part_key


def touch_part(root, emb_name, meta_name):
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    if emb_name:
        (root / "img_emb" / emb_name).write_bytes(b"")
    if meta_name:
        (root / "metadata" / meta_name).write_bytes(b"")


def test_parts_pair_by_number_not_position(tmp_path):
    # Padding differs between the two folders and numbering has gaps; sort order alone would mis-pair 10 and 2.
    touch_part(tmp_path, "img_emb_0002.npy", "metadata_2.parquet")
    touch_part(tmp_path, "img_emb_0010.npy", "metadata_10.parquet")
    touch_part(tmp_path, "img_emb_0000.npy", "metadata_0000.parquet")
    parts = discover_parts(tmp_path)
    assert [p.number for p in parts] == [0, 2, 10]
    assert [(p.embeddings.name, p.metadata.name) for p in parts] == [
        ("img_emb_0000.npy", "metadata_0000.parquet"),
        ("img_emb_0002.npy", "metadata_2.parquet"),
        ("img_emb_0010.npy", "metadata_10.parquet"),
    ]
    assert [p.key for p in parts] == ["00000", "00002", "00010"]
    assert find_part(tmp_path, "00010").number == 10


def test_unpaired_file_is_named(tmp_path):
    touch_part(tmp_path, "img_emb_0.npy", "metadata_0.parquet")
    touch_part(tmp_path, "img_emb_1.npy", None)
    with pytest.raises(BadInputError, match=r"img_emb_1\.npy: unpaired part 1: no metadata/metadata_1"):
        discover_parts(tmp_path)


def test_orphan_metadata_is_named(tmp_path):
    touch_part(tmp_path, None, "metadata_3.parquet")
    with pytest.raises(BadInputError, match=r"metadata_3\.parquet: unpaired part 3"):
        discover_parts(tmp_path)


def test_same_number_twice_is_an_error(tmp_path):
    touch_part(tmp_path, "img_emb_1.npy", "metadata_1.parquet")
    touch_part(tmp_path, "img_emb_01.npy", None)
    with pytest.raises(BadInputError, match="part 1 also stored as"):
        discover_parts(tmp_path)


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(MissingUpstreamError, match="embeddings folder not found") as info:
        discover_parts(tmp_path / "nope")
    # Not the project's sample: the folder and the ways to set the source, not `make demo`.
    assert str(info.value).startswith(f"{tmp_path / 'nope'}: ") and "make demo" not in str(info.value)
    assert "LAION_ASSETS_SOURCE" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no img_emb"):
        discover_parts(tmp_path / "empty")
    touch_part(tmp_path, "img_emb_0.npy", "metadata_0.parquet")
    with pytest.raises(MissingUpstreamError, match="no part with key '00007'"):
        find_part(tmp_path, "00007")


def test_part_key_is_sortable():
    assert part_key(3) == "00003" and part_key(123456) == "123456"
