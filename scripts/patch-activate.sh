#!/usr/bin/env bash
# Teach .venv/bin/activate where the Dagster project and its instance live, so that after `. .venv/bin/activate`
# both `dagster dev` and a plain `dagster asset materialize --select X` (no -m) work from the project folder.
# Idempotent: a block from an earlier version of this script is replaced.
set -euo pipefail
activate=$1
marker="# laion-assets: dagster project and instance"
tmp=$(mktemp "$activate.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Keep the venv's own script: everything before our block, without the blank lines that preceded it.
awk -v m="$marker" '$0 == m {exit} {print}' "$activate" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$tmp"
cat >> "$tmp" <<'SH'

# laion-assets: dagster project and instance
# `dagster dev` and the other workspace commands (job list, job launch, schedule …) find the code location in
# pyproject.toml ([tool.dagster]) when run from the project folder. `dagster asset materialize`, `asset list` and
# `job execute` look nowhere: they read -m, or DAGSTER_CLI_<COMMAND>_MODULE_NAME (dagster's CLI reads each option
# from DAGSTER_CLI_<COMMAND>_<OPTION>). A global DAGSTER_MODULE_NAME would also reach the webserver and daemon
# that `dagster dev` starts with a workspace, which then fail on both.
export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=laion_assets.definitions
export DAGSTER_CLI_ASSET_LIST_MODULE_NAME=laion_assets.definitions
export DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME=laion_assets.definitions
# The project's instance .dagster/ (made as `laion-assets` makes it) unless DAGSTER_HOME is already set: a
# DAGSTER_HOME you set wins. The value an earlier activation set is ours, not yours, and is replaced.
if [ -z "${DAGSTER_HOME:-}" ] || [ "$DAGSTER_HOME" = "${_LAION_ASSETS_DAGSTER_HOME:-}" ]; then
    _LAION_ASSETS_DAGSTER_HOME="$(dirname "$VIRTUAL_ENV")/.dagster"
    export DAGSTER_HOME="$_LAION_ASSETS_DAGSTER_HOME"
    mkdir -p "$DAGSTER_HOME"
    if [ ! -e "$DAGSTER_HOME/dagster.yaml" ] && [ ! -L "$DAGSTER_HOME/dagster.yaml" ]; then
        ln -s ../dagster.yaml "$DAGSTER_HOME/dagster.yaml"
    fi
fi
SH
chmod 644 "$tmp"
mv "$tmp" "$activate"
