#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite. Real-data tests read
# $BLINDSPOT_DATA (default ../shared/data) and skip when it is absent. As root with apt-get it
# first installs Debian's chromium for the report's browser test (scripts/setup_browser.sh; the
# test skips without it).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_browser.sh
bash scripts/setup.sh
. .venv/bin/activate
export BLINDSPOT_DATA=${BLINDSPOT_DATA:-$(cd .. && pwd)/shared/data}
export BLINDSPOT_CACHE=${BLINDSPOT_CACHE:-$PWD/.cache/blindspot}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
