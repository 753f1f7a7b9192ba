#!/usr/bin/env bash
# The README's main job: set up .venv (if needed), then run configs/demo.yaml on the embedded
# SmolLM2-135M with the data in $BLINDSPOT_DATA (default ../shared/data), and print where the
# report is. Rerunning does nothing that is done; a killed run resumes.
#   bash scripts/demo.sh [extra `blindspot run` options, e.g. --dry-run or --set seeds=[0,1]]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export BLINDSPOT_DATA=${BLINDSPOT_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
if [ ! -d "$BLINDSPOT_DATA/mnli-subset" ]; then
  echo "demo: no data at $BLINDSPOT_DATA (expected mnli-subset/ and hans-regen/); set BLINDSPOT_DATA" >&2
  exit 2
fi
# what to expect here (measured and estimated times: docs/LOG.md, configs/demo.yaml's header)
python - <<'PY'
from blindspot.models.resolve import cpu_native_bf16
native, why = cpu_native_bf16()
print(f"demo: {why}, so it runs in " + ("bf16: about 25 min on 2 cores" if native else
      "fp32: about 40 min on 2 cores with AVX-512, more with AVX2 only"))
PY
blindspot run configs/demo.yaml "$@"
