from laion_assets.core.hints import DEMO_HINT, build_hint, missing_kv_hint, missing_source_hint
from laion_assets.core.paths import DEFAULT_DATA_ROOT, DEFAULT_SOURCE


def test_make_demo_only_for_the_shipped_sample_in_data_out():
    assert build_hint("data/sample", "data/out") == DEMO_HINT
    assert build_hint(str(DEFAULT_SOURCE), str(DEFAULT_DATA_ROOT)) == DEMO_HINT


def test_a_custom_setup_gets_its_own_command():
    hint = build_hint("/laion/embeddings", "/big disk/out")
    assert "make demo" not in hint
    assert "`laion-assets demo --source /laion/embeddings --data-root '/big disk/out'`" in hint
    remote = build_hint("s3://bucket/laion2B-en", "data/out")
    assert "--source s3://bucket/laion2B-en --data-root data/out" in remote
    urls = build_hint("data/sample", "data/out", urls="/laion/url-shards")
    assert "make demo" not in urls and "images,image_embeddings,clip_embeddings,aesthetic_scores" in urls


def test_a_missing_source_gets_make_demo_only_when_it_is_the_projects_sample():
    for default in ("data/sample", str(DEFAULT_SOURCE)):
        assert "make demo" in missing_source_hint(default)
    for other in ("/tmp/nonexistent", "data/other", "s3://bucket/laion2B-en"):
        hint = missing_source_hint(other)
        assert "make demo" not in hint
        assert "--source DIR" in hint and "LAION_ASSETS_SOURCE" in hint and "`source` config" in hint


def test_a_missing_kv_file_is_built_by_aesthetic_kv_in_this_setup():
    assert missing_kv_hint("aesthetic.kv", "data/sample", "data/out").endswith(DEMO_HINT)
    hint = missing_kv_hint("safety.kv", "data/sample", "/big/out")
    assert "`aesthetic_kv` asset writes kv/safety.kv" in hint and "--data-root /big/out" in hint
    assert "make demo" not in hint
