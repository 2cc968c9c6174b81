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
``shards/s<i>/slice<j>.pt`` (shard ``i``'s weights after stage ``j``) and
``shards/s<i>/slice<j>.tokens`` (the persons of its slice ``j``, sorted), and
``shards/state.json`` (the ensemble's generation and unlearning history).
``s<i>`` is a symbolic link to the shard's current folder ``s<i>.g<k>``.
Unlearning writes a new folder for each retrained shard only (its kept stages
hard-linked), then swaps that shard's link with one rename: a crash leaves
every shard either as it was or retrained, never half-written. A shard already
retrained holds no erased person, so running the unlearning again completes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from veil._io import fsync_directory, write_text_atomic
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
TOKEN_HEX = 32  # veil.data person tokens: 128 bits in hex
_GENERATION = re.compile(r"\.?s\d+\.g(\d+)(\.tmp)?")
COMPOSITION = (
    "parallel composition over {shards} disjoint shards: each person is in one shard, so the "
    "ensemble's (epsilon, delta) is one shard's (every shard runs the same q, sigma and steps)"
)


def assign_persons(
    tokens: Iterable[str], shards: int, slices: int, *, only: Iterable[int] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The shard (``int(token, 16) % S``) and slice (a second hash) of each token, 0-based.

    ``only``: the slice is computed for the persons of these shards alone (the
    others get slice ``-1``). Unlearning retrains a few shards and needs the
    slices of their persons only; the second hash is one SHA-256 per person
    in Python, most of this function's time.
    """
    listed = list(tokens)
    n = len(listed)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    raw = b""
    if shards < 1 << 31 and all(len(t) == TOKEN_HEX for t in listed):
        try:
            raw = bytes.fromhex("".join(listed))
        except ValueError:
            raw = b""
    if len(raw) == n * TOKEN_HEX // 2:
        # 128-bit tokens as two 64-bit halves: (hi 2^64 + lo) mod S without Python integers.
        halves = np.frombuffer(raw, dtype=">u8").reshape(-1, 2)
        hi, lo = halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)
        s = np.uint64(shards)
        shard = ((hi % s) * np.uint64((1 << 64) % shards) % s + lo % s) % s
    else:  # not veil.data tokens: the definition, one Python integer each
        shard = np.asarray([int(t, 16) % shards for t in listed], dtype=np.uint64)
    shard_index: npt.NDArray[np.int64] = shard.astype(np.int64)
    wanted = (
        range(n)
        if only is None
        else np.flatnonzero(np.isin(shard_index, np.fromiter(only, dtype=np.int64))).tolist()
    )
    second = np.full(n, -1, dtype=np.int64)
    seen: dict[str, int] = {}  # a person's rows share one hash
    for i in wanted:
        token = listed[i]
        value = seen.get(token)
        if value is None:
            digest = hashlib.sha256(token.encode()).digest()
            value = seen[token] = int.from_bytes(digest[:8], "big") % slices
        second[i] = value
    return shard_index, second


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
            fix=f"declare it: veil datasets update {info.name} --id COLUMN",
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


def next_generation(shards_dir: Path) -> int:
    """One more than any generation on disk (a crashed run's leftovers included) or in the state."""
    numbers = [
        int(m.group(1)) for p in shards_dir.iterdir() if (m := _GENERATION.fullmatch(p.name))
    ]
    state = shards_dir / STATE_FILE
    if state.is_file():
        numbers.append(int(json.loads(state.read_text(encoding="utf-8"))["generation"]))
    return max(numbers, default=0) + 1


def write_shard(
    shards_dir: Path,
    shard: int,
    generation: int,
    *,
    checkpoints: Mapping[int, bytes],
    members: Sequence[Sequence[str]],
    slices: int,
) -> None:
    """Write shard ``shard``'s generation ``generation`` and point ``s<shard>`` at it.

    ``checkpoints`` (stage -> weights) replace the current shard's; the other
    stages are hard-linked from it (their persons' files too, when unchanged).
    Every new file is fsynced, the folder renamed into place, then the link
    swapped in one rename; the old folder goes last.
    """
    final = shards_dir / f"s{shard}.g{generation}"
    staging = shards_dir / f".s{shard}.g{generation}.tmp"
    current = shards_dir / f"s{shard}"
    shutil.rmtree(staging, ignore_errors=True)  # a crashed run's leftovers
    staging.mkdir(parents=True)
    # The staging folder is private to this run until its rename: a file there needs its
    # bytes fsynced, not a rename of its own (one fsync per file, the folder's once).
    for stage in range(slices + 1):
        name = f"slice{stage}.pt"
        if stage in checkpoints:
            _write_durable(staging / name, checkpoints[stage])
        else:
            os.link(current / name, staging / name)
    for stage in range(1, slices + 1):
        name = f"slice{stage}.tokens"
        data = "".join(f"{t}\n" for t in members[stage - 1]).encode("utf-8")
        kept = current / name
        if stage not in checkpoints and kept.is_file() and kept.read_bytes() == data:
            os.link(kept, staging / name)  # a kept stage's persons: already durable
        else:
            _write_durable(staging / name, data)
    fsync_directory(staging)
    old = current.resolve() if current.is_symlink() else None
    staging.replace(final)
    link = shards_dir / f".s{shard}.link"
    link.unlink(missing_ok=True)
    link.symlink_to(final.name)
    link.replace(current)
    fsync_directory(shards_dir)
    if old is not None and old != final.resolve():
        shutil.rmtree(old, ignore_errors=True)


def _write_durable(path: Path, data: bytes) -> None:
    """Create ``path`` (a new file in a staging folder) with ``data``, fsynced."""
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_state(shards_dir: Path, state: Mapping[str, Any]) -> None:
    write_text_atomic(shards_dir / STATE_FILE, json.dumps(dict(state), indent=2), mode=None)


def all_members(model_path: Path, shards: int, slices: int) -> list[str]:
    """Every person of the current generation, sorted (what ``members.tokens`` holds)."""
    tokens: set[str] = set()
    for shard in range(shards):
        for slice_tokens in shard_members(model_path, shard, slices):
            tokens.update(slice_tokens)
    return sorted(tokens)


def write_members(model_path: Path, tokens: Sequence[str]) -> None:
    write_text_atomic(model_path / MEMBERS_FILE, "".join(f"{t}\n" for t in tokens), mode=None)


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
