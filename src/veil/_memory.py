"""A process's memory, as Linux reports it: now (``VmRSS``) and at its peak (``VmHWM``).

One reader for the benchmarks (peak memory of a generator, of a query, of
Spark's JVM), for MPC parties (their own peak, reported to the coordinator)
and for synthesis (how far JAX's compiled programs have grown the process).

``/proc/<pid>/status`` is read, not ``getrusage``: across ``exec`` Linux keeps
in ``ru_maxrss`` the larger of the new program's peak and the parent's
resident size at ``fork``, so a child started from a 3 GB process reports 3 GB
whatever it used itself. Where ``/proc`` cannot be read (macOS, a sandbox),
the current size is unknown (``None``) and this process's peak falls back on
``ru_maxrss`` (KiB on Linux, bytes on macOS).

>>> (resident_mb() or 1.0) > 0 and (peak_resident_mb() or 1.0) > 0
True
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["peak_resident_mb", "resident_mb", "status_kb"]

_KIB_PER_MB = 1024.0


def status_kb(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...); None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def resident_mb(pid: int | str = "self") -> float | None:
    """The resident memory of ``pid`` (this process by default) in MB, or None if unknown."""
    kb = status_kb("VmRSS", pid)
    return None if kb is None else kb / _KIB_PER_MB


def peak_resident_mb(pid: int | str = "self") -> float | None:
    """The peak resident memory of ``pid`` in MB (``VmHWM``; ``ru_maxrss`` for this process
    where ``/proc`` cannot be read), or None if unknown."""
    kb = status_kb("VmHWM", pid)
    if kb is not None:
        return kb / _KIB_PER_MB
    if pid != "self":
        return None
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / 2**20 if sys.platform == "darwin" else peak / _KIB_PER_MB
