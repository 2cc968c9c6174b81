"""`veil._memory`: a process's memory from /proc, and why not from getrusage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from veil import _memory
from veil._memory import peak_resident_mb, resident_mb, status_kb

needs_proc = pytest.mark.skipif(
    status_kb("VmRSS") is None, reason="no /proc/self/status: memory is read from getrusage only"
)


@needs_proc
def test_now_and_peak_are_plausible_and_ordered():
    now, peak = resident_mb(), peak_resident_mb()
    assert now is not None and peak is not None
    assert 10 < now <= peak < 64 * 1024  # a Python process with NumPy: above 10 MB, below 64 GB


@needs_proc
def test_another_process_is_read_by_pid_and_a_missing_one_is_none():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert (resident_mb(child.pid) or 0) > 0
        assert (peak_resident_mb(child.pid) or 0) >= (resident_mb(child.pid) or 0)
    finally:
        child.kill()
        child.wait()
    assert resident_mb(child.pid) is None and peak_resident_mb(child.pid) is None  # reaped
    assert status_kb("NoSuchField") is None


def test_without_proc_the_peak_falls_back_on_getrusage(monkeypatch):
    monkeypatch.setattr(_memory, "status_kb", lambda field, pid="self": None)
    assert resident_mb() is None
    assert (peak_resident_mb() or 0) > 10  # ru_maxrss of this process
    assert peak_resident_mb(os.getpid()) is None  # another pid has no fallback


@needs_proc
def test_a_small_child_of_a_large_process_reports_its_own_peak_where_getrusage_does_not():
    # The claim of docs/architecture.md: across exec, ru_maxrss keeps the parent's size.
    block = bytearray(300 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])
    code = (
        "import json, resource; from veil._memory import peak_resident_mb; "
        "print(json.dumps([peak_resident_mb(), "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    del block
    own, rusage = json.loads(done.stdout)
    assert own < 150  # an interpreter importing one small module
    assert rusage >= 300  # the parent's resident size at the fork
