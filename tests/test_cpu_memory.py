"""adaptkit.reuse_freed_memory: glibc keeps freed memory for the next step, only when asked."""

import ctypes
import platform
import subprocess
import sys

import pytest

import adaptkit.cpu_speed
from adaptkit.cpu_speed import memory as cpu_memory
from glue_run_fixtures import MISSING_GLUE, train_on_missing_data

# A training step in miniature: tensors of 4-16 MiB allocated, written and freed, round after round.
STEPS = """
import resource, sys, torch
import adaptkit.cpu_speed
reused = sys.argv[1] == "reuse" and adaptkit.cpu_speed.reuse_freed_memory()
def step():
    kept = [torch.ones(1 << (20 + i % 3)) for i in range(24)]
    del kept
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(reused, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults_per_step(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], check=True, capture_output=True, text=True).stdout
    reused, faults = out.split()
    return reused, float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists in glibc only")
def test_freed_memory_is_reused_instead_of_faulted_back_in():
    default_reused, default_faults = _faults_per_step("default")
    reused, faults = _faults_per_step("reuse")
    assert (default_reused, reused) == ("False", "True")
    assert default_faults > 4 * faults, (default_faults, faults)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))

    def no_call(*args, **kwargs):
        raise AssertionError("mallopt must not be looked up outside glibc")
    monkeypatch.setattr(ctypes, "CDLL", no_call)
    assert cpu_memory.reuse_freed_memory() is False


@pytest.mark.parametrize("flags, calls", [([], 1), (["--default-allocator"], 0)])
def test_train_applies_it_unless_told_not_to(flags, calls, tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(adaptkit.cpu_speed, "reuse_freed_memory", lambda: seen.append(True) or True)
    assert train_on_missing_data(tmp_path, flags) == 2  # the missing data stops the run; the setting came first
    assert MISSING_GLUE in capsys.readouterr().err and len(seen) == calls
