#!/usr/bin/env bash
# Teach .venv/bin/activate where the Dagster project and its instance live, so that after
# `. .venv/bin/activate` a plain `dagster asset materialize --select X` (no -m) works from the repo root.
set -euo pipefail
activate=$1
marker="# laion-assets: dagster project and instance"
grep -qF "$marker" "$activate" && exit 0
cat >> "$activate" <<'SH'

# laion-assets: dagster project and instance
# The dagster CLI does not read workspace.yaml for `asset materialize`; it reads these variables.
_laion_root="$(dirname "$VIRTUAL_ENV")"
export DAGSTER_MODULE_NAME=laion_assets.definitions
export DAGSTER_HOME="$_laion_root/.dagster"
mkdir -p "$DAGSTER_HOME"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s ../dagster.yaml "$DAGSTER_HOME/dagster.yaml"
unset _laion_root
SH
