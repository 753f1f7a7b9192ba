#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite. Real-data tests read
# $BLINDSPOT_DATA (default ../shared/data) and skip when it is absent.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export BLINDSPOT_DATA=${BLINDSPOT_DATA:-$(cd .. && pwd)/shared/data}
export BLINDSPOT_CACHE=${BLINDSPOT_CACHE:-$PWD/.cache/blindspot}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
