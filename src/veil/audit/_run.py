"""``audit_model``: every attack against one of the workspace's models.

The audit reads the model's privacy card and spec from the registry, the
training set (members) and a held-out set (non-members) from the catalog,
and trains reference models *the way the card says the model was trained*:
the same architecture, optimiser, epochs, clipping norm, noise multiplier and
sampling rate, on random halves of the audit's points. A DP model is thus
attacked with DP references, as LiRA's threat model requires.

The audit is an internal review by the data's custodian: it reads the raw
training data and spends no privacy budget, and its output (per-example
scores identify members) is as sensitive as the data. The report keeps
row positions, never record values.

An audit needs ``audit.run`` on the model's training set (owners and
auditors) and ``dataset.use`` on the held-out set, both checked before the
model or a row is read. It reads rows for the mechanism
(:attr:`~veil.data.DataUse.MECHANISM`: none come back), and the trail records
the model's load (``model.load``), each dataset read, and the audit itself
(``audit.run``: its outcome and summary numbers, never per-example data;
:mod:`veil.audit._records`).

The module runs past 500 lines because the audit's steps share one context
(:class:`_Context`) and read best in the order they run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.access import Outcome, Permission
from veil.audit._attribute import attribute_inference
from veil.audit._dpaudit import canary_audit
from veil.audit._extraction import extraction_curve
from veil.audit._fairness import fairness_metrics
from veil.audit._findings import AuditReport
from veil.audit._inversion import invert_classes
from veil.audit._membership import MIA_ATTACKS, membership_inference
from veil.audit._records import record_audit, record_load, summary_of
from veil.audit._stats import clopper_pearson
from veil.audit._targets import Classifier, Trainer, as_classifier
from veil.data import Catalog, DataUse
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["AUDIT_ATTACKS", "AuditReport", "audit_model", "veil_trainer"]

AUDIT_ATTACKS = ("mia", "attribute", "inversion", "extraction", "dp", "fairness")
_MIN_POINTS = 10
_BINARY = 2
_IMAGE_DIMS = 3


def veil_trainer(meta: dict[str, Any], card: dict[str, Any]) -> Trainer:
    """A trainer that repeats the card's training run on other data (for references and canaries).

    The sampling *rate* and the number of epochs are kept, so the run has the
    same steps and noise as the audited one; the references' noise comes from
    the secure generator (they need no seed) and their initial weights from
    the seed the attack gives.
    """
    import torch  # noqa: PLC0415 - optional extra

    from veil.train import (  # noqa: PLC0415 - loads torch
        DPConfig,
        TrainingPlan,
        account,
        build_model,
        train,
        trainable_part,
    )

    spec = meta["spec"]
    config = DPConfig.from_dict(meta["training"]["config"])
    n_classes = int(spec["n_classes"])
    rate = float(card["sample_rate"])
    sigma = float(card.get("noise_multiplier") or 0.0)

    def fit(x: npt.NDArray[Any], y: npt.NDArray[np.int64], seed: int) -> Classifier:
        n = len(y)
        batch = max(1, round(rate * n))
        cfg = replace(config, batch_size=batch, seed=None)
        steps_per_epoch = max(1, round(n / batch))
        accounting = None
        if config.private:
            cfg = replace(
                cfg, epsilon=None, noise_multiplier=sigma, delta=min(config.delta, 0.5 / n)
            )
            accounting = account(
                min(1.0, batch / n),
                sigma,
                steps_per_epoch * cfg.epochs,
                cfg.delta,
                prv=False,
            )
        plan = TrainingPlan(cfg, n, steps_per_epoch, accounting)
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the attacker's reference weights; not a privacy mechanism
            net = trainable_part(build_model(spec))
        train(
            net,
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y),
            plan,
            n_classes=n_classes,
        )
        return as_classifier(net)

    return fit


def _run_epsilon(meta: dict[str, Any], card: dict[str, Any], n: int) -> float:
    if not card.get("private"):
        return math.inf
    from veil.train import account  # noqa: PLC0415

    rate = float(card["sample_rate"])
    batch = max(1, round(rate * n))
    epochs = int(meta["training"]["config"]["epochs"])
    steps = max(1, round(n / batch)) * epochs
    return account(
        min(1.0, batch / n), float(card["noise_multiplier"]), steps, float(card["delta"]), prv=False
    ).epsilon


def _sample(n: int, cap: int | None, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _pick_attribute(info: Any, encoder: Any, wanted: str | None) -> tuple[str | None, str | None]:
    categorical = [] if encoder is None else [c for c in encoder.order if c in encoder.categorical]
    if wanted is not None:
        if wanted not in categorical:
            raise InvalidInputError(
                f"'{wanted}' is not a categorical feature of the model",
                expected=f"one of {', '.join(categorical) or '(none: the model has no categorical features)'}",
                got=repr(wanted),
                fix="pass --attribute COLUMN with a categorical column the model uses",
            )
        return wanted, None
    schema = info.schema
    for role in (schema.sensitive, schema.quasi_identifiers):
        for column in role:
            if column in categorical:
                return column, None
    if categorical:
        return categorical[
            0
        ], f"no sensitive column among the model's features: '{categorical[0]}' is used"
    return None, "the model has no categorical features: attribute inference and fairness skipped"


@dataclass
class _Context:
    """What every step of an audit needs: the model, the points, and who is a member."""

    catalog: Catalog
    meta: dict[str, Any]
    card: dict[str, Any]
    info: Any
    net: Any
    target: Classifier
    trainer: Trainer
    encoder: Any
    members_data: Any
    mem_idx: npt.NDArray[np.int64]
    non_idx: npt.NDArray[np.int64]
    non_x: npt.NDArray[np.float32]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    is_member: npt.NDArray[np.bool_]
    rng: np.random.Generator
    delta: float
    front_end: bool  # a fixed feature front end (scattering) sits before the trained head
    purpose: str = ""  # recorded with each read on the trail


def _check_request(attacks: tuple[str, ...], max_points: int | None) -> None:
    unknown = [a for a in attacks if a not in AUDIT_ATTACKS]
    if unknown or not attacks:
        raise InvalidInputError(
            "unknown attack",
            expected=f"a comma-separated subset of {','.join(AUDIT_ATTACKS)}",
            got=", ".join(unknown) or "none",
        )
    if max_points is not None and max_points < _MIN_POINTS:
        raise InvalidInputError(
            "--max-points too small", expected=f">= {_MIN_POINTS}", got=str(max_points)
        )


def _prepare(
    catalog: Catalog,
    saved: Any,
    *,
    train: str,
    test: str,
    max_points: int | None,
    seed: int,
    progress: ProgressCallback | None,
    purpose: str,
) -> _Context:
    import torch  # noqa: PLC0415 - optional extra

    from veil.train import FeatureEncoder, dataset_tensors, fixed_features  # noqa: PLC0415

    card = saved.card.to_dict()
    meta = saved.meta
    info = catalog.get(train)
    if train != saved.card.dataset or info.content_sha256 != saved.card.dataset_sha256:
        raise InvalidInputError(
            f"'{train}' is not the data model '{saved.name}' was trained on",
            expected=f"'{saved.card.dataset}' (sha256 {saved.card.dataset_sha256[:12]}…)",
            got=f"'{train}' (sha256 {info.content_sha256[:12]}…)",
            fix="membership is only known for the model's own training set: pass --train "
            f"{saved.card.dataset}, or omit it",
        )
    if test == train:
        raise InvalidInputError(
            "the test set is the training set",
            expected="a held-out dataset for --test (its rows are the non-members)",
            got=repr(test),
        )
    encoder = FeatureEncoder.from_dict(meta["encoder"]) if meta.get("encoder") else None
    members_data, others_data = (
        dataset_tensors(
            catalog,
            name,
            label=meta["label"],
            encoder=encoder,
            use=DataUse.MECHANISM,
            purpose=purpose,
        )
        for name in (train, test)
    )
    if (
        others_data.classes != tuple(meta["classes"])
        or others_data.input_shape != members_data.input_shape
    ):
        raise InvalidInputError(
            f"'{test}' does not match the model's inputs",
            expected=f"classes {meta['classes']} and input shape {members_data.input_shape}",
            got=f"classes {list(others_data.classes)} and input shape {others_data.input_shape}",
        )
    rng = np.random.default_rng(seed)
    mem_idx = _sample(len(members_data.targets), max_points, rng)
    non_idx = _sample(len(others_data.targets), max_points, rng)
    net = saved.model
    head, mem_x = fixed_features(net, members_data.inputs[mem_idx], progress)
    _, non_x = fixed_features(net, others_data.inputs[non_idx], progress)
    targets = torch.cat([members_data.targets[mem_idx], others_data.targets[non_idx]])
    return _Context(
        catalog=catalog,
        meta=meta,
        card=card,
        info=info,
        net=net,
        target=as_classifier(head),
        trainer=veil_trainer(meta, card),
        encoder=encoder,
        members_data=members_data,
        mem_idx=mem_idx,
        non_idx=non_idx,
        non_x=non_x.numpy(),
        x=torch.cat([mem_x, non_x]).numpy(),
        y=targets.numpy().astype(np.int64),
        is_member=np.concatenate([np.ones(len(mem_idx), bool), np.zeros(len(non_idx), bool)]),
        rng=rng,
        delta=float(card.get("delta") or 0.0) if card.get("private") else 0.0,
        front_end=head is not net,
        purpose=purpose,
    )


def _utility(ctx: _Context) -> dict[str, Any]:
    """Held-out accuracy against always predicting the most common class.

    A model trained with too little budget or data can predict one class for
    nearly every row; its privacy figures then describe a model nobody should
    deploy. The model is *useful* when the lower end of its accuracy's 95%
    Clopper-Pearson interval lies above the majority-class rate on the same rows.
    """
    pred = ctx.target.log_proba(ctx.non_x).argmax(axis=1)
    return _utility_figures(ctx.y[~ctx.is_member], pred, [str(c) for c in ctx.meta["classes"]])


def _utility_figures(
    truth: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], classes: list[str]
) -> dict[str, Any]:
    n = len(truth)
    correct = int((pred == truth).sum())
    counts = np.bincount(truth, minlength=len(classes))
    predicted = np.bincount(pred, minlength=len(classes))
    majority, top = int(counts.argmax()), int(predicted.argmax())
    low, high = clopper_pearson(correct, n, 0.05)
    majority_rate = float(counts[majority] / n)
    return {
        "rows": n,
        "accuracy": correct / n,
        "accuracy_ci95": [low, high],
        "majority_class": classes[majority],
        "majority_rate": majority_rate,
        "top_prediction": classes[top],
        "top_prediction_share": float(predicted[top] / n),
        "useful": low > majority_rate,
    }


def _tabular(
    report: AuditReport, ctx: _Context, attacks: tuple[str, ...], attribute: str | None
) -> None:
    """Attribute inference and fairness: they need the records, not only the encoded inputs."""
    wanted = {"attribute", "fairness"} & set(attacks)
    if not wanted:
        return
    if ctx.encoder is None:
        report.notes.append("attribute inference and fairness apply to tabular models; skipped")
        return
    chosen, note = _pick_attribute(ctx.info, ctx.encoder, attribute)
    if note:
        report.notes.append(note)
    if chosen is None:
        return
    use, purpose = DataUse.MECHANISM, ctx.purpose
    frame_train = ctx.catalog.load_frame(report.train, use=use, purpose=purpose)
    frame_train = frame_train.iloc[ctx.mem_idx]
    frame_test = ctx.catalog.load_frame(report.test, use=use, purpose=purpose)
    frame_test = frame_test.iloc[ctx.non_idx].reset_index(drop=True)
    if "attribute" in attacks:
        t0 = time.perf_counter()
        encoder = ctx.encoder
        report.attribute = attribute_inference(
            ctx.target,
            pd.concat([frame_train.reset_index(drop=True), frame_test], ignore_index=True),
            ctx.y,
            ctx.is_member,
            chosen,
            encode=lambda frame: encoder.encode(frame).numpy(),
            values=list(encoder.categorical[chosen]),
            seed=report.settings["seed"],
        )
        report.seconds["attribute"] = time.perf_counter() - t0
    if "fairness" in attacks:
        if len(ctx.meta["classes"]) != _BINARY:
            report.notes.append("fairness metrics are for binary classifiers; skipped")
            return
        known = frame_test[chosen].notna().to_numpy()  # rows without a group are left out
        report.fairness = fairness_metrics(
            ctx.y[~ctx.is_member][known],
            ctx.target.log_proba(ctx.non_x[known]).argmax(axis=1),
            frame_test[chosen][known].astype(str).to_numpy(),
            attribute=chosen,
            positive_class=str(ctx.meta["classes"][1]),
        )


def _canaries(
    report: AuditReport, ctx: _Context, canaries: int, progress: ProgressCallback | None
) -> None:
    """The one-run canary audit: the card's training run again, on all members plus canaries."""
    from veil.train import fixed_features  # noqa: PLC0415

    t0 = time.perf_counter()
    _, full_x = fixed_features(ctx.net, ctx.members_data.inputs, progress)
    m = min(canaries, len(ctx.non_idx))
    pick = ctx.rng.choice(len(ctx.non_idx), size=m, replace=False)
    rng, trainer = ctx.rng, ctx.trainer

    def retrain(xs: npt.NDArray[Any], ys: npt.NDArray[np.int64]) -> Classifier:
        return trainer(xs, ys, int(rng.integers(2**31)))

    report.dp = canary_audit(
        retrain,
        full_x.numpy(),
        ctx.members_data.targets.numpy().astype(np.int64),
        ctx.non_x[pick],
        ctx.y[~ctx.is_member][pick],
        n_classes=len(ctx.meta["classes"]),
        claimed_epsilon=report.claimed_epsilon,
        audit_run_epsilon=_run_epsilon(ctx.meta, ctx.card, len(ctx.members_data.targets) + m // 2),
        delta=ctx.delta,
        alpha=report.settings["alpha"],
        seed=report.settings["seed"],
        progress=progress,
    )
    report.seconds["dp_audit"] = time.perf_counter() - t0


def audit_model(
    catalog: Catalog,
    registry: Any,
    model: str,
    *,
    train: str | None = None,
    test: str,
    attacks: tuple[str, ...] = AUDIT_ATTACKS,
    mia_attacks: tuple[str, ...] = MIA_ATTACKS,
    references: int = 16,
    max_points: int | None = None,
    attribute: str | None = None,
    canaries: int = 500,
    extraction_budgets: tuple[int, ...] = (50, 200, 1000, 5000),
    alpha: float = 0.05,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    report_path: str | None = None,
) -> AuditReport:
    """Attack ``model`` (a registry name) with the chosen attacks; see :class:`AuditReport`.

    ``train`` must be the model's training set (default: the one on its card);
    ``test`` a held-out set from the same population. ``max_points`` caps the
    members and the non-members each (sampled with ``seed``). ``seed`` fixes
    the audit's own choices (samples, canaries, reference weights); no privacy
    guarantee depends on it. ``report_path``: where the caller writes the
    report, recorded on the trail with the audit's summary.

    Raises:
        PermissionDeniedError: The acting principal (``catalog.access``) holds
            no ``audit.run`` on the model's training set, or no
            ``dataset.use`` on ``test`` (recorded; nothing was read).
    """
    _check_request(attacks, max_points)
    access = catalog.access
    card = registry.card(model)  # the card says which data the model was trained on
    # A term of the consent vocabulary: an audit reads the rows the model was trained from, so
    # on a dataset under consent management it sees the persons who consent to model training.
    purpose = f"model-training: audit of model '{model}'"
    access.require(Permission.AUDIT_RUN, card.dataset, action="audit.run", purpose=purpose)
    access.require(Permission.DATASET_USE, test, action="dataset.read", purpose=purpose)
    started = time.perf_counter()
    saved = registry.load(model)
    record_load(access, saved.card, purpose)
    train = train or saved.card.dataset
    summary: dict[str, Any] = {
        "model": model,
        "train": train,
        "test": test,
        "attacks": list(attacks),
        "report": report_path,
    }
    try:
        report = _audit(
            catalog,
            saved,
            train=train,
            test=test,
            attacks=attacks,
            mia_attacks=mia_attacks,
            references=references,
            max_points=max_points,
            attribute=attribute,
            canaries=canaries,
            extraction_budgets=extraction_budgets,
            alpha=alpha,
            seed=seed,
            progress=progress,
            purpose=purpose,
        )
    except Exception as exc:
        summary["error"] = type(exc).__name__
        record_audit(access, saved.card, purpose, Outcome.FAILED, summary)
        raise
    report.seconds["total"] = time.perf_counter() - started
    record_audit(access, saved.card, purpose, Outcome.ALLOWED, {**summary, **summary_of(report)})
    return report


def _audit(
    catalog: Catalog,
    saved: Any,
    *,
    train: str,
    test: str,
    attacks: tuple[str, ...],
    mia_attacks: tuple[str, ...],
    references: int,
    max_points: int | None,
    attribute: str | None,
    canaries: int,
    extraction_budgets: tuple[int, ...],
    alpha: float,
    seed: int,
    progress: ProgressCallback | None,
    purpose: str,
) -> AuditReport:
    """The audit proper, once the roles were checked and the model loaded."""
    model = saved.name
    ctx = _prepare(
        catalog,
        saved,
        train=train,
        test=test,
        max_points=max_points,
        seed=seed,
        progress=progress,
        purpose=purpose,
    )
    report = AuditReport(
        model=model,
        card=ctx.card,
        train=train,
        test=test,
        settings={
            "attacks": list(attacks),
            "references": references,
            "members": len(ctx.mem_idx),
            "non_members": len(ctx.non_idx),
            "alpha": alpha,
            "seed": seed,
            "architecture": ctx.card.get("architecture"),
            "note": "reference models repeat the card's training run (same epochs, sampling "
            "rate, clipping and noise) on random halves of the audit's points",
        },
    )
    if ctx.front_end:
        report.notes.append(
            "the model's fixed front end (scattering) is applied once; attacks and references "
            "work on its features (label-only noise is added to the features)"
        )
    if len(ctx.members_data.input_shape) == _IMAGE_DIMS:
        report.image_shape = tuple(ctx.members_data.input_shape)
    elif ctx.info.source == "sklearn:digits":  # 64 pixel columns of 8x8 images
        report.image_shape = (1, 8, 8)
    if "mia" in attacks:
        t0 = time.perf_counter()
        report.membership, _ = membership_inference(
            ctx.target,
            ctx.x,
            ctx.y,
            ctx.is_member,
            trainer=ctx.trainer,
            references=references,
            attacks=mia_attacks,
            delta=ctx.delta,
            alpha=alpha,
            seed=seed,
            progress=progress,
        )
        report.seconds["membership"] = time.perf_counter() - t0
    report.utility = _utility(ctx)
    _tabular(report, ctx, attacks, attribute)
    if "inversion" in attacks:
        t0 = time.perf_counter()
        report.inversion = invert_classes(
            ctx.net,
            ctx.members_data.inputs[ctx.mem_idx].numpy(),
            ctx.members_data.targets[ctx.mem_idx].numpy(),
            len(ctx.meta["classes"]),
        )
        report.seconds["inversion"] = time.perf_counter() - t0
    if "extraction" in attacks:
        t0 = time.perf_counter()
        order = ctx.rng.permutation(len(ctx.non_idx))
        half = len(order) // 2
        report.extraction = extraction_curve(
            ctx.target,
            ctx.non_x[order[:half]],
            ctx.non_x[order[half:]],
            ctx.y[~ctx.is_member][order[half:]],
            budgets=extraction_budgets,
            seed=seed,
            progress=progress,
        )
        report.seconds["extraction"] = time.perf_counter() - t0
    if "dp" in attacks:
        _canaries(report, ctx, canaries, progress)
    return report
