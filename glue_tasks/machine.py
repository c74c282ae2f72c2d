"""Where a number was measured: every result file records it, so readers can compare."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch
import transformers

import adaptkit


def machine_info() -> dict:
    """The CPU by name and by the vector instructions torch's kernels use (AVX2, AVX512, ...):
    the name alone ("AMD EPYC") covers machines whose kernels differ in speed and round
    differently in the last bits."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "adaptkit": adaptkit.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def source_info() -> dict:
    """Which adaptkit ran: its version, the commit of this checkout, and whether adaptkit/ had
    uncommitted changes (a result from edited code says so)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip()

    return {"version": adaptkit.__version__, "git_commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--", "adaptkit"))}


def busy_warning(threads: int) -> str | None:
    """A line when other work already keeps the cores busy, so this run's threads wait for them
    (a run asking for 2 threads on 2 cores with a load of 2 can take ten times as long)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    free = max(1, round(cores - load))
    return (f"the machine is busy: load average {load:.1f} on {cores} cores, and this run asks for {threads} "
            f"threads; it will be slower than measured on an idle machine. With other jobs running, "
            f"--threads {free} is often faster")
