#!/usr/bin/env bash
# Run the cpu-small preset on a lent GPU from the bundle gpu_bundle.sh made: bf16 first, then fp32
# with the time left. Each set's results.jsonl and preset.json land in $OUT/<precision>/; copy them
# to benchmarks/results/cpu-small-gpu-<precision>/ and run report.py there. A rerun resumes.
#
#   benchmarks/gpu_sweep.sh [SECONDS [JOBS [SWEEP ARGS...]]]
#   SECONDS: time budget (default 480); JOBS: runs at a time (default 12); SWEEP ARGS go to sweep.py
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-480}
jobs=${2:-12}
shift $(($# < 2 ? $# : 2))
deadline=$((SECONDS + budget))
out=${OUT:?set OUT to the folder that results go to}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/tmp/hf-datasets TOKENIZERS_PARALLELISM=false
if ! python3 -c "import datasets, evaluate" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
mkdir -p /tmp/glue && tar xzf .device/glue.tgz -C /tmp/glue || exit 1
model=/tmp/all-MiniLM-L6-v2
python3 - "$model" <<'PY' || exit 1
import sys

import accelerate, datasets, evaluate, peft, torch, transformers
from transformers import AutoModel, AutoTokenizer

AutoModel.from_pretrained(".device/all-MiniLM-L6-v2", dtype=torch.float32).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(".device/all-MiniLM-L6-v2").save_pretrained(sys.argv[1])
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{gpu}; torch {torch.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}, "
      f"evaluate {evaluate.__version__}, accelerate {accelerate.__version__}, peft {peft.__version__}")
PY
# One small run first, so that a broken environment costs seconds, not the budget.
python3 -m glue_tasks train --task rte --method adapter --max-train-samples 64 --epochs 1 --data-dir /tmp/glue \
  --model "$model" --mixed-precision bf16 --output-dir /tmp/smoke --overwrite || exit 1
for precision in bf16 no; do
  left=$((deadline - SECONDS))
  [ "$left" -gt 30 ] || break
  timeout "$left" python3 benchmarks/sweep.py --preset cpu-small --data-dir /tmp/glue --model "$model" \
    --mixed-precision "$precision" --jobs "$jobs" --results-dir "$out/$precision" --work-dir /tmp/sweep-work "$@"
done
ls -l "$out"/*
