"""The laion_assets code location pointed at a generated sample, for the end-to-end webserver test.

The project's own ``laion_assets.definitions`` reads ``data/sample`` and writes ``data/out``; the test must not
touch those, so this module builds the same definitions with the storage taken from environment variables.
"""

import os

import dagster as dg

from laion_assets.definitions import ASSETS, CHECKS, URL_ASSETS, default_resources
from laion_assets.defs.jobs import release_job, rescore_job, shard_job
from laion_assets.defs.resources import PredictorsResource, StorageResource

defs = dg.Definitions(
    assets=[*URL_ASSETS, *ASSETS],
    executor=dg.in_process_executor,  # one process per run: the test waits on fewer process start-ups
    asset_checks=CHECKS,
    jobs=[shard_job, release_job, rescore_job],
    resources={
        **default_resources(),
        "storage": StorageResource(
            source=os.environ["LAION_ASSETS_E2E_SOURCE"], data_root=os.environ["LAION_ASSETS_E2E_DATA_ROOT"]
        ),
        "predictors": PredictorsResource(),
    },
)
