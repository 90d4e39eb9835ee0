#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (a browser download by
# `playwright install` is neither needed nor possible here). Install it when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
    exit 0
fi
echo "ERROR: chromium is missing; install it (Debian/Ubuntu: apt-get install chromium)" >&2
exit 1
