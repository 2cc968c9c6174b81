"""Reference models for the forgetting check: the target's own SISA recipe on other rows.

LiRA's reference models should be trained the way the target was (Carlini et
al., 2022): here, a SISA ensemble of the same shape (shards, slices, epochs per
stage, architecture, optimiser; for DP, the same Poisson rate and noise
multiplier) on a random half of the population. Rows go to shards and slices
uniformly at random, which is how the target's token hashes distribute persons.
The references' noise comes from the secure generator (no privacy depends on
them; they need no seed); their initial weights come from the seed the check
gives.

Only the public parts of :mod:`veil.train` are used, so the stage plan below
mirrors ``veil.train``'s: a stage trains on the cumulative slices from the
previous stage's weights, with a fresh optimiser.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from veil.audit import Classifier

__all__ = ["sisa_trainer"]


def sisa_trainer(meta: dict[str, Any]) -> Any:
    """A ``(x, y, seed) -> Classifier`` that trains an ensemble like the model of ``meta``."""
    import torch  # noqa: PLC0415 - optional extra

    from veil.audit import as_classifier  # noqa: PLC0415 - scikit-learn, SciPy
    from veil.train import (  # noqa: PLC0415 - loads torch
        DPConfig,
        SisaEnsemble,
        SisaSchedule,
        build_model,
        fixed_features,
        stage_plan,
        train,
        trainable_part,
    )

    schedule = SisaSchedule.from_dict(meta["sisa"])
    config = replace(DPConfig.from_dict(meta["training"]["config"]), seed=None)
    spec = meta["spec"]
    n_classes = int(spec["n_classes"])

    def stage(n_rows: int) -> Any:
        return stage_plan(config, schedule, n_rows, None)  # the plan fit_sisa's stages follow

    def fit(x: npt.NDArray[Any], y: npt.NDArray[np.int64], seed: int) -> Classifier:
        rng = np.random.default_rng(seed)
        shard_of = rng.integers(schedule.shards, size=len(y))
        slice_of = rng.integers(schedule.slices, size=len(y))
        targets = torch.as_tensor(y)
        # A fixed front end (scattering) has no weights: applied once, as fit_sisa does.
        _, inputs = fixed_features(build_model(spec), torch.as_tensor(x, dtype=torch.float32))
        nets = []
        for shard in range(schedule.shards):
            with torch.random.fork_rng():
                torch.manual_seed(int(rng.integers(2**31)))  # the reference's initial weights
                net = build_model(spec)
            part = trainable_part(net)
            for r in range(1, schedule.slices + 1):
                rows = np.flatnonzero((shard_of == shard) & (slice_of < r))
                if rows.size == 0:
                    continue
                index = torch.from_numpy(rows)
                train(
                    part, inputs[index], targets[index], stage(int(rows.size)), n_classes=n_classes
                )
            nets.append(net.eval())
        return as_classifier(SisaEnsemble(nets).eval())

    return fit
