#!/usr/bin/env bash
# Pack what a GPU machine with no network needs for gpu_sweep.sh into .device/ (git-ignored, ~50 MB):
# all-MiniLM-L6-v2 in fp16 (to fit the device tool's 64 MiB; gpu_sweep.sh loads it back as fp32),
# the GLUE folders of the cpu-small preset, and the wheels the device image lacks.
#
#   benchmarks/gpu_bundle.sh [GLUE_DIR]          # GLUE_DIR defaults to ../shared/data/glue
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${1:-../shared/data/glue}
rm -rf .device && mkdir -p .device/whl
HF_HUB_OFFLINE=1 python - <<'PY'
import torch
from transformers import AutoModel, AutoTokenizer

from glue_tasks.train import default_model

source, target = default_model(), ".device/all-MiniLM-L6-v2"
AutoModel.from_pretrained(source, dtype=torch.float16).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
PY
tar czf .device/glue.tgz -C "$glue" RTE MRPC STS-B CoLA SST-2
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .device/whl \
  datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19
du -sh .device
