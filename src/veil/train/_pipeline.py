"""Train a private model on a registered dataset, charging its budget first.

The order is the point: every check that can refuse (the data, the model's
layers, a target epsilon out of reach, a model name already taken) runs
*before* the budget gate (:class:`~veil.ledger.BudgetGuard`) is charged, and
the charge runs before the first gradient is computed. A refusal therefore
spends nothing; a run that fails after the charge is over-counted, never
under-counted (the ledger's rule).

A DP model and its DP test accuracy are one release: both are previewed
before the slow part and charged in one transaction (``charge_many``), so a
test set that cannot pay for the accuracy refuses the whole run and neither
budget changes. A non-private baseline spends nothing, so only its test
accuracy is charged: it is previewed first, the baseline is recorded, then
the accuracy is charged; a refused accuracy (another release spent the test
budget in between) leaves only the baseline's record, which spends nothing.

Roles come first of all: :func:`fit_private` refuses a principal without
``budget.spend`` (``dataset.non_private`` for a baseline) on the training set,
or without ``budget.spend`` on the test set, before any row is read. Its
loads are for the mechanism (:attr:`~veil.data.DataUse.MECHANISM`); a
direct call of :func:`dataset_tensors` hands the rows to its caller, so its
default is :attr:`~veil.data.DataUse.RAW` (owners only). A saved model is
recorded on the trail (``model.save``) with its ledger event.

Lineage: the ``model.save`` entry's transaction also inserts the model's
:class:`~veil.store.tables.DerivedArtifactRow` (dataset id and the version
trained on), and the model folder holds ``members.tokens``, the person tokens
of its training rows, so that an erasure can name the models that still carry
the erased person. A dataset without a privacy unit has no persons to name:
its models' cards say "membership not tracked: no privacy unit".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from veil import __version__
from veil.access import Access, Permission
from veil.data import Catalog, DatasetInfo, DataUse
from veil.dp import LaplaceMechanism
from veil.errors import InvalidInputError, SchemaError
from veil.ledger import BudgetGuard, Charge, PrivacyEvent, Receipt
from veil.progress import ProgressCallback
from veil.train._artifact import ModelRegistry, PrivacyCard
from veil.train._clip import PerSampleClipper
from veil.train._consented import require_consented_rows
from veil.train._engine import TrainingReport, check_training_data, predict_logits, train
from veil.train._lineage import members_of, record_save
from veil.train._models import (
    FeatureEncoder,
    build_model,
    fixed_features,
    trainable_part,
)
from veil.train._plan import DPConfig, plan_training

__all__ = ["DatasetTensors", "TrainedModel", "dataset_tensors", "fit_private"]

# The label column of formats that define one.
_DEFAULT_LABELS = {"adult": "income", "mnist": "label"}


@dataclass
class DatasetTensors:
    """A registered dataset as model inputs and class indices."""

    inputs: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...]
    label: str
    input_shape: tuple[int, ...]
    encoder: FeatureEncoder | None = None
    notes: list[str] = field(default_factory=list)
    # The privacy-unit value of each row (None: the dataset declares no unit), and the
    # managed version the rows came from (None: a reference dataset).
    persons: list[Any] | None = None
    version: int | None = None
    # The consent state the rows were filtered by (a dataset under consent management).
    consent: dict[str, Any] | None = None


def _default_label(info: DatasetInfo) -> str | None:
    if info.format in _DEFAULT_LABELS:
        return _DEFAULT_LABELS[info.format]
    if info.format == "sklearn":
        from veil.data.readers import SKLEARN_TARGETS  # noqa: PLC0415 - the format's table

        name = info.source.split(":", 1)[1]
        target = SKLEARN_TARGETS.get(name)
        return str(target) if target else None
    return None


def _classes(info: DatasetInfo, label: str) -> tuple[str, ...]:
    if label not in info.schema.column_names:
        raise InvalidInputError(
            f"no column '{label}' in '{info.name}'",
            expected=f"one of {', '.join(info.schema.column_names[:20])}",
            got=repr(label),
            fix="pass --label COLUMN",
        )
    spec = info.schema.column(label)
    if spec.kind != "categorical" or not spec.categories:
        raise SchemaError(
            f"the label column '{label}' has no declared categories",
            expected="a categorical label with declared classes",
            got=f"{spec.kind} column without categories",
            fix=f'register the dataset with --categories "{label}=a|b|..."',
        )
    return tuple(spec.categories)


def _targets(values: Any, classes: tuple[str, ...], label: str) -> torch.Tensor:
    lookup = {c: i for i, c in enumerate(classes)}
    strings = [
        None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values
    ]
    bad = sum(1 for v in strings if v not in lookup)
    if bad:
        # The count, not the values: an error must not quote a rare record's label.
        raise InvalidInputError(
            f"labels outside the declared classes of '{label}'",
            expected=f"one of {list(classes)}",
            got=f"{bad} rows with a missing or undeclared label",
            fix="declare every class at registration, or drop the rows without a known label",
        )
    return torch.tensor([lookup[v] for v in strings], dtype=torch.long)  # type: ignore[index]


def dataset_tensors(
    catalog: Catalog,
    name: str,
    *,
    label: str | None = None,
    features: list[str] | None = None,
    encoder: FeatureEncoder | None = None,
    use: DataUse | str = DataUse.RAW,
    purpose: str = "",
) -> DatasetTensors:
    """Load ``name`` as tensors, scaled by its *declared* bounds and categories only.

    The tensors are the rows, so the default ``use`` is
    :attr:`~veil.data.DataUse.RAW` (``dataset.read_rows``, owners only); a DP
    mechanism or an audit that returns no rows passes
    :attr:`~veil.data.DataUse.MECHANISM`. The load is recorded on the trail
    with ``purpose``.

    Raises:
        PermissionDeniedError: The acting principal (``catalog.access``) may
            not load ``name`` for ``use`` (checked before anything else).
    """
    use = DataUse(use)
    catalog.access.require(use.permission, name, action="dataset.read", purpose=purpose)
    info = catalog.get(name)
    label = label or _default_label(info)
    if label is None:
        raise InvalidInputError(
            f"which column of '{name}' is the label?",
            expected="--label COLUMN",
            got="no label given and none defined by the format",
        )
    classes = _classes(info, label)
    if info.format == "mnist":
        arrays = catalog.load_images(name, use=use, purpose=purpose)
        lo, hi = info.schema.column("image").bounds or (0.0, 255.0)
        images = torch.from_numpy(arrays.images).float().clamp_(lo, hi)
        inputs = ((images - lo) / (hi - lo) * 2.0 - 1.0).unsqueeze(1)
        return DatasetTensors(
            inputs,
            _targets(arrays.labels.tolist(), classes, label),
            classes,
            label,
            (1, *arrays.images.shape[1:]),
        )
    frame = catalog.load_frame(name, use=use, purpose=purpose)
    require_consented_rows(name, frame)
    return frame_tensors(info, frame, label=label, features=features, encoder=encoder)


def frame_tensors(
    info: DatasetInfo,
    frame: Any,
    *,
    label: str,
    features: list[str] | None = None,
    encoder: FeatureEncoder | None = None,
) -> DatasetTensors:
    """Rows of ``info`` already loaded (checked by the caller) as tensors, with their persons."""
    classes = _classes(info, label)
    notes: list[str] = []
    if encoder is None:
        encoder, notes = _encoder(info, label, features)
    inputs = encoder.encode(frame)
    unit = info.schema.privacy_unit
    version = frame.attrs.get("veil.version") if hasattr(frame, "attrs") else None
    return DatasetTensors(
        inputs,
        _targets(frame[label].tolist(), classes, label),
        classes,
        label,
        (inputs.shape[1],),
        encoder,
        notes,
        persons=frame[unit].tolist() if unit and unit in frame.columns else None,
        version=None if version is None else int(version),
        consent=frame.attrs.get("veil.consent") if hasattr(frame, "attrs") else None,
    )


def _encoder(
    info: DatasetInfo, label: str, features: list[str] | None
) -> tuple[FeatureEncoder, list[str]]:
    schema = info.schema
    skip = {label, schema.privacy_unit}
    numeric: dict[str, tuple[float, float]] = {}
    categorical: dict[str, tuple[str, ...]] = {}
    undeclared: list[str] = []
    for column in features or [c for c in schema.column_names if c not in skip]:
        spec = schema.column(column)
        if column in skip or spec.kind == "identifier":
            raise InvalidInputError(
                f"'{column}' cannot be a feature",
                expected="a feature column",
                got="the label or the privacy unit",
            )
        if spec.kind == "numeric" and spec.bounds is not None:
            numeric[column] = spec.bounds
        elif spec.kind == "categorical" and spec.categories:
            categorical[column] = tuple(spec.categories)
        else:
            undeclared.append(column)
    if undeclared and features:
        raise SchemaError(
            "features without declared bounds or categories",
            expected="numeric features with bounds, categorical ones with categories",
            got=", ".join(undeclared),
            fix="declare them at registration (--bounds col=lo:hi, --categories col=a|b) or leave them out",
        )
    if not numeric and not categorical:
        raise SchemaError(
            f"'{info.name}' has no column usable as a feature",
            expected="columns with declared bounds or categories",
            got="none",
            fix="register the dataset with --bounds and --categories",
        )
    order = tuple(c for c in schema.column_names if c in numeric or c in categorical)
    notes = (
        [f"left out (no declared bounds or categories): {', '.join(undeclared)}"]
        if undeclared
        else []
    )
    return FeatureEncoder(numeric, categorical, order), notes


@dataclass
class TrainedModel:
    """The outcome of :func:`fit_private`."""

    name: str
    model: nn.Module
    card: PrivacyCard
    report: TrainingReport
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "card": self.card.to_dict(),
            "training": self.report.to_dict(),
            "notes": self.notes,
        }


def fit_private(
    catalog: Catalog,
    guard: BudgetGuard,
    registry: ModelRegistry,
    dataset: str,
    config: DPConfig,
    *,
    name: str,
    model: str = "mlp",
    hidden: tuple[int, ...] = (128,),
    label: str | None = None,
    features: list[str] | None = None,
    test: str | None = None,
    purpose: str = "model-training",
    test_epsilon: float = 0.1,
    progress: ProgressCallback | None = None,
) -> TrainedModel:
    """Train a DP model on ``dataset``: check everything, charge ``guard``, train, save with its card.

    ``guard`` is the budget gate: the workspace :class:`~veil.ledger.Ledger`
    (what ``veil train`` passes) or a :class:`~veil.ledger.LocalBudget`. The
    model (charged to ``dataset``) and its DP test accuracy (charged to
    ``test``) are one release: one transaction, recorded whole or not at all.

    The acting principal (``catalog.access``) needs ``budget.spend`` on
    ``dataset`` (``dataset.non_private`` for a non-private baseline) and on
    ``test``; both are checked before anything else. The saved model is
    recorded on the trail (``model.save``, linked to its ledger event).

    Raises:
        PermissionDeniedError: A missing grant (recorded; nothing is read,
            charged, trained or saved).
        BudgetExceededError: ``dataset`` or ``test`` cannot pay (nothing is
            charged, nothing is trained or saved).
    """
    _require_training(catalog.access, dataset, test, private=config.private, purpose=purpose)
    registry.check_name(name)
    registry.refuse_existing(name)
    info = catalog.get(dataset)
    rows_per_person = int(info.report.get("max_rows_per_unit", 1))
    if rows_per_person > 1:
        raise InvalidInputError(
            f"'{dataset}' has up to {rows_per_person} rows per person; DP-SGD here protects one row",
            expected="one row per person (record-level DP is person-level DP only then)",
            got=f"max {rows_per_person} rows per {info.schema.privacy_unit}",
            fix="aggregate to one row per person, or keep one row each, and register that table",
        )
    data = dataset_tensors(
        catalog, dataset, label=label, features=features, use=DataUse.MECHANISM, purpose=purpose
    )
    spec: dict[str, Any] = {
        "kind": model,
        "input_shape": list(data.input_shape),
        "n_classes": len(data.classes),
    }
    if model == "mlp":
        spec["hidden"] = list(hidden)
    net = build_model(spec)
    trainable = trainable_part(net)
    PerSampleClipper(trainable, config.max_grad_norm).close()  # refuses layers it cannot clip
    check_training_data(data.inputs, data.targets, len(data.classes))
    testing = None
    accuracy_query: LaplaceMechanism | None = None
    if test is not None:
        if test == dataset:
            raise InvalidInputError(
                "the test set is the training set",
                expected="a held-out registered dataset for --test",
                got=repr(test),
                fix="register held-out rows as their own dataset (e.g. MNIST's t10k split)",
            )
        # Half the test budget for the count of correct predictions, half for the histogram of
        # true labels (the majority-class rate a useless model matches); both have L1
        # sensitivity 1 under adding or removing one test record.
        accuracy_query = LaplaceMechanism(test_epsilon / 2, 1, integer=True)
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
    plan = plan_training(config, data.inputs.shape[0])
    charges: list[Charge] = []
    if config.private:
        charges.append(
            (
                dataset,
                plan.event(
                    f"DP-SGD model '{name}' ({model}) on '{dataset}'",
                    details={"model": name, "architecture": model, "label": data.label}
                    | _consent(data),
                ),
            )
        )
    if accuracy_query is not None and test is not None:
        # Test accuracy is a count over the test set's records: a DP count, charged to that set.
        test_event = PrivacyEvent(
            what=f"test accuracy of model '{name}' (correct predictions and the label "
            "histogram, discrete Laplace)",
            mechanisms=(accuracy_query.mechanism, accuracy_query.mechanism),
            operation="query",
            details={"model": name, "training_dataset": dataset} | _consent(testing),
        )
        charges.append((test, test_event))
    if charges:
        # Both charges together, as they will be made: refuses before the slow part.
        guard.preview_many(charges)
    # A fixed per-example front end (scattering) is pre-processing: applied once, no privacy cost.
    trainable, inputs = fixed_features(net, data.inputs, progress)
    baseline = None
    if not config.private:
        baseline = (
            dataset,
            f"NOT PRIVATE baseline model '{name}' ({model}) on '{dataset}'",
            {"model": name, "architecture": model, "label": data.label} | _consent(data),
        )
    tokens, membership = members_of(registry, info, data.persons)
    receipt, test_receipt = _charge(guard, charges, baseline=baseline, purpose=purpose)
    report = train(
        trainable, inputs, data.targets, plan, n_classes=len(data.classes), progress=progress
    )
    accounting = plan.accounting
    utility = _private_utility(net, testing, accuracy_query)
    card = PrivacyCard(
        model=name,
        dataset=dataset,
        dataset_sha256=info.content_sha256,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        private=config.private,
        epsilon=accounting.epsilon if accounting else float("inf"),
        delta=config.delta if accounting else 1.0,
        accountant="pld (dp_accounting, pessimistic)" if accounting else "none",
        epsilon_rdp=accounting.epsilon_rdp if accounting else None,
        epsilon_prv=accounting.epsilon_prv if accounting else None,
        neighbouring="add or remove one record"
        if info.schema.privacy_unit is None
        else f"add or remove one {info.schema.privacy_unit}",
        sampling="poisson" if config.private else "shuffle",
        sample_rate=plan.sample_rate,
        expected_batch_size=config.batch_size,
        max_grad_norm=config.max_grad_norm if config.private else None,
        noise_multiplier=accounting.noise_multiplier if accounting else None,
        steps=plan.steps,
        epochs=config.epochs,
        examples=plan.n_examples,
        secure_rng=report.secure_rng,
        ledger_event_id=receipt.event_id if receipt else None,
        ledger_seq=receipt.seq if receipt else None,
        architecture=_describe(spec),
        test_accuracy=utility.accuracy,
        test_majority_rate=utility.majority_rate,
        test_no_utility=utility.no_utility,
        test_epsilon=test_epsilon if testing else None,
        test_dataset=test,
        test_ledger_event_id=test_receipt.event_id if test_receipt else None,
        veil_version=__version__,
        dataset_version=data.version,
        membership=membership,
    )
    meta = {
        "spec": spec,
        "classes": list(data.classes),
        "label": data.label,
        "encoder": data.encoder.to_dict() if data.encoder else None,
        # Loss and accuracy on the training batches are exact (not private): they stay with the
        # trainer (progress bar, the returned report) and are not saved beside the model.
        "training": report.to_dict(diagnostics=False),
    }
    registry.save(name, net, meta, card, members=None if tokens is None else sorted(set(tokens)))
    record_save(catalog.access, card, info, purpose=purpose)
    return TrainedModel(name=name, model=net, card=card, report=report, notes=data.notes)


def _consent(data: DatasetTensors | None) -> dict[str, Any]:
    """The consent state a release's rows were filtered by, for its ledger event's details."""
    return {} if data is None or data.consent is None else {"consent": data.consent}


def _require_training(
    access: Access, dataset: str, test: str | None, *, private: bool, purpose: str
) -> None:
    """Refuse (and record) a run the acting principal may not make, before any row is read."""
    if private:
        access.require(Permission.BUDGET_SPEND, dataset, action="privacy.charge", purpose=purpose)
    else:
        access.require(
            Permission.NON_PRIVATE_USE, dataset, action="privacy.non_private", purpose=purpose
        )
    if test is not None:  # the DP test accuracy is charged to the test set
        access.require(Permission.BUDGET_SPEND, test, action="privacy.charge", purpose=purpose)


def _charge(
    guard: BudgetGuard,
    charges: list[Charge],
    *,
    baseline: tuple[str, str, dict[str, Any]] | None,
    purpose: str,
) -> tuple[Receipt, Receipt | None]:
    """Charge the run: the model's receipt, and its test accuracy's (``None`` without a test set).

    ``baseline`` (dataset, what, details) marks a non-private run; ``charges``
    then holds only the test accuracy, if any.
    """
    if baseline is None:
        # The model and its DP test accuracy are one release: one transaction, all or nothing.
        receipts = guard.charge_many(charges, purpose=purpose)
        return receipts[0], receipts[1] if len(receipts) > 1 else None
    # A non-private baseline spends no budget, but the history shows that it ran. Its test
    # accuracy (previewed already) is charged after the record, so that a charged accuracy
    # always has its baseline in the history; a refusal there (another release spent the test
    # budget since the preview) leaves only the record, which spends nothing.
    dataset, what, details = baseline
    receipt = guard.record_non_private(dataset, what, purpose=purpose, details=details)
    test_receipt = guard.charge_many(charges, purpose=purpose)[0] if charges else None
    return receipt, test_receipt


@dataclass(frozen=True)
class _Utility:
    accuracy: float | None = None
    majority_rate: float | None = None
    no_utility: bool | None = None


def _private_utility(
    net: nn.Module, testing: DatasetTensors | None, query: LaplaceMechanism | None
) -> _Utility:
    """Test accuracy and the majority-class rate, each from discrete-Laplace counts.

    The count of correct predictions and the histogram of true labels each have
    sensitivity 1 under adding or removing one test record (the histogram's
    cells are disjoint); the test set's size is treated as public (as the
    training set's is). The model has *no utility* when its accuracy is not
    distinguishable from always predicting the most common label: the gap is
    within the 95% half-widths of both noises plus the accuracy's sampling
    error (a normal 95% interval on the released accuracy, post-processing).
    """
    if testing is None or query is None or len(testing.targets) == 0:
        return _Utility()
    n = len(testing.targets)
    predictions = predict_logits(net, testing.inputs).argmax(1)
    correct = int((predictions == testing.targets).sum())
    accuracy = min(1.0, max(0.0, float(query.release([correct])[0]) / n))
    labels = torch.bincount(testing.targets, minlength=len(testing.classes))
    majority = min(1.0, max(0.0, float(query.release(labels.tolist()).max()) / n))
    noise = 2 * query.half_width(0.95) / n
    sampling = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1.0 / n) / n)
    return _Utility(accuracy, majority, accuracy - majority <= noise + sampling)


def _describe(spec: dict[str, Any]) -> str:
    shape = "x".join(str(s) for s in spec["input_shape"])
    if spec["kind"] == "mlp":
        widths = "-".join(str(h) for h in spec.get("hidden", []))
        return f"mlp {shape}-{widths}-{spec['n_classes']} (tanh)"
    if spec["kind"] == "scatternet":
        return f"scatternet {shape}: scattering J=2 L=8 + GroupNorm (fixed) -> linear -> {spec['n_classes']}"
    if spec["kind"] == "cnn":
        return f"cnn {shape} -> {spec['n_classes']} (2 conv + 2 linear, tanh)"
    return f"logistic regression {shape} -> {spec['n_classes']}"
