#!/usr/bin/env bash
# Install Debian's chromium for the browser test (tests/test_report_browser.py), as root with
# apt-get; about 15-25 s on a fresh machine. Anywhere else it says so and the test skips.
#   bash scripts/setup_browser.sh        (scripts/test.sh calls it first)
# Playwright itself comes with the test extra (scripts/setup.sh); it drives this chromium and never
# downloads a browser of its own.
set -euo pipefail
version() { chromium --version 2>/dev/null | head -1; }  # Debian's wrapper prints a harmless warning
if command -v chromium >/dev/null 2>&1; then
  echo "setup_browser: $(version) already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: no chromium, and not root with apt-get: the browser test will skip" \
       "(install Debian's chromium package to run it)" >&2
  exit 0
fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "setup_browser: apt-get could not install chromium (see above): the browser test will skip" >&2
  exit 0
fi
echo "setup_browser: installed $(version) in $(( $(date +%s) - start )) s"
