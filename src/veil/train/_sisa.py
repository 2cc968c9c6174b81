"""SISA ensembles: sharded, isolated, sliced, aggregated (Bourtoule et al., 2021).

Persons (never rows: all of a person's rows go together) are assigned by their
token (:func:`veil.data.person_token`): shard ``int(token, 16) % S``, then a
slice within the shard from a second hash (SHA-256 of the token), so the
assignment is a pure function of who the person is. Adding or removing anyone
moves nobody else.

Each shard is its own model, trained *incrementally*: stage ``r`` trains on the
shard's slices ``1..r`` together, starting from stage ``r - 1``'s weights, and
its weights are checkpointed after every stage (``slice0`` is the initial
weights). A stage is one run of the ordinary engine (:func:`veil.train.train`)
with a fresh optimiser, so a stage re-run from its checkpoint is exactly the
procedure the original run followed: unlearning a person of slice ``j`` of
shard ``i`` restarts shard ``i`` at checkpoint ``j - 1`` and re-runs stages
``j..R`` without them; every other shard and every earlier stage is kept.

**Epochs.** The default is SISA's: each stage runs ``e = max(1, round(2 E /
(R + 1)))`` epochs over its cumulative rows, where ``E`` is ``config.epochs``
(what a single model would run). The first slice is then seen ``R e`` times and
the last ``e``; on average a row gets ``e (R + 1) / 2 = E`` passes, the single
model's. ``epochs_per_slice`` overrides it.

**DP-SGD.** Every stage of every shard uses one Poisson rate ``q = B S / n``
(``B`` the configured batch, ``n`` the rows: the expected batch is ``B`` at a
shard's last stage, smaller before) and one noise multiplier ``sigma``, and
``round(1 / q)`` steps per epoch. A person of slice 1 takes part in every
stage, so a shard costs ``account(q, sigma, T)`` with ``T`` the total steps
over its stages (a person of a later slice in fewer: ``T`` bounds them all).
Shards hold disjoint persons, so by parallel composition the ensemble is as
private as one shard: the ledger is charged *one* event of ``T`` steps.

**On disk** (inside the model's folder, beside ``model.json`` and the card):
``shards`` is a symbolic link to the current generation ``shards.g<k>``, which
holds ``s<i>/slice<j>.pt`` (weights after stage ``j``) and
``s<i>/slice<j>.tokens`` (the persons of slice ``j``, sorted), and
``state.json`` (the generation's history). Unlearning writes a new generation
(unchanged files hard-linked), then swaps the link with one rename: a crash
leaves either the old ensemble or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from veil._io import fsync_directory, write_bytes_atomic, write_text_atomic
from veil.data import DatasetInfo, person_tokens
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit
from veil.train._accounting import PrivacyAccounting
from veil.train._artifact import MEMBERS_FILE, ModelRegistry
from veil.train._engine import train
from veil.train._ensemble import (
    SHARDS_DIR,
    SisaEnsemble,
    SisaSchedule,
    load_ensemble,
    load_state,
    shard_checkpoint,
)
from veil.train._models import build_model, trainable_part
from veil.train._plan import DPConfig, TrainingPlan, plan_training

__all__ = [
    "SHARDS_DIR",
    "SisaEnsemble",
    "SisaSchedule",
    "assign_persons",
    "load_ensemble",
    "shard_checkpoint",
    "shard_members",
]

STATE_FILE = "state.json"
COMPOSITION = (
    "parallel composition over {shards} disjoint shards: each person is in one shard, so the "
    "ensemble's (epsilon, delta) is one shard's (every shard runs the same q, sigma and steps)"
)


def assign_persons(
    tokens: Iterable[str], shards: int, slices: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The shard (``int(token, 16) % S``) and slice (a second hash) of each token, 0-based."""
    cache: dict[str, tuple[int, int]] = {}
    shard_of: list[int] = []
    slice_of: list[int] = []
    for token in tokens:
        pair = cache.get(token)
        if pair is None:
            second = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
            pair = (int(token, 16) % shards, second % slices)
            cache[token] = pair
        shard_of.append(pair[0])
        slice_of.append(pair[1])
    return np.asarray(shard_of, dtype=np.int64), np.asarray(slice_of, dtype=np.int64)


def row_tokens(
    registry: ModelRegistry,
    info: DatasetInfo,
    persons: list[Any] | None,
    n_rows: int,
    version: int | None,
) -> list[str]:
    """Each row's person token; rows stand for persons only where the data cannot change.

    A dataset without a privacy unit has no persons; a *reference* dataset
    (fixed bytes, checked at every load, never given a new version) may still
    be sharded by row position. A managed one may lose rows (retention), which
    would move every later row: refused.
    """
    if info.dataset_id is None:
        raise InvalidInputError(
            "a SISA ensemble needs a registered dataset", expected="a dataset id", got="none"
        )
    if persons is not None:
        return person_tokens(registry.person_key(), info.dataset_id, persons)
    if version is not None:  # a managed dataset: versions may drop rows
        raise InvalidInputError(
            f"'{info.name}' has no privacy-unit column, so its persons cannot be named",
            expected="a privacy unit (the column that identifies a person) for SISA",
            got="no privacy unit",
            fix="register the table with --privacy-unit COLUMN",
        )
    return person_tokens(
        registry.person_key(), info.dataset_id, [f"#row{i}" for i in range(n_rows)]
    )


def default_epochs(epochs: int, slices: int) -> int:
    """SISA's per-stage epochs: on average every row gets ``epochs`` passes (module docstring)."""
    return max(1, round(2 * epochs / (slices + 1)))


def state_bytes(net: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getvalue()


def stage_seed(seed: int | None, shard: int, stage: int) -> int | None:
    """A reproducible run's seed for one stage (``None``: the CSPRNG, the private default)."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}/{shard}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def initial_model(spec: Mapping[str, Any], seed: int | None, shard: int) -> nn.Module:
    """A shard's initial weights (from ``seed`` when reproducible; not a privacy mechanism)."""
    if seed is None:
        return build_model(spec)
    with torch.random.fork_rng():
        torch.manual_seed(stage_seed(seed, shard, 0) or 0)
        return build_model(spec)


def stage_plan(
    config: DPConfig, schedule: SisaSchedule, n_rows: int, seed: int | None
) -> TrainingPlan:
    """The engine's plan for one stage over ``n_rows`` cumulative rows."""
    epochs = schedule.epochs_per_slice
    if not schedule.private:
        return plan_training(replace(config, epochs=epochs, seed=seed), n_rows)
    q, sigma = schedule.sample_rate, schedule.noise_multiplier
    assert q is not None  # noqa: S101 - a private schedule has all three
    assert sigma is not None  # noqa: S101
    assert schedule.steps_per_epoch  # noqa: S101
    cfg = replace(
        config,
        epochs=epochs,
        batch_size=max(1, round(q * n_rows)),
        epsilon=None,
        noise_multiplier=sigma,
        seed=seed,
    )
    # The engine reads q and sigma from the accounting; the charged figure is the ensemble's.
    accounting = PrivacyAccounting(
        sampling_rate=q,
        noise_multiplier=sigma,
        steps=schedule.stage_steps,
        delta=config.delta,
        epsilon=math.nan,
        epsilon_rdp=math.nan,
    )
    return TrainingPlan(cfg, n_rows, schedule.steps_per_epoch, accounting)


@dataclass
class ShardRun:
    """One shard's training: where it starts and the rows of each of its slices."""

    shard: int
    start: int  # the first stage to run (1-based); starts from checkpoint start - 1
    slice_rows: list[npt.NDArray[np.int64]]  # row indices of slice j (0-based list index)


def train_shard(  # noqa: PLR0917 - the shard, its data, and how to train it
    net: nn.Module,
    run: ShardRun,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: DPConfig,
    schedule: SisaSchedule,
    *,
    n_classes: int,
    on_stage: Callable[[int, int, float], None] | None = None,
) -> dict[int, bytes]:
    """Run stages ``run.start..R`` of one shard in place; the checkpoint bytes after each.

    ``inputs`` are what the trainable part sees (fixed features already applied).
    A stage with no rows yet (an empty first slice) trains nothing: its
    checkpoint is the previous one (fewer steps than charged only lowers the cost).
    """
    trainable = trainable_part(net)
    checkpoints: dict[int, bytes] = {}
    for stage in range(run.start, schedule.slices + 1):
        rows = np.sort(np.concatenate(run.slice_rows[:stage]))
        seconds = 0.0
        if rows.size:
            index = torch.from_numpy(rows)
            plan = stage_plan(
                config, schedule, int(rows.size), stage_seed(config.seed, run.shard, stage)
            )
            report = train(trainable, inputs[index], targets[index], plan, n_classes=n_classes)
            seconds = report.seconds
        checkpoints[stage] = state_bytes(net)
        if on_stage is not None:
            on_stage(stage, int(rows.size), seconds)
    return checkpoints


# ---------------------------------------------------------------- on disk
def shard_members(model_path: Path, shard: int, slices: int) -> list[list[str]]:
    """The sorted person tokens of each slice of ``shard`` (0-based list), current generation."""
    folder = model_path / SHARDS_DIR / f"s{shard}"
    return [
        [t for t in (folder / f"slice{j}.tokens").read_text(encoding="utf-8").splitlines() if t]
        for j in range(1, slices + 1)
    ]


def read_state(model_path: Path) -> dict[str, Any]:
    """The current generation's ``state.json``: its number and its unlearning history."""
    state: dict[str, Any] = json.loads(
        (model_path / SHARDS_DIR / STATE_FILE).read_text(encoding="utf-8")
    )
    return state


def write_generation(
    folder: Path,
    *,
    checkpoints: Mapping[int, Mapping[int, bytes]],
    members: Mapping[int, Sequence[Sequence[str]]],
    state: Mapping[str, Any],
    keep_from: Path | None = None,
    shards: int,
    slices: int,
) -> None:
    """Write generation ``folder``: new checkpoints and memberships, the rest hard-linked.

    ``checkpoints[i][j]`` and ``members[i]`` (all slices of shard ``i``) replace
    what ``keep_from`` (the current generation) holds; every other file is
    linked from it. Each file is fsynced; the caller renames the folder into place.
    """
    folder.mkdir(parents=True)
    for shard in range(shards):
        target = folder / f"s{shard}"
        target.mkdir()
        new = checkpoints.get(shard, {})
        for stage in range(slices + 1):
            name = f"slice{stage}.pt"
            if stage in new:
                write_bytes_atomic(target / name, new[stage], mode=None)
            else:
                assert keep_from is not None  # noqa: S101 - a first generation writes all
                os.link(keep_from / f"s{shard}" / name, target / name)
        for stage in range(1, slices + 1):
            name = f"slice{stage}.tokens"
            if shard in members:
                tokens = members[shard][stage - 1]
                write_text_atomic(target / name, "".join(f"{t}\n" for t in tokens), mode=None)
            else:
                assert keep_from is not None  # noqa: S101
                os.link(keep_from / f"s{shard}" / name, target / name)
        fsync_directory(target)
    write_text_atomic(folder / STATE_FILE, json.dumps(dict(state), indent=2), mode=None)
    fsync_directory(folder)


def point_shards(model_path: Path, generation: str) -> None:
    """Make ``shards`` name ``generation`` with one rename (atomic on POSIX)."""
    link = model_path / f".{SHARDS_DIR}.link"
    link.unlink(missing_ok=True)
    link.symlink_to(generation)
    link.replace(model_path / SHARDS_DIR)
    fsync_directory(model_path)


def all_members(model_path: Path, shards: int, slices: int) -> list[str]:
    """Every person of the current generation, sorted (what ``members.tokens`` holds)."""
    tokens: set[str] = set()
    for shard in range(shards):
        for slice_tokens in shard_members(model_path, shard, slices):
            tokens.update(slice_tokens)
    return sorted(tokens)


def write_members(model_path: Path, tokens: Sequence[str]) -> None:
    write_text_atomic(model_path / MEMBERS_FILE, "".join(f"{t}\n" for t in tokens), mode=None)


def drop_generation(model_path: Path, generation: str) -> None:
    shutil.rmtree(model_path / generation, ignore_errors=True)


def shard_model(model_path: Path, meta: Mapping[str, Any], shard: int, stage: int) -> nn.Module:
    """Shard ``shard``'s model as checkpointed after ``stage`` (to resume training from)."""
    net = build_model(meta["spec"])
    load_state(net, shard_checkpoint(model_path, shard, stage))
    return net


def progress_stage(
    progress: ProgressCallback | None, total: int
) -> Callable[[int, int, int, float], None]:
    """A callback counting finished stages out of ``total`` for the progress bar."""
    done = [0]

    def report(shard: int, stage: int, rows: int, seconds: float) -> None:
        done[0] += 1
        emit(
            progress,
            "SISA stages",
            done[0],
            total,
            unit="stages",
            detail=f"shard {shard} slice {stage}: {rows} rows, {seconds:.2f} s",
        )

    return report
