"""``veil bench unlearning``: SISA's speed and accuracy, forgetting checked by LiRA, erase time.

The goals of issue 23, each measured through Veil's own APIs in a scratch
workspace:

(a) unlearning one person from a SISA ensemble (``--shards``, default 20)
    takes at most 1/10 of the time of fully retraining a single model on all
    the data (the mean over ``timed`` persons, one at a time);
(b) the ensemble's test accuracy is within 1.5 points of the single model's;
(c) after unlearning ``--erase`` persons, offline LiRA (reference ensembles
    that never saw them) scores them against the unlearned model as it does
    against an ensemble retrained from scratch without them: AUC within 0.02.
    The AUC against the model before unlearning is reported beside them (a
    non-private model should remember its members);
(d) ``veil erase`` on a generated 1,000,000-row managed dataset takes under 10 s.

(a)-(c) run on UCI Adult and MNIST (:mod:`veil.bench._unlearning_run`), (d)
on synthetic rows (:mod:`veil.bench._unlearning_erase`). ``--tiny`` shrinks
every size so the whole benchmark runs in seconds (a test runs it).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.bench._common import machine
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["UnlearningResult", "run_unlearning_benchmark"]

GOAL_RATIO = 0.1
GOAL_ACCURACY_POINTS = 1.5
GOAL_AUC_GAP = 0.02
GOAL_ERASE_SECONDS = 10.0
DATASETS = ("adult", "mnist")
PERSONS_NOTE = (
    "Adult and MNIST are registered as reference datasets without a person column: SISA names "
    "each row a person (by position), and unlearning calls veil.train.unlearn_sisa directly; "
    "the erase timing goes through veil.governance.erase on a managed table"
)

_FULL: dict[str, Any] = {
    "train": None,
    "test": None,
    "references": 8,
    "non_members": 2000,
    "timed": 3,
}
_TINY: dict[str, Any] = {
    "train": 1200,
    "test": 400,
    "references": 2,
    "non_members": 200,
    "timed": 1,
    "shards": 4,
    "slices": 2,
    "erase": 20,
    "erase_rows": 20_000,
    "epochs": 2,
}


@dataclass(frozen=True, kw_only=True)
class UnlearningResult(BenchResult):
    """``veil bench unlearning``: one row per dataset, the erase timing, and the goals."""

    benchmark: str = "unlearning"
    parameters: Mapping[str, Any]
    datasets: tuple[Mapping[str, Any], ...]
    erase: Mapping[str, Any] | None
    goals: Mapping[str, Any]
    machine: Mapping[str, Any]
    seconds: float

    def view(self) -> View:
        """Speed and accuracy, the membership test, then the erase time and the goals."""
        p = self.parameters
        speed = Table(
            title=f"SISA {p['shards']} shards x {p['slices']} slices vs one model",
            columns=(
                Column("dataset", justify="left"),
                Column("rows", fixed(",")),
                Column("full retrain s", fixed(".2f")),
                Column("unlearn 1 person s", fixed(".3f")),
                Column("ratio", fixed(".3f")),
                Column("single acc", fixed(".2%")),
                Column("SISA acc", fixed(".2%")),
                Column("gap (points)", fixed("+.2f")),
            ),
            rows=tuple(
                (
                    d["dataset"],
                    d["rows"],
                    d["full_training_seconds"],
                    d["unlearn_one_mean_seconds"],
                    d["unlearn_ratio"],
                    d["single_accuracy"],
                    d["sisa_accuracy"],
                    d["accuracy_gap_points"],
                )
                for d in self.datasets
            ),
        )
        mia = Table(
            title=f"Offline LiRA on {p['erase']} erased persons vs held-out non-members "
            f"({p['references']} reference ensembles)",
            columns=(
                Column("dataset", justify="left"),
                Column("AUC before", fixed(".3f")),
                Column("AUC unlearned", fixed(".3f")),
                Column("AUC retrained", fixed(".3f")),
                Column("|unlearned - retrained|", fixed(".3f")),
                Column("before", justify="left"),
                Column("unlearned", justify="left"),
            ),
            rows=tuple(
                (
                    d["dataset"],
                    d["auc_before"],
                    d["auc_unlearned"],
                    d["auc_retrained"],
                    _gap(d),
                    d["before_verdict"],
                    d["unlearned_verdict"],
                )
                for d in self.datasets
            ),
        )
        blocks: list[Table | Note] = [speed, mia]
        if self.erase is not None:
            e = self.erase
            blocks.append(
                Note(
                    f"veil erase on a {e['rows']:,}-row managed dataset: {e['seconds']:.2f} s "
                    f"(goal < {GOAL_ERASE_SECONDS:g} s)"
                )
            )
        blocks.append(
            Table(
                title="Goals",
                columns=(
                    Column("goal", justify="left"),
                    Column("dataset", justify="left"),
                    Column("measured", justify="left"),
                    Column("state", justify="left"),
                ),
                rows=tuple(
                    (g["goal"], g["dataset"], g["measured"], verdict(g["met"]))
                    for g in self.goals["checks"]
                ),
            )
        )
        blocks.append(
            Note(
                "Times are whole calls (load, encode, train, save). Ratio = unlearning one "
                "person / retraining one model on all rows. AUCs: erased persons vs rows the "
                "model never saw; 0.5 means 'scored like a non-member'. " + PERSONS_NOTE + "."
            )
        )
        return tuple(blocks)


def _gap(row: Mapping[str, Any]) -> float | None:
    a, b = row.get("auc_unlearned"), row.get("auc_retrained")
    return None if a is None or b is None else abs(a - b)


def _goals(
    datasets: Sequence[Mapping[str, Any]], erase: Mapping[str, Any] | None
) -> dict[str, Any]:
    checks = []
    for d in datasets:
        name = d["dataset"]
        checks += [
            {
                "goal": f"unlearning 1 person <= {GOAL_RATIO:g} x full retraining",
                "dataset": name,
                "measured": f"{d['unlearn_ratio']:.3f} ({ratio(1 / d['unlearn_ratio'])} faster)",
                "met": d["unlearn_ratio"] <= GOAL_RATIO,
            },
            {
                "goal": f"SISA accuracy within {GOAL_ACCURACY_POINTS:g} points of one model",
                "dataset": name,
                "measured": f"{d['accuracy_gap_points']:+.2f} points",
                "met": d["accuracy_gap_points"] <= GOAL_ACCURACY_POINTS,
            },
            {
                "goal": f"LiRA AUC unlearned within {GOAL_AUC_GAP:g} of retrained",
                "dataset": name,
                "measured": f"|{d['auc_unlearned']:.3f} - {d['auc_retrained']:.3f}| = {_gap(d):.3f}",
                "met": (_gap(d) or math.inf) <= GOAL_AUC_GAP,
            },
            {
                "goal": "before unlearning, erased members distinguishable (non-private model)",
                "dataset": name,
                "measured": f"AUC {d['auc_before']:.3f}: {d['before_verdict']}",
                "met": d["before_verdict"].startswith("distinguishable"),
            },
        ]
    if erase is not None:
        checks.append(
            {
                "goal": f"veil erase on {erase['rows']:,} rows < {GOAL_ERASE_SECONDS:g} s",
                "dataset": "synthetic",
                "measured": f"{erase['seconds']:.2f} s",
                "met": erase["seconds"] < GOAL_ERASE_SECONDS,
            }
        )
    return {
        "unlearn_ratio_at_most": GOAL_RATIO,
        "accuracy_gap_points_at_most": GOAL_ACCURACY_POINTS,
        "auc_gap_at_most": GOAL_AUC_GAP,
        "erase_seconds_under": GOAL_ERASE_SECONDS,
        "checks": checks,
    }


def run_unlearning_benchmark(
    *,
    data: Path,
    datasets: Sequence[str] = DATASETS,
    shards: int | None = None,
    slices: int | None = None,
    erase: int | None = None,
    erase_rows: int | None = None,
    references: int | None = None,
    epochs: int | None = None,
    tiny: bool = False,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> UnlearningResult:
    """Run goals (a)-(c) on each of ``datasets`` and (d) on ``erase_rows`` rows (0: skip it).

    Unset sizes take the full benchmark's values (20 shards, 5 slices, 100
    erased persons, 1,000,000 rows to erase from, 8 reference ensembles), or
    the tiny ones with ``tiny``.
    """
    from veil.bench._unlearning_erase import time_erase  # noqa: PLC0415 - pandas, pyarrow
    from veil.bench._unlearning_run import run_dataset  # noqa: PLC0415 - torch

    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise InvalidInputError(
            "unknown dataset",
            expected="adult, mnist or both",
            got=", ".join(unknown) or "none",
            fix="pass --dataset adult, --dataset mnist or --dataset both",
        )
    size: dict[str, Any] = {**_FULL, **(_TINY if tiny else {})}
    chosen: dict[str, Any] = {
        "shards": shards or size.get("shards", 20),
        "slices": slices or size.get("slices", 5),
        "erase": erase or size.get("erase", 100),
        "erase_rows": size.get("erase_rows", 1_000_000) if erase_rows is None else erase_rows,
        "references": references or size["references"],
        "epochs": epochs or size.get("epochs"),
    }
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-unlearning-") as tmp:
        for name in datasets:
            run = run_dataset(
                data,
                name,
                Path(tmp),
                shards=chosen["shards"],
                slices=chosen["slices"],
                erase=chosen["erase"],
                timed=size["timed"],
                references=chosen["references"],
                non_members=size["non_members"],
                train_rows=size["train"],
                test_rows=size["test"],
                epochs=chosen["epochs"],
                seed=seed,
                progress=progress,
            )
            rows.append(run.figures)
        erase_figures = (
            time_erase(Path(tmp) / "erase", chosen["erase_rows"], seed=seed, progress=progress)
            if chosen["erase_rows"]
            else None
        )
    return UnlearningResult(
        parameters={
            **size,
            **chosen,
            "datasets": list(datasets),
            "tiny": tiny,
            "seed": seed,
            "persons": PERSONS_NOTE,
        },
        datasets=tuple(rows),
        erase=erase_figures,
        goals=_goals(rows, erase_figures),
        machine=machine(),
        seconds=time.perf_counter() - started,
    )
