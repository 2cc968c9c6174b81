"""Unlearn persons from a SISA ensemble: retrain only the shards and stages that held them.

For each shard holding an erased person, training restarts from the
checkpoint before the earliest slice that held one, and re-runs the later
stages on the dataset's *current* rows (or the ``frame`` given) without the
erased persons, with the schedule the ensemble was trained with. Every other
shard, and every earlier stage, is kept as it is: the result is the model
SISA would have trained without those persons (up to the randomness of the
re-run stages).

Crash safety: each retrained shard is written to a new folder (its kept
stages hard-linked) and swapped in with one rename, then the ensemble's state,
then ``members.tokens``. A crash leaves each shard old or new, never mixed; a
retrained shard holds no erased person, so the next run retrains only the
shards still holding one, and a members list a crash left stale (still naming
the erased) is rewritten (so ``veil models show`` errs on "still carries").

A DP ensemble's retrained stages are a new release on the remaining persons:
charged *before* training as one event (the shards are disjoint: parallel
composition, so the longest retraining is charged). Budgets are never refunded.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from veil.data import Catalog
from veil.errors import InvalidInputError
from veil.ledger import BudgetGuard, Receipt
from veil.progress import ProgressCallback
from veil.store.tables import ErasureRow
from veil.train._artifact import ModelRegistry
from veil.train._lineage import record_unlearn
from veil.train._models import FeatureEncoder, fixed_features
from veil.train._pipeline import (
    _require_training,
)
from veil.train._plan import DPConfig
from veil.train._sisa import (
    SHARDS_DIR,
    ShardRun,
    SisaSchedule,
    assign_persons,
    next_generation,
    progress_stage,
    read_state,
    row_tokens,
    shard_members,
    shard_model,
    train_shard,
    write_members,
    write_shard,
    write_state,
)
from veil.train._sisa_train import shard_event
from veil.train._unlearn_rows import UnlearnRows, unlearn_rows

__all__ = ["UnlearnResult", "unlearn_sisa"]


@dataclass(frozen=True)
class UnlearnResult:
    """What an unlearning run did.

    Attributes:
        model: The ensemble's name.
        shards_retrained: The shards retrained (0-based), in order.
        slices_retrained: For each of them, the stages re-run (1-based slices).
        persons_removed: Erased persons that were members and are no longer.
        seconds: Wall time of the retraining (loading and writing included).
        receipt: The ledger charge of a DP ensemble's retraining (``None``:
            nothing retrained, or non-private: see ``history_event``).
        dataset_version: The dataset version the retrained stages read
            (``None``: a reference dataset, or nothing retrained).
        history_event: The ledger's history entry of a non-private retraining.
        generation: The ensemble's generation after the run.
    """

    model: str
    shards_retrained: tuple[int, ...]
    slices_retrained: tuple[tuple[int, ...], ...]
    persons_removed: int
    seconds: float
    receipt: Receipt | None
    dataset_version: int | None
    history_event: int | None = None
    generation: int = 1
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "shards_retrained": list(self.shards_retrained),
            "slices_retrained": [list(s) for s in self.slices_retrained],
            "stages_retrained": sum(len(s) for s in self.slices_retrained),
            "persons_removed": self.persons_removed,
            "seconds": self.seconds,
            "charge": None if self.receipt is None else self.receipt.to_dict(),
            "history_event": self.history_event,
            "dataset_version": self.dataset_version,
            "generation": self.generation,
            "notes": list(self.notes),
        }


def erased_tokens_of(catalog: Catalog, dataset_id: int) -> set[str]:
    """The tokens of every person erased from the dataset (``ErasureRow`` of kind ``erase``)."""
    with catalog.store.session() as session:
        rows = session.scalars(
            select(ErasureRow.person).where(
                ErasureRow.dataset_id == dataset_id,
                ErasureRow.kind == "erase",
                ErasureRow.person.is_not(None),
            )
        ).all()
    return {str(r) for r in rows}


@contextmanager
def _model_lock(path: Path) -> Iterator[None]:
    """One unlearning run per model at a time (another process waits): generations are linear."""
    with (path / ".unlearn.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unlearn_sisa(
    catalog: Catalog,
    guard: BudgetGuard,
    registry: ModelRegistry,
    name: str,
    erased_tokens: set[str] | list[str] | None = None,
    *,
    frame: Any = None,
    purpose: str = "model-training: unlearning",
    progress: ProgressCallback | None = None,
) -> UnlearnResult:
    """Remove ``erased_tokens`` (default: every erased person of the dataset) from ensemble ``name``.

    Needs what training needed (``budget.spend`` on the dataset, or
    ``dataset.non_private`` for a non-private ensemble). Data: the dataset's
    current version, loaded for the mechanism, or ``frame`` (its columns as
    registered). Tokens that are not members are ignored. Nothing to remove:
    nothing is charged, trained or recorded (``members.tokens`` is rewritten
    from the shards if a crash left it stale).

    Raises:
        InvalidInputError: ``name`` is not a SISA ensemble, or the dataset it
            was trained on was replaced by other data.
        PermissionDeniedError, BudgetExceededError: As for training (nothing retrained).
    """
    if isinstance(erased_tokens, str):
        raise InvalidInputError(
            "erased_tokens is one string",
            expected="a collection of person tokens",
            got=repr(erased_tokens[:40]),
            fix="pass [token]",
        )
    with _model_lock(registry.path(name)):
        return _unlearn(
            catalog,
            guard,
            registry,
            name,
            erased_tokens,
            frame=frame,
            purpose=purpose,
            progress=progress,
        )


def _unlearn(
    catalog: Catalog,
    guard: BudgetGuard,
    registry: ModelRegistry,
    name: str,
    erased_tokens: set[str] | list[str] | None,
    *,
    frame: Any,
    purpose: str,
    progress: ProgressCallback | None,
) -> UnlearnResult:
    started = time.perf_counter()
    saved_card = registry.card(name)
    path = registry.path(name)
    meta = registry.meta(name)
    if not meta.get("sisa"):
        raise InvalidInputError(
            f"'{name}' is not a SISA ensemble",
            expected="a model trained with --shards/--slices",
            got="a single model",
            fix="a single model can only be retrained without the person: train a new one "
            "(with --shards S --slices R to make later erasures cheap)",
        )
    dataset = saved_card.dataset
    _require_training(catalog.access, dataset, None, private=saved_card.private, purpose=purpose)
    info = catalog.get(dataset)
    if info.content_sha256 != saved_card.dataset_sha256 or info.dataset_id is None:
        raise InvalidInputError(
            f"'{dataset}' is not the dataset model '{name}' was trained on",
            expected=f"registration sha256 {saved_card.dataset_sha256[:12]}…",
            got=f"{info.content_sha256[:12]}…",
        )
    schedule = SisaSchedule.from_dict(meta["sisa"])
    config = DPConfig.from_dict(meta["training"]["config"])
    members = {s: shard_members(path, s, schedule.slices) for s in range(schedule.shards)}
    everyone = {t for slices in members.values() for tokens in slices for t in tokens}
    wanted = (
        erased_tokens_of(catalog, info.dataset_id) if erased_tokens is None else set(erased_tokens)
    )
    erased = wanted & everyone
    state = read_state(path)
    if not erased:
        write_members(path, sorted(everyone))  # heals a list a crash left stale
        return UnlearnResult(
            name,
            (),
            (),
            0,
            time.perf_counter() - started,
            None,
            None,
            generation=int(state["generation"]),
        )
    starts = {
        s: min(j for j, tokens in enumerate(slices, 1) if erased.intersection(tokens))
        for s, slices in members.items()
        if any(erased.intersection(tokens) for tokens in slices)
    }
    encoder = FeatureEncoder.from_dict(meta["encoder"]) if meta.get("encoder") else None
    data = unlearn_rows(
        catalog, info, dataset, label=meta["label"], encoder=encoder, frame=frame, purpose=purpose
    )
    tokens = row_tokens(registry, info, data.persons, data.n_rows, data.version)
    runs, new_members = _runs(tokens, erased, starts, members, schedule)
    receipt, history_event = _charge(
        guard,
        name,
        dataset,
        schedule=schedule,
        config=config,
        starts=starts,
        data=data,
        purpose=purpose,
    )
    spec = meta["spec"]
    # Only the retrained stages' rows are read: the fixed front end (ScatterNet's
    # scattering of every image, most of an MNIST run's cost) is applied to them alone.
    runs, needed = _compact(runs)
    inputs, targets = data.select(needed)
    _, inputs = fixed_features(shard_model(path, meta, 0, 0), inputs, progress)
    report = progress_stage(progress, sum(schedule.slices - s + 1 for s in starts.values()))
    checkpoints: dict[int, dict[int, bytes]] = {}
    for run in runs:

        def on_stage(stage: int, rows: int, seconds: float, shard: int = run.shard) -> None:
            report(shard, stage, rows, seconds)

        net = shard_model(path, meta, run.shard, run.start - 1)
        checkpoints[run.shard] = train_shard(
            net,
            run,
            inputs,
            targets,
            config,
            schedule,
            n_classes=int(spec["n_classes"]),
            on_stage=on_stage,
        )
    generation = next_generation(path / SHARDS_DIR)
    retrained = tuple(tuple(range(s, schedule.slices + 1)) for _, s in sorted(starts.items()))
    entry = {
        "generation": generation,
        "shards": sorted(starts),
        "slices": [list(r) for r in retrained],
        "persons_removed": len(erased),
        "dataset_version": data.version,
        "ledger_event": receipt.event_id if receipt else history_event,
    }
    _swap(
        path,
        checkpoints=checkpoints,
        members=new_members,
        state=state,
        entry=entry,
        schedule=schedule,
    )
    write_members(path, sorted(everyone - erased))
    record_unlearn(
        catalog.access,
        saved_card,
        info,
        purpose=purpose,
        version=data.version,
        details={**entry, "tokens": sorted(erased)},
    )
    return UnlearnResult(
        name,
        tuple(sorted(starts)),
        retrained,
        len(erased),
        time.perf_counter() - started,
        receipt,
        data.version,
        history_event=history_event,
        generation=generation,
    )


def _charge(
    guard: BudgetGuard,
    name: str,
    dataset: str,
    *,
    schedule: SisaSchedule,
    config: DPConfig,
    starts: dict[int, int],
    data: UnlearnRows,
    purpose: str,
) -> tuple[Receipt | None, int | None]:
    """Charge (DP) or record (non-private) the retraining, before it runs."""
    details = {
        "model": name,
        "unlearning": True,
        "shards": sorted(starts),
        "first_slices": [starts[s] for s in sorted(starts)],
    }
    if data.consent is not None:  # the consent state the rows were filtered by
        details["consent"] = data.consent
    what = f"unlearning: retrained {len(starts)} shard(s) of SISA ensemble '{name}' on '{dataset}'"
    if not config.private:
        record = guard.record_non_private(
            dataset, f"NOT PRIVATE {what}", purpose=purpose, details=details
        )
        return None, record.event_id
    # Disjoint shards: the charge is the longest retraining (parallel composition).
    stages = max(schedule.slices - s + 1 for s in starts.values())
    event = shard_event(
        schedule,
        config,
        steps=stages * schedule.stage_steps,
        n_rows=data.n_rows,
        what=f"DP-SGD {what}",
        details=details,
    )
    guard.preview_many([(dataset, event)])
    (receipt,) = guard.charge_many([(dataset, event)], purpose=purpose)
    return receipt, None


def _runs(
    tokens: list[str],
    erased: set[str],
    starts: dict[int, int],
    members: dict[int, list[list[str]]],
    schedule: SisaSchedule,
) -> tuple[list[ShardRun], dict[int, list[list[str]]]]:
    """The stages to re-run per affected shard (rows without the erased), and their new members."""
    shard_of, slice_of = assign_persons(tokens, schedule.shards, schedule.slices, only=starts)
    token_array = np.asarray(tokens)
    keep = np.fromiter((t not in erased for t in tokens), dtype=bool, count=len(tokens))
    runs: list[ShardRun] = []
    new_members: dict[int, list[list[str]]] = {}
    for shard, start in sorted(starts.items()):
        rows = [
            np.flatnonzero((shard_of == shard) & (slice_of == j) & keep)
            for j in range(schedule.slices)
        ]
        runs.append(ShardRun(shard, start, rows))
        # Stages before `start` keep what they were trained on; later ones hold the rows now read.
        new_members[shard] = [
            members[shard][j] if j + 1 < start else sorted(set(token_array[rows[j]].tolist()))
            for j in range(schedule.slices)
        ]
    return runs, new_members


def _compact(runs: list[ShardRun]) -> tuple[list[ShardRun], npt.NDArray[np.int64]]:
    """The runs over only the rows they read: ``(runs renumbered, those rows' indices)``.

    The renumbering keeps the order of rows (a stage reads its rows sorted), so
    each stage trains on the same tensors, in the same order, as before.
    """
    parts = [rows for run in runs for rows in run.slice_rows]  # stage r reads slices 1..r
    needed = np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    compact = [
        ShardRun(
            run.shard,
            run.start,
            [np.searchsorted(needed, rows).astype(np.int64) for rows in run.slice_rows],
        )
        for run in runs
    ]
    return compact, needed


def _swap(
    path: Path,
    *,
    checkpoints: dict[int, dict[int, bytes]],
    members: dict[int, list[list[str]]],
    state: dict[str, Any],
    entry: dict[str, Any],
    schedule: SisaSchedule,
) -> None:
    """Replace each retrained shard (one rename each), then the ensemble's state."""
    folder = path / SHARDS_DIR
    generation = int(entry["generation"])
    for shard in sorted(checkpoints):
        write_shard(
            folder,
            shard,
            generation,
            checkpoints=checkpoints[shard],
            members=members[shard],
            slices=schedule.slices,
        )
    write_state(folder, {"generation": generation, "history": [*state.get("history", []), entry]})
