"""JAX's compiled programs: kept across AIM's refits up to a memory budget, gone after a run."""

from __future__ import annotations

import math
import os

import jax
import pytest

from veil.synth._model import CompiledPrograms, resident_mb


def _compiled() -> jax.stages.Wrapped:
    program = jax.jit(lambda x: x * 2 + 1)
    program(1.0)
    return program


def test_programs_are_kept_within_the_budget_and_dropped_when_the_run_ends():
    with CompiledPrograms(budget_mb=10_000) as programs:
        program = _compiled()
        programs.check()
        assert program._cache_size() == 1  # kept: the process grew by far less than 10 GB
        assert programs.drops == 0
    assert programs.drops == 1
    assert program._cache_size() == 0  # nothing outlives the run


def test_programs_are_dropped_once_the_process_outgrows_the_budget():
    with CompiledPrograms(budget_mb=-math.inf) as programs:  # any size is past this budget
        program = _compiled()
        programs.check()
        assert program._cache_size() == 0
        assert programs.drops == 1
        again = _compiled()
        programs.check()
        assert again._cache_size() == 0
        assert programs.drops == 2


@pytest.mark.skipif(resident_mb() is None, reason="no /proc: memory cannot be read here")
def test_resident_memory_is_this_process_size():
    # Not an allocation's growth: the allocator reuses freed pages already resident (a CI
    # worker at 3.6 GB grew by nothing for 64 MB), so only the size's plausibility is checked.
    value = resident_mb()
    assert value is not None
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert 20 < value < total  # an interpreter with NumPy and JAX loaded, within the machine


def test_where_memory_cannot_be_read_every_check_drops(monkeypatch):
    import veil.synth._model as model

    monkeypatch.setattr(model, "resident_mb", lambda: None)  # as on a system without /proc
    with CompiledPrograms(budget_mb=10_000) as programs:
        program = _compiled()
        programs.check()
        assert program._cache_size() == 0 and programs.drops == 1
