"""Train a SISA ensemble on a registered dataset (:func:`fit_sisa`).

The order is :func:`veil.train.fit_private`'s: roles, then every check that
can refuse (shards and slices, persons per shard, the data, the model, a
target epsilon out of reach, a name already taken), then the budget gate, then
training. A DP ensemble is *one* ledger event: the shard mechanism (every
shard runs the same Poisson rate, noise and steps), charged once because the
shards hold disjoint persons (parallel composition; the event's details and
the card say so). See :mod:`veil.train._sisa` for the layout and the schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from veil import __version__
from veil._validate import whole_number
from veil.data import Catalog, DatasetInfo, DataUse
from veil.dp import LaplaceMechanism
from veil.errors import InvalidInputError
from veil.ledger import BudgetGuard, Charge, Mechanism, PrivacyEvent, Receipt
from veil.progress import ProgressCallback
from veil.train._accounting import PrivacyAccounting, account, calibrate_noise
from veil.train._artifact import ModelRegistry, PrivacyCard
from veil.train._clip import PerSampleClipper
from veil.train._engine import TrainingReport, check_training_data
from veil.train._lineage import record_save
from veil.train._models import build_model, fixed_features, trainable_part
from veil.train._pipeline import (
    DatasetTensors,
    TrainedModel,
    _charge,
    _describe,
    _private_utility,
    _require_training,
    dataset_tensors,
)
from veil.train._plan import DPConfig, TrainingPlan
from veil.train._sisa import (
    COMPOSITION,
    SHARDS_DIR,
    ShardRun,
    SisaEnsemble,
    SisaSchedule,
    assign_persons,
    default_epochs,
    initial_model,
    progress_stage,
    row_tokens,
    state_bytes,
    train_shard,
    write_shard,
    write_state,
)

__all__ = ["fit_sisa"]


def _check_shape(shards: int, slices: int, epochs_per_slice: int | None) -> None:
    whole_number(shards, "shards", fix="pass --shards S with S >= 1 (1: one model)")
    whole_number(
        slices, "slices", fix="pass --slices R with R >= 1 (1: no checkpoints within a shard)"
    )
    if epochs_per_slice is not None:
        whole_number(epochs_per_slice, "epochs_per_slice")


def _dp_schedule(
    config: DPConfig, shards: int, slices: int, epochs: int, n_rows: int
) -> SisaSchedule:
    """One q, sigma and steps-per-epoch for every stage of every shard (module docstring)."""
    if not config.private:
        return SisaSchedule(shards, slices, epochs, private=False)
    if config.delta >= 1.0 / n_rows:
        raise InvalidInputError(
            "delta is too large for this dataset",
            expected=f"delta < 1/n = {1.0 / n_rows:.3g}",
            got=f"delta={config.delta:g} for {n_rows} rows",
            fix="pass a smaller --delta",
        )
    q = min(1.0, config.batch_size * shards / n_rows)
    steps_per_epoch = max(1, round(1 / q))
    total = slices * epochs * steps_per_epoch
    sigma = config.noise_multiplier
    if sigma is None:
        assert config.epsilon is not None  # noqa: S101 - DPConfig guarantees one of the two
        sigma = calibrate_noise(config.epsilon, config.delta, q, total)
    return SisaSchedule(
        shards,
        slices,
        epochs,
        private=True,
        sample_rate=q,
        steps_per_epoch=steps_per_epoch,
        noise_multiplier=sigma,
        delta=config.delta,
    )


def shard_event(
    schedule: SisaSchedule,
    config: DPConfig,
    *,
    steps: int,
    n_rows: int,
    what: str,
    details: dict[str, Any],
) -> PrivacyEvent:
    """The ledger event of ``steps`` steps of the shard mechanism (parallel over the shards)."""
    assert schedule.sample_rate is not None  # noqa: S101 - a private schedule
    assert schedule.noise_multiplier is not None  # noqa: S101
    mechanism = Mechanism.subsampled_gaussian(
        schedule.sample_rate,
        schedule.noise_multiplier,
        steps,
        max_grad_norm=config.max_grad_norm,
        expected_batch_size=config.batch_size,
        dataset_size=n_rows,
        sampling="poisson",
    )
    sisa = {
        "shards": schedule.shards,
        "slices": schedule.slices,
        "epochs_per_slice": schedule.epochs_per_slice,
        "composition": COMPOSITION.format(shards=schedule.shards),
    }
    return PrivacyEvent(
        what=what, mechanisms=(mechanism,), operation="training", details={**details, "sisa": sisa}
    )


def _testing(
    catalog: Catalog,
    data: DatasetTensors,
    dataset: str,
    test: str | None,
    *,
    test_epsilon: float,
    purpose: str,
) -> tuple[DatasetTensors | None, LaplaceMechanism | None]:
    if test is None:
        return None, None
    if test == dataset:
        raise InvalidInputError(
            "the test set is the training set",
            expected="a held-out registered dataset for --test",
            got=repr(test),
        )
    testing = dataset_tensors(
        catalog,
        test,
        label=data.label,
        encoder=data.encoder,
        use=DataUse.MECHANISM,
        purpose=purpose,
    )
    if testing.classes != data.classes or testing.input_shape != data.input_shape:
        raise InvalidInputError(
            f"'{test}' does not match '{dataset}'",
            expected=f"classes {list(data.classes)} and input shape {data.input_shape}",
            got=f"classes {list(testing.classes)} and input shape {testing.input_shape}",
        )
    return testing, LaplaceMechanism(test_epsilon / 2, 1, integer=True)


def _runs(
    tokens: list[str], schedule: SisaSchedule
) -> tuple[list[ShardRun], dict[int, list[list[str]]]]:
    """Each shard's rows per slice, and its persons per slice (sorted tokens)."""
    shard_of, slice_of = assign_persons(tokens, schedule.shards, schedule.slices)
    runs: list[ShardRun] = []
    members: dict[int, list[list[str]]] = {}
    token_array = np.asarray(tokens)
    for shard in range(schedule.shards):
        in_shard = shard_of == shard
        if not in_shard.any():
            raise InvalidInputError(
                f"shard {shard} of {schedule.shards} got no person",
                expected="at least one person in every shard",
                got=f"{len(set(tokens))} persons over {schedule.shards} shards",
                fix="use fewer --shards (each shard should hold hundreds of persons)",
            )
        rows = [np.flatnonzero(in_shard & (slice_of == j)) for j in range(schedule.slices)]
        runs.append(ShardRun(shard, 1, rows))
        members[shard] = [sorted(set(token_array[r].tolist())) for r in rows]
    return runs, members


def fit_sisa(
    catalog: Catalog,
    guard: BudgetGuard,
    registry: ModelRegistry,
    dataset: str,
    config: DPConfig,
    *,
    name: str,
    shards: int,
    slices: int,
    model: str = "mlp",
    hidden: tuple[int, ...] = (128,),
    label: str | None = None,
    features: list[str] | None = None,
    test: str | None = None,
    purpose: str = "model-training",
    epochs_per_slice: int | None = None,
    test_epsilon: float = 0.1,
    progress: ProgressCallback | None = None,
) -> TrainedModel:
    """Train a SISA ensemble of ``shards`` x ``slices`` on ``dataset``; save it with its card.

    Roles, refusals and the charge are :func:`fit_private`'s (a non-private
    ensemble needs ``dataset.non_private`` and spends nothing); a DP ensemble
    is one ledger event of the shard mechanism (parallel composition over the
    disjoint shards). ``config.epochs`` is what a single model would run; each
    stage runs ``epochs_per_slice`` (default: SISA's ``round(2 E / (R + 1))``).

    Raises:
        InvalidInputError: ``shards`` or ``slices`` below 1, more shards than
            persons, a shard without a person, a managed dataset without a
            privacy unit (nothing read or charged beyond the checks).
        PermissionDeniedError, BudgetExceededError: As :func:`fit_private`.
    """
    _check_shape(shards, slices, epochs_per_slice)
    _require_training(catalog.access, dataset, test, private=config.private, purpose=purpose)
    registry.check_name(name)
    registry.refuse_existing(name)
    info = catalog.get(dataset)
    rows_per_person = int(info.report.get("max_rows_per_unit", 1))
    if config.private and rows_per_person > 1:
        raise InvalidInputError(
            f"'{dataset}' has up to {rows_per_person} rows per person; DP-SGD here protects one row",
            expected="one row per person",
            got=f"max {rows_per_person} rows per {info.schema.privacy_unit}",
            fix="aggregate to one row per person and register that table",
        )
    data = dataset_tensors(
        catalog, dataset, label=label, features=features, use=DataUse.MECHANISM, purpose=purpose
    )
    n_rows = int(data.inputs.shape[0])
    tokens = row_tokens(registry, info, data.persons, n_rows, data.version)
    persons = len(set(tokens))
    if shards > persons:
        raise InvalidInputError(
            "more shards than persons",
            expected=f"--shards <= {persons} (the persons in '{dataset}')",
            got=str(shards),
            fix="use fewer shards: each should hold hundreds of persons to learn anything",
        )
    epochs = epochs_per_slice or default_epochs(config.epochs, slices)
    schedule = _dp_schedule(config, shards, slices, epochs, n_rows)
    runs, members = _runs(tokens, schedule)
    spec: dict[str, Any] = {
        "kind": model,
        "input_shape": list(data.input_shape),
        "n_classes": len(data.classes),
    }
    if model == "mlp":
        spec["hidden"] = list(hidden)
    probe = build_model(spec)
    PerSampleClipper(trainable_part(probe), config.max_grad_norm).close()
    check_training_data(data.inputs, data.targets, len(data.classes))
    testing, accuracy_query = _testing(
        catalog, data, dataset, test, test_epsilon=test_epsilon, purpose=purpose
    )
    details: dict[str, Any] = {"model": name, "architecture": model, "label": data.label} | (
        {} if data.consent is None else {"consent": data.consent}  # the rows' consent filter
    )
    what = f"SISA ensemble '{name}' ({shards} shards x {slices} slices, {model}) on '{dataset}'"
    charges = _charges(
        schedule,
        config,
        data,
        dataset=dataset,
        test=test,
        accuracy_query=accuracy_query,
        what=what,
        details=details,
    )
    if charges:
        guard.preview_many(charges)
    # A fixed front end (scattering) has no weights to learn: applied once for every shard.
    _, inputs = fixed_features(probe, data.inputs, progress)
    baseline = None
    if not config.private:
        baseline = (
            dataset,
            f"NOT PRIVATE baseline {what}",
            {**details, "sisa": {"shards": shards, "slices": slices}},
        )
    receipt, test_receipt = _charge(guard, charges, baseline=baseline, purpose=purpose)
    started = time.perf_counter()
    nets, checkpoints, history = _train_all(
        runs, spec, inputs, data, config=config, schedule=schedule, progress=progress
    )
    ensemble = SisaEnsemble(nets).eval()
    accounting = (
        account(schedule.sample_rate, schedule.noise_multiplier, schedule.total_steps, config.delta)
        if schedule.private and schedule.sample_rate and schedule.noise_multiplier
        else None
    )
    plan = TrainingPlan(
        replace(config, epochs=slices * epochs),
        n_rows,
        schedule.steps_per_epoch or max(1, round(n_rows / shards / config.batch_size)),
        accounting,
    )
    report = TrainingReport(
        plan=plan,
        history=history,
        seconds=time.perf_counter() - started,
        secure_rng=config.seed is None,
    )
    utility = _private_utility(ensemble, testing, accuracy_query)
    card = _card(
        info,
        config,
        schedule,
        data,
        name=name,
        architecture=f"SISA {shards} x {slices} of " + _describe(spec),
        accounting=accounting,
        plan=plan,
        receipts=(receipt, test_receipt),
        utility=utility,
        test=(test, test_epsilon) if testing else None,
        persons=persons,
    )
    meta = {
        "spec": spec,
        "classes": list(data.classes),
        "label": data.label,
        "encoder": data.encoder.to_dict() if data.encoder else None,
        "training": report.to_dict(diagnostics=False),
        "sisa": schedule.to_dict(),
    }

    def write_shards(staging: Path) -> None:
        folder = staging / SHARDS_DIR
        for shard in range(shards):
            write_shard(
                folder,
                shard,
                1,
                checkpoints=checkpoints[shard],
                members=members[shard],
                slices=slices,
            )
        write_state(folder, {"generation": 1, "history": []})

    registry.save(name, ensemble, meta, card, members=sorted(set(tokens)), extra=write_shards)
    record_save(catalog.access, card, info, purpose=purpose, details={"sisa": card.sisa})
    return TrainedModel(name=name, model=ensemble, card=card, report=report, notes=data.notes)


def _charges(
    schedule: SisaSchedule,
    config: DPConfig,
    data: DatasetTensors,
    *,
    dataset: str,
    test: str | None,
    accuracy_query: LaplaceMechanism | None,
    what: str,
    details: dict[str, Any],
) -> list[Charge]:
    """The ensemble's one shard event (DP only) and its test accuracy's, as they will be charged."""
    charges: list[Charge] = []
    if config.private:
        event = shard_event(
            schedule,
            config,
            steps=schedule.total_steps,
            n_rows=int(data.inputs.shape[0]),
            what=f"DP-SGD {what}",
            details=details,
        )
        charges.append((dataset, event))
    if accuracy_query is not None and test is not None:
        event = PrivacyEvent(
            what=f"test accuracy of model '{details['model']}' (correct predictions and the "
            "label histogram, discrete Laplace)",
            mechanisms=(accuracy_query.mechanism, accuracy_query.mechanism),
            operation="query",
            details={"model": details["model"], "training_dataset": dataset},
        )
        charges.append((test, event))
    return charges


def _train_all(
    runs: list[ShardRun],
    spec: dict[str, Any],
    inputs: torch.Tensor,
    data: DatasetTensors,
    *,
    config: DPConfig,
    schedule: SisaSchedule,
    progress: ProgressCallback | None,
) -> tuple[list[nn.Module], dict[int, dict[int, bytes]], list[dict[str, float]]]:
    """Every shard from its initial weights: the nets, their checkpoints, and the stage log."""
    report_stage = progress_stage(progress, schedule.shards * schedule.slices)
    nets: list[nn.Module] = []
    checkpoints: dict[int, dict[int, bytes]] = {}
    history: list[dict[str, float]] = []
    for run in runs:
        net = initial_model(spec, config.seed, run.shard)
        initial = state_bytes(net)

        def on_stage(stage: int, rows: int, seconds: float, shard: int = run.shard) -> None:
            history.append({"shard": shard, "slice": stage, "rows": rows, "seconds": seconds})
            report_stage(shard, stage, rows, seconds)

        stages = train_shard(
            net,
            run,
            inputs,
            data.targets,
            config,
            schedule,
            n_classes=len(data.classes),
            on_stage=on_stage,
        )
        checkpoints[run.shard] = {0: initial, **stages}
        nets.append(net)
    return nets, checkpoints, history


def _card(
    info: DatasetInfo,
    config: DPConfig,
    schedule: SisaSchedule,
    data: DatasetTensors,
    *,
    name: str,
    architecture: str,
    accounting: PrivacyAccounting | None,
    plan: TrainingPlan,
    receipts: tuple[Receipt | None, Receipt | None],
    utility: Any,
    test: tuple[str | None, float] | None,
    persons: int,
) -> PrivacyCard:
    receipt, test_receipt = receipts
    n_rows = int(data.inputs.shape[0])
    return PrivacyCard(
        model=name,
        dataset=info.name,
        dataset_sha256=info.content_sha256,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        private=config.private,
        epsilon=accounting.epsilon if accounting else math.inf,
        delta=config.delta if accounting else 1.0,
        accountant="pld (dp_accounting, pessimistic): one shard, parallel composition"
        if accounting
        else "none",
        epsilon_rdp=accounting.epsilon_rdp if accounting else None,
        epsilon_prv=accounting.epsilon_prv if accounting else None,
        neighbouring="add or remove one record"
        if info.schema.privacy_unit is None
        else f"add or remove one {info.schema.privacy_unit}",
        sampling="poisson" if config.private else "shuffle",
        sample_rate=schedule.sample_rate or min(1.0, config.batch_size * schedule.shards / n_rows),
        expected_batch_size=config.batch_size,
        max_grad_norm=config.max_grad_norm if config.private else None,
        noise_multiplier=schedule.noise_multiplier,
        steps=schedule.total_steps if config.private else plan.steps,
        epochs=plan.config.epochs,
        examples=n_rows,
        secure_rng=config.seed is None,
        ledger_event_id=receipt.event_id if receipt else None,
        ledger_seq=receipt.seq if receipt else None,
        architecture=architecture,
        test_accuracy=utility.accuracy,
        test_majority_rate=utility.majority_rate,
        test_no_utility=utility.no_utility,
        test_epsilon=test[1] if test else None,
        test_dataset=test[0] if test else None,
        test_ledger_event_id=test_receipt.event_id if test_receipt else None,
        veil_version=__version__,
        dataset_version=data.version,
        membership=(
            f"tracked: {persons} persons (members.tokens, per shard and slice)"
            if data.persons is not None
            else f"tracked by row position: {persons} rows (no privacy unit; fixed reference data)"
        ),
        sisa={
            **schedule.to_dict(),
            "composition": COMPOSITION.format(shards=schedule.shards) if config.private else None,
            "persons": persons,
        },
    )
