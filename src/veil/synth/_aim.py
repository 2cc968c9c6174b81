"""AIM and MST: which marginals to measure, measured with noise; mbi fits the model.

AIM (McKenna, Mullins, Sheldon and Miklau 2022) measures every one-way
marginal, then for a number of rounds picks, with the exponential mechanism,
the candidate marginal the current model gets most wrong (its L1 error minus
the error the measurement's own noise would explain, weighted by how much of
the workload it touches), measures it, and refits. Candidates are the
workload's cliques and their subsets, limited so that the model stays below
a size that grows with the rounds. MST (McKenna, Miklau and Sheldon 2021)
measures the one-way marginals, picks a maximum spanning tree of pairs with
the exponential mechanism (Kruskal's order), and measures those pairs.

Every selection and every measurement here is one of the plan's mechanisms
(:mod:`veil.synth._plan`), already charged: the functions check, at each
step, that the mechanism they run is the one the plan charged. Noise comes
from OpenDP's samplers (:func:`veil.dp.gaussian_noise` on integer counts,
:func:`veil.dp.exponential_selection`); NumPy's generator only drives
post-processing (sampling the model).

``private=False`` runs the same algorithm without noise (exact marginals,
argmax selection): the non-private baseline that the audit attacks beside
the release. It is never released by ``veil synth``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.progress import ProgressCallback, emit
from veil.synth._model import CompiledPrograms, Model, estimate, model_size_mb
from veil.synth._plan import SynthPlan
from veil.synth._workload import marginal

__all__ = ["RunTrace", "candidates_of", "run_aim", "run_mst"]

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


@dataclass
class RunTrace:
    """What a run did (for the card and the bench): the cliques it measured, in order."""

    measured: list[tuple[str, ...]] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0
    model_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured": [list(c) for c in self.measured],
            "rounds": self.rounds,
            "seconds": round(self.seconds, 3),
            "model_mb": round(self.model_mb, 3),
            "notes": list(self.notes),
        }


def candidates_of(workload: Sequence[Sequence[str]]) -> dict[tuple[str, ...], float]:
    """AIM's candidates: every non-empty subset of a workload clique, weighted by its overlap.

    The weight of a candidate is the sum, over the workload's cliques, of how
    many of its columns each contains (the AIM paper's weighting). It depends
    on the workload only, never on the data.
    """
    cliques = [tuple(c) for c in workload]
    subsets = {
        sub for c in cliques for k in range(1, len(c) + 1) for sub in itertools.combinations(c, k)
    }
    return {
        sub: float(sum(len(set(sub) & set(w)) for w in cliques))
        for sub in sorted(subsets, key=lambda s: (len(s), s))
    }


class _Noise:
    """The OpenDP samplers, checked against the plan before each use."""

    def __init__(self, plan: SynthPlan, private: bool) -> None:
        self.plan = plan
        self.private = private
        if private:
            from veil.dp import exponential_selection, gaussian_noise  # noqa: PLC0415

            self._gaussian = gaussian_noise
            self._select = exponential_selection

    def measure(self, counts: np.ndarray, sigma: float) -> np.ndarray:
        if not self.private:
            return counts.astype(np.float64)
        if sigma not in (self.plan.oneway_sigma, self.plan.measure_sigma):
            raise AssertionError("a measurement outside the charged plan")  # pragma: no cover
        return np.asarray(
            self._gaussian(counts.astype(np.int64), sigma, integer=True), dtype=np.float64
        )

    def select(self, scores: np.ndarray) -> int:
        if not self.private:
            return int(np.argmax(scores))
        index, mech = self._select(scores, self.plan.select_epsilon, self.plan.select_sensitivity)
        charged = self.plan.mechanisms()[self.plan.oneway]
        if mech.dp_event != charged.dp_event:  # pragma: no cover - the plan built both
            raise AssertionError("a selection outside the charged plan")
        return int(index)


def _true_marginals(
    codes: np.ndarray,
    columns: Sequence[str],
    sizes: dict[str, int],
    cliques: Sequence[tuple[str, ...]],
) -> dict[tuple[str, ...], np.ndarray]:
    return {
        c: marginal(codes, [columns.index(x) for x in c], [sizes[x] for x in c]) for c in cliques
    }


def run_aim(
    codes: np.ndarray,
    columns: Sequence[str],
    sizes: dict[str, int],
    workload: Sequence[tuple[str, ...]],
    plan: SynthPlan,
    *,
    iters: int,
    final_iters: int,
    max_model_mb: float,
    sample_rows: int,
    rng: np.random.Generator,
    private: bool = True,
    progress: ProgressCallback | None = None,
    stop: Callable[[], None] | None = None,
) -> tuple[Model, RunTrace]:
    """Veil's AIM on integer codes (n x columns); returns the fitted model and what it measured."""
    started = time.process_time()
    columns = list(columns)
    candidates = candidates_of(workload)
    # Every column's one-way marginal is measured, whether or not a workload clique names it.
    answers = _true_marginals(
        codes, columns, sizes, list(dict.fromkeys([*candidates, *((c,) for c in columns)]))
    )
    noise = _Noise(plan, private)
    trace = RunTrace()
    measurements: list[tuple[tuple[str, ...], np.ndarray, float]] = []
    for col in columns:
        y = noise.measure(answers[(col,)], plan.oneway_sigma)
        measurements.append(((col,), y, plan.oneway_sigma if private else 1.0))
        trace.measured.append((col,))
    size_list = [sizes[c] for c in columns]
    # Without noise a measured marginal is exact: measuring it again would add nothing, so
    # the non-private run never picks it twice (a private one may: a second noisy measurement
    # of the same marginal halves its variance). The one-ways count as measured.
    exact: set[tuple[str, ...]] = set() if private else {(c,) for c in columns}
    with CompiledPrograms() as programs:
        model = estimate(columns, size_list, measurements, iters=iters)
        programs.check()
        total_steps = plan.oneway + plan.rounds
        sigma = plan.measure_sigma if private else 0.0
        task = "AIM rounds"
        emit(progress, task, 0, plan.rounds, unit="rounds", detail="one-way marginals measured")
        for t in range(plan.rounds):
            if stop is not None:
                stop()
            limit = max_model_mb * (plan.oneway + t + 1) / total_steps
            current = model.cliques
            allowed = [
                c
                for c in candidates
                if c not in exact  # an exact marginal measured again adds nothing
                and (
                    model.covers(c)
                    or (
                        answers[c].size * 8 / 2**20 <= limit  # cheap test first: the clique alone
                        and model_size_mb(columns, size_list, [*current, c]) <= limit
                    )
                )
            ]
            if not allowed:  # every candidate measured exactly: nothing left to learn
                trace.notes.append(f"every candidate measured exactly after {t} rounds")
                break
            scores = np.array(
                [
                    candidates[c]
                    * (
                        float(np.abs(answers[c] - model.marginal(c, rng, sample_rows)).sum())
                        - _SQRT_2_OVER_PI * sigma * answers[c].size
                    )
                    for c in allowed
                ]
            )
            chosen = allowed[noise.select(scores)]
            y = noise.measure(answers[chosen], plan.measure_sigma)
            measurements.append((chosen, y, plan.measure_sigma if private else 1.0))
            trace.measured.append(chosen)
            if not private:
                exact.add(chosen)
            model = estimate(columns, size_list, measurements, iters=iters, warm=model)
            programs.check()
            trace.rounds = t + 1
            emit(
                progress,
                task,
                t + 1,
                plan.rounds,
                unit="rounds",
                detail=f"measured {','.join(chosen)}",
            )
        model = estimate(columns, size_list, measurements, iters=final_iters, warm=model)
        trace.model_mb = model_size_mb(columns, size_list, model.cliques)
    trace.seconds = time.process_time() - started
    return model, trace


def run_mst(
    codes: np.ndarray,
    columns: Sequence[str],
    sizes: dict[str, int],
    plan: SynthPlan,
    *,
    final_iters: int,
    rng: np.random.Generator,
    private: bool = True,
    progress: ProgressCallback | None = None,
    stop: Callable[[], None] | None = None,
) -> tuple[Model, RunTrace]:
    """Veil's MST: noisy one-ways, a spanning tree of pairs picked privately, the pairs measured."""
    del rng  # MST samples nothing before the final model
    started = time.process_time()
    columns = list(columns)
    noise = _Noise(plan, private)
    trace = RunTrace()
    ones = _true_marginals(codes, columns, sizes, [(c,) for c in columns])
    measurements: list[tuple[tuple[str, ...], np.ndarray, float]] = []
    probs: dict[str, np.ndarray] = {}
    for col in columns:
        y = noise.measure(ones[(col,)], plan.oneway_sigma)
        measurements.append(((col,), y, plan.oneway_sigma if private else 1.0))
        trace.measured.append((col,))
        clipped = np.clip(y, 0, None)
        probs[col] = clipped / clipped.sum() if clipped.sum() > 0 else np.full(y.size, 1 / y.size)
    n_hat = max(float(np.mean([m[1].sum() for m in measurements])), 1.0)
    pairs = list(itertools.combinations(columns, 2))
    answers = _true_marginals(codes, columns, sizes, pairs)
    # Each pair's error under independence (from the noisy one-ways: post-processing).
    errors = {
        (a, b): float(np.abs(answers[(a, b)] - n_hat * np.outer(probs[a], probs[b]).ravel()).sum())
        for a, b in pairs
    }
    parent = {c: c for c in columns}

    def root(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    emit(progress, "MST tree", 0, plan.rounds, unit="edges")
    for t in range(plan.rounds):
        if stop is not None:
            stop()
        allowed = [p for p in pairs if root(p[0]) != root(p[1])]
        if not allowed:
            break
        edge = allowed[noise.select(np.array([errors[p] for p in allowed]))]
        parent[root(edge[0])] = root(edge[1])
        y = noise.measure(answers[edge], plan.measure_sigma)
        measurements.append((edge, y, plan.measure_sigma if private else 1.0))
        trace.measured.append(edge)
        trace.rounds = t + 1
        emit(progress, "MST tree", t + 1, plan.rounds, unit="edges", detail=",".join(edge))
    size_list = [sizes[c] for c in columns]
    with CompiledPrograms():
        model = estimate(columns, size_list, measurements, iters=final_iters)
        trace.model_mb = model_size_mb(columns, size_list, model.cliques)
    trace.seconds = time.process_time() - started
    return model, trace
