#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the instance-storage test (laion_assets_tests/defs/test_postgres_instance.py
# starts a throwaway server with initdb/pg_ctl). Does nothing when initdb is already on PATH or under
# /usr/lib/postgresql/*/bin, so CI (.ci/run) can call it every time. Needs root (CI runs as root) or sudo.
# The package creates the `postgres` system user the test runs the server as (initdb refuses root); its own cluster
# is not used.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
install() {
    $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# Refresh the package lists only when they don't know postgresql (a fresh image) or when the install fails on them
# (stale lists name files the mirror no longer has).
if ! apt-cache show postgresql >/dev/null 2>&1; then
    $sudo apt-get update -qq
fi
if ! install; then
    $sudo apt-get update -qq
    install
fi
ls /usr/lib/postgresql/*/bin/initdb
