"""The SISA ensemble as a model: its schedule, its aggregate, and loading it from disk.

Kept apart from :mod:`veil.train._sisa` (training and unlearning) so that
:class:`~veil.train.ModelRegistry` can load an ensemble without importing the
trainer: see that module for the layout of ``shards/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from veil._validate import whole_number
from veil.train._models import build_model

__all__ = [
    "SHARDS_DIR",
    "SisaEnsemble",
    "SisaSchedule",
    "load_ensemble",
    "load_state",
    "shard_checkpoint",
]

SHARDS_DIR = "shards"


@dataclass(frozen=True)
class SisaSchedule:
    """How an ensemble's stages run (saved in ``model.json`` as ``sisa``; unlearning reuses it)."""

    shards: int
    slices: int
    epochs_per_slice: int
    private: bool
    sample_rate: float | None = None  # q of every DP stage
    steps_per_epoch: int | None = None  # round(1 / q) in a DP stage
    noise_multiplier: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        for name in ("shards", "slices", "epochs_per_slice"):
            whole_number(getattr(self, name), name)

    @property
    def stage_steps(self) -> int:
        """DP steps of one stage."""
        return self.epochs_per_slice * (self.steps_per_epoch or 0)

    @property
    def total_steps(self) -> int:
        """DP steps of a shard over all its stages: what one ledger event charges."""
        return self.slices * self.stage_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SisaSchedule:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class SisaEnsemble(nn.Module):
    """The aggregate: log of the mean of the shards' softmax probabilities.

    Its output is a log-probability, so ``argmax`` predicts, ``softmax`` gives
    the averaged probabilities and a cross-entropy on it is the ensemble's loss:
    code written for one model (prediction, the audit's attacks) works unchanged.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([F.log_softmax(m(inputs), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def load_state(net: nn.Module, path: Path) -> None:
    net.load_state_dict(torch.load(path, weights_only=True))


def shard_checkpoint(model_path: Path, shard: int, slice_: int) -> Path:
    """The weights of ``shard`` after stage ``slice_`` (0: initial) in the current generation."""
    return model_path / SHARDS_DIR / f"s{shard}" / f"slice{slice_}.pt"


def load_ensemble(model_path: Path, meta: Mapping[str, Any]) -> SisaEnsemble:
    """The ensemble of the current generation's last-stage shard weights."""
    schedule = SisaSchedule.from_dict(meta["sisa"])
    nets = []
    for shard in range(schedule.shards):
        net = build_model(meta["spec"])
        load_state(net, shard_checkpoint(model_path, shard, schedule.slices))
        nets.append(net)
    ensemble = SisaEnsemble(nets)
    ensemble.eval()
    return ensemble
