#!/bin/sh
# The browser tests/integration/test_serve.py drives: Debian's chromium, installed with
# apt-get when it is missing. Playwright's own browser download is never used (its
# hosts are not reachable from every machine that runs `make test`).
set -eu

BROWSER=/usr/bin/chromium
[ -x "$BROWSER" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install_browser: $BROWSER is missing and installing it needs root (or passwordless sudo): apt-get install chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: $BROWSER is missing and there is no apt-get here: install chromium so that $BROWSER exists" >&2
    exit 1
fi
echo "install_browser: installing chromium with apt-get" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$BROWSER" ] || { echo "install_browser: apt-get installed chromium, but $BROWSER is still missing" >&2; exit 1; }
