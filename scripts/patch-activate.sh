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
# A value one of them held before (not ours) is kept in _LAION_ASSETS_OLD_<NAME> for `deactivate` to put back.
for _laion_assets_var in DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME DAGSTER_CLI_ASSET_LIST_MODULE_NAME \
    DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME; do
    eval "_laion_assets_value=\${$_laion_assets_var:-}"
    if [ -n "$_laion_assets_value" ] && [ "$_laion_assets_value" != laion_assets.definitions ]; then
        eval "_LAION_ASSETS_OLD_$_laion_assets_var=\$_laion_assets_value"
    fi
    eval "export $_laion_assets_var=laion_assets.definitions"
done
unset _laion_assets_var _laion_assets_value
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
# `deactivate` takes back what this block set, so that a later project in the same shell does not load ours: each
# variable still holding our value goes back to what it held before (unset when nothing); one you changed since
# stays. The venv's own deactivate is kept under another name and runs first. Shells without `typeset -f` (dash)
# keep the venv's deactivate as it is.
_laion_assets_deactivate () {
    for _laion_assets_var in DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME DAGSTER_CLI_ASSET_LIST_MODULE_NAME \
        DAGSTER_CLI_JOB_EXECUTE_MODULE_NAME; do
        eval "_laion_assets_value=\${$_laion_assets_var:-}; _laion_assets_old=\${_LAION_ASSETS_OLD_$_laion_assets_var:-}"
        if [ "$_laion_assets_value" = laion_assets.definitions ]; then
            if [ -n "$_laion_assets_old" ]; then
                eval "export $_laion_assets_var=\$_laion_assets_old"
            else
                unset "$_laion_assets_var"
            fi
        fi
        unset "_LAION_ASSETS_OLD_$_laion_assets_var"
    done
    unset _laion_assets_var _laion_assets_value _laion_assets_old
    if [ -n "${_LAION_ASSETS_DAGSTER_HOME:-}" ] && [ "${DAGSTER_HOME:-}" = "$_LAION_ASSETS_DAGSTER_HOME" ]; then
        unset DAGSTER_HOME
    fi
    unset _LAION_ASSETS_DAGSTER_HOME
}
if typeset -f deactivate >/dev/null 2>&1; then
    eval "$(typeset -f deactivate | command sed '1s/^deactivate/_laion_assets_venv_deactivate/')"
    deactivate () {
        _laion_assets_venv_deactivate "$@"  # the venv's: restores PATH, PS1, …; unless nondestructive, unsets deactivate
        _laion_assets_deactivate
        if [ "${1:-}" != nondestructive ]; then
            unset -f _laion_assets_venv_deactivate _laion_assets_deactivate
        fi
    }
fi
SH
chmod 644 "$tmp"
mv "$tmp" "$activate"
