"""``make demo``: build the sample if needed, register its shards and materialize the whole graph.

Runs go to the Dagster instance (``--dagster-home``, else ``$DAGSTER_HOME``, else ``.dagster/`` in the project),
so ``dagster dev`` shows them afterwards, as runs of the code location's named jobs (``shard_job`` per shard, then
``release_job``, then ``pop_job`` for LAION-POP's selection on concepts planted near the sample's embeddings).
Usage: ``laion-assets demo [--source DIR] [--data-root DIR] [--safety
DIR] [--dagster-home DIR]`` (or ``python -m laion_assets.demos.local``); see ``laion_assets/core/settings.py``.
"""

import argparse
import time

import dagster as dg

from laion_assets.core.errors import BadInputError
from laion_assets.core.locations import is_local
from laion_assets.core.settings import (
    DAGSTER_HOME,
    DATA_ROOT,
    PRECEDENCE,
    SAFETY,
    SOURCE,
    Setting,
    add_flags,
    resolve_setting,
    use_instance,
)
from laion_assets.definitions import (
    HfResource,
    PopResource,
    PredictorsResource,
    ReleaseResource,
    StorageResource,
    build_defs,
    pop_job,
    register_shards,
    release_job,
    shard_job,
    source_keys,
)
from laion_assets.demos.pop_concepts import write_planted_concepts
from laion_assets.demos.sample import SampleSpec, write_sample

# The shard steps of stored embeddings; URL sources run the whole shard_job (download and embed first).
SHARD_SELECTION = ["clip_embeddings", "aesthetic_scores"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_graph(
    instance: dg.DagsterInstance,
    storage: StorageResource,
    predictors: PredictorsResource,
    url_resources: dict[str, dg.ConfigurableResource] | None = None,
) -> dict:
    """Register the source's shards, run ``shard_job`` on every shard, then ``release_job``, with these resources.

    The runs are the code location's named jobs, so the UI lists them as such. With ``storage.urls`` set, each
    shard is first downloaded and embedded (``images``, ``image_embeddings``) with ``url_resources``
    (``downloader`` and ``clip``). Pushing to the Hub (``publish_job``) needs a repo and a token: it is never run.
    """
    register_shards(instance, storage.shard_source)
    keys = sorted(instance.get_dynamic_partitions("shards"))
    foreign = sorted(set(keys) - set(source_keys(storage.shard_source)))
    if foreign:
        raise SystemExit(
            f"the instance registers shards this source ({storage.shard_source}) does not have: "
            f"{', '.join(foreign[:10])}{' …' if len(foreign) > 10 else ''} (registered from another source?); use "
            "another instance (--dagster-home / DAGSTER_HOME) and data root (--data-root / LAION_ASSETS_DATA_ROOT) "
            "for this source"
        )
    resources = {"storage": storage, "predictors": predictors, "release_config": ReleaseResource(), "hf": HfResource()}
    selection = SHARD_SELECTION
    if storage.url_mode:
        selection = ["images", "image_embeddings", *SHARD_SELECTION]
        resources.update(url_resources or {})
    graph = build_defs(resources)  # the code location's jobs, run with these resources
    shards = graph.resolve_job_def(shard_job.name)
    for i, key in enumerate(keys, 1):
        print(f"[{i}/{len(keys)}] shard {key}: {', '.join(selection)}", flush=True)
        result = shards.execute_in_process(
            run_config=QUIET,
            instance=instance,
            partition_key=key,
            raise_on_error=False,
            asset_selection=[dg.AssetKey(name) for name in selection],
        )
        _stop_on_failure(result, f"shard {key}")
    print("release-level assets: tags, subsets, buckets, histogram, KV, galleries, kNN index, release", flush=True)
    result = graph.resolve_job_def(release_job.name).execute_in_process(
        run_config=QUIET, instance=instance, raise_on_error=False
    )
    _stop_on_failure(result, "release-level assets")
    return _counts(result)


POP_SELECTION = ["pop_concepts", "pop_centroids", "laion_pop"]
# The sample's URLs are LAION's own, out of reach offline: its demo stops LAION-POP after the selection.
SAMPLE_POP = (
    "LAION-POP on the sample: concepts planted near 16 of its embeddings, 16 centroids, laion_pop; pop_images and "
    "pop_captions fetch the sample's URLs from the internet, so the demo leaves them to `make demo-urls`"
)


def run_pop(
    instance: dg.DagsterInstance,
    storage: StorageResource,
    resources: dict[str, dg.ConfigurableResource],
    selection: list[str] | None = None,
) -> dict:
    """Run ``pop_job`` (concepts, centroids, laion_pop, images, captions, or only ``selection``), then, for the whole
    job, ``release`` again with the LAION-POP table as its ``laion_pop`` config (a new version when it changes)."""
    graph = build_defs({"storage": storage, "release_config": ReleaseResource(laion_pop=True), **resources})
    print(f"LAION-POP: {', '.join(selection or [*POP_SELECTION, 'pop_images', 'pop_captions'])}", flush=True)
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    result = graph.resolve_job_def(pop_job.name).execute_in_process(
        run_config=QUIET, instance=instance, raise_on_error=False, asset_selection=keys
    )
    _stop_on_failure(result, "LAION-POP assets")
    counts = _counts(result)
    if selection:
        return counts
    print("release with the laion_pop config", flush=True)
    result = graph.resolve_job_def(release_job.name).execute_in_process(
        run_config=QUIET, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("release")]
    )
    _stop_on_failure(result, "release with laion_pop")
    return counts | _counts(result)


def run_sample_pop(instance: dg.DagsterInstance, storage: StorageResource) -> dict:
    """LAION-POP's selection on the stored sample: concepts planted near its embeddings, k-means, laion_pop."""
    print(SAMPLE_POP, flush=True)
    concepts = storage.layout.root / "demo-concepts"
    write_planted_concepts(storage.parts_source, concepts, clusters=16)
    pop = PopResource(concepts=str(concepts), k=16, nredo=3, neighbours=50, check_centroids=16)
    return run_pop(instance, storage, {"pop": pop, "predictors": PredictorsResource()}, POP_SELECTION)


def _counts(result: dg.ExecuteInProcessResult) -> dict:
    """Rows per materialized asset of a run (and the release's version, printed)."""
    counts = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        rows = mat.metadata.get("dagster/row_count")
        counts[mat.asset_key.to_user_string()] = rows.value if rows is not None else None
        if mat.asset_key.to_user_string() == "release":
            version, unchanged = mat.metadata["version"].value, mat.metadata["unchanged"].value
            note = "unchanged: it already held exactly these contents" if unchanged else "written"
            print(f"release {version} ({note}) in {mat.metadata['path'].value}", flush=True)
    return counts


def _root_message(error: object) -> str:
    """The innermost cause's message ("Error occurred while executing op" wraps the one that says what failed)."""
    while getattr(error, "cause", None) is not None and getattr(error, "cls_name", "").startswith("DagsterExecution"):
        error = error.cause  # type: ignore[attr-defined]
    return getattr(error, "message", "").strip()


def _stop_on_failure(result: dg.ExecuteInProcessResult, what: str) -> None:
    """Exit with every failed check and step, one per line, when a run did not succeed."""
    failed = [
        f"check {e.asset_key.to_user_string()}:{e.check_name}" + (f": {e.description}" if e.description else "")
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    errors = [
        f"step {e.step_key}: {_root_message(e.step_failure_data.error)}"
        for e in result.all_events
        if e.is_step_failure
        and not (e.step_failure_data.error and e.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError")
    ]
    if failed or not result.success:
        raise SystemExit(f"{what} failed:\n  " + "\n  ".join(failed + errors))


def run_demo(source: Setting, data_root: Setting, safety: Setting, dagster_home: Setting) -> dict:
    """Build the shipped sample on first use, then run the whole graph in the instance.

    Only the default source (``data/sample``) is built when missing: a source given by flag or environment that does
    not exist is a typo or an unmounted disk, and filling it with made-up rows would release them as that source.
    """
    start = time.perf_counter()
    use_instance(dagster_home)  # first: a wrong instance folder is refused before any work
    folder = source.location
    if is_local(folder) and not folder.exists():
        if not source.is_default:
            raise BadInputError(
                f"source {source.describe()} does not exist: {source.how_to_change()} to your clip-retrieval "
                f"folder, or build the demo sample there first with `laion-assets sample {source.spec.flag} {folder}`"
            )
        print(f"building the sample in {folder}", flush=True)
        write_sample(folder, SampleSpec())
    storage = StorageResource(source=str(folder), data_root=data_root.value, safety=safety.value)
    print(
        f"source {source.describe()}, data root {data_root.describe()}, instance {dagster_home.describe()}",
        flush=True,
    )
    instance = dg.DagsterInstance.get()
    counts = run_graph(instance, storage, PredictorsResource())
    counts |= run_sample_pop(instance, storage)
    width = max(map(len, counts))
    for name, rows in counts.items():
        print(f"  {name:<{width}}  {rows if rows is not None else '-'} rows")
    print(f"demo done in {time.perf_counter() - start:.1f} s; outputs in {storage.layout.root}")
    return counts


def main(argv: list[str] | None = None) -> None:
    """Command line entry point of the demo (``laion-assets demo`` takes the same flags)."""
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} {PRECEDENCE}")
    add_flags(parser, SOURCE, DATA_ROOT, SAFETY, DAGSTER_HOME)
    args = parser.parse_args(argv)
    run_demo(
        resolve_setting(SOURCE, args.source),
        resolve_setting(DATA_ROOT, args.data_root),
        resolve_setting(SAFETY, args.safety),
        resolve_setting(DAGSTER_HOME, args.dagster_home),
    )


if __name__ == "__main__":
    main()
