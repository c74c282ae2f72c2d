"""Where a number was measured: every result file records it, so readers can compare."""

from __future__ import annotations

import os
import platform

import torch
import transformers

import adaptkit


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "adaptkit": adaptkit.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
