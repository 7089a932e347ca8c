#!/usr/bin/env bash
# Installs Debian's chromium for the headless-browser tests (laion_assets_tests/browser.py drives it over the
# DevTools protocol). Does nothing when `chromium` is already on PATH, so CI (.ci/run) can call it every time.
# Needs root (CI runs as root) or sudo. Recommends are skipped: headless runs need no sandbox helper
# (the driver passes --no-sandbox) and fonts-dejavu-core is enough to render the pages' text.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
install() {
    $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
}

# Refresh the package lists only when they don't know chromium (a fresh image) or when the install fails on them
# (stale lists name files the mirror no longer has).
if ! apt-cache show chromium >/dev/null 2>&1; then
    $sudo apt-get update -qq
fi
if ! install; then
    $sudo apt-get update -qq
    install
fi
chromium --version
