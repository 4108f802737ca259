#!/bin/sh
# Debian's chromium for the browser test (canvas_assets_tests/test_ui_browser.py), which drives it
# with Playwright at /usr/bin/chromium. Playwright's own browser download is not used.
set -eu
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; install Chromium and set CANVAS_TEST_CHROMIUM to its path" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-chromium: run as root (or with sudo) to install Debian's chromium" >&2
    exit 0
  fi
fi
echo "installing Debian's chromium for the browser test…"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
