"""JAX's compiled programs: kept across AIM's refits up to a memory budget, gone after a run."""

from __future__ import annotations

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
    with CompiledPrograms(budget_mb=-1) as programs:  # any size is past this budget
        program = _compiled()
        programs.check()
        assert program._cache_size() == 0
        assert programs.drops == 1
        again = _compiled()
        programs.check()
        assert again._cache_size() == 0
        assert programs.drops == 2


@pytest.mark.skipif(resident_mb() is None, reason="no /proc: memory cannot be read here")
def test_resident_memory_is_read_and_grows_with_an_allocation():
    before = resident_mb()
    block = bytearray(64 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    after = resident_mb()
    assert before is not None and after is not None
    assert after - before > 48
    del block


def test_where_memory_cannot_be_read_every_check_drops(monkeypatch):
    import veil.synth._model as model

    monkeypatch.setattr(model, "resident_mb", lambda: None)  # as on a system without /proc
    with CompiledPrograms(budget_mb=10_000) as programs:
        program = _compiled()
        programs.check()
        assert program._cache_size() == 0 and programs.drops == 1
