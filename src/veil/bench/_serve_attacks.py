"""Attacks for ``veil bench serve``, all through the gateway's HTTP endpoint.

* **Extraction** (issue 24's table). The attacker knows each Adult column's marginal
  distribution (published census tables) and nothing of their joint: it draws every
  column of a query independently from its marginal (Tramèr et al., USENIX Security
  2016), sends the queries in batches, and trains a surrogate on the answers with
  :func:`veil.audit.extraction_curve` (the audit's surrogate, unchanged). The target
  the curve sees replays *what the gateway answered*: label answers as one-hot vectors,
  probabilities as sent (rounded, noisy) and renormalised. Agreement is measured on
  Adult's test rows against the model's own labels, read in-process (the defender's
  view): a noisy answer must not blur the yardstick. With the per-key budget the
  gateway refuses the attacker's further requests, and the surrogate is trained on the
  answers it did get.
* **Monitor**: benign keys replay Adult's test file, attacker keys send marginal
  samples; a key counts as flagged when a ``serve.alert`` trail entry names it.
* **Label-only membership** on a DP-SGD model: the "gap" attack (a record is a member
  when the model labels it correctly) and the augmentation attack of Choquette-Choo
  et al. (ICML 2021: the share of perturbed copies labelled correctly), both scored by
  ROC AUC on training rows (members) against test rows (non-members).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.errors import InvalidInputError

__all__ = [
    "Adult",
    "Answers",
    "MarginalSampler",
    "Replay",
    "answers_as_proba",
    "ask",
    "auc",
    "auc_standard_error",
    "augment",
    "json_records",
    "load_adult",
]

LABEL = "income"
# Columns an attacker perturbs in the augmentation attack, with the step of each (a
# census answer's natural granularity); categorical columns are redrawn from the
# marginal with a small probability.
_NUMERIC_STEPS = {"age": 2, "hours_per_week": 5, "education_num": 1}
_CATEGORY_FLIP = 0.1
# Rate-limit answers an attacker waits out before giving up.
_MAX_WAITS = 1000


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON objects of plain ints, floats, strings and nulls (no label column)."""
    body = frame.drop(columns=[LABEL], errors="ignore")
    out: list[dict[str, Any]] = []
    for row in body.itertuples(index=False):
        record: dict[str, Any] = {}
        for name, value in zip(body.columns, row, strict=True):
            if isinstance(value, float | np.floating) and not np.isfinite(value):
                record[name] = None
            elif isinstance(value, np.integer):
                record[name] = int(value)
            elif isinstance(value, np.floating):
                record[name] = float(value)
            elif value is None or value is pd.NA:
                record[name] = None
            else:
                record[name] = value
        out.append(record)
    return out


class MarginalSampler:
    """Draws rows whose columns are independent draws from each column's marginal."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.drop(columns=[LABEL], errors="ignore").reset_index(drop=True)
        if self.frame.empty:
            raise InvalidInputError(
                "marginal sampling needs rows", expected="a non-empty frame", got="no rows"
            )

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """``n`` rows; each column's values drawn with replacement from that column alone."""
        columns = {
            name: self.frame[name].to_numpy()[rng.integers(0, len(self.frame), size=n)]
            for name in self.frame.columns
        }
        return pd.DataFrame(columns)


def augment(frame: pd.DataFrame, copies: int, rng: np.random.Generator) -> pd.DataFrame:
    """``copies`` perturbed versions of each row (row-major: row 0's copies first).

    Numeric columns move by a few natural steps; each categorical column is redrawn
    from its marginal in this frame with probability 0.1. The label is kept.
    """
    repeated = frame.loc[frame.index.repeat(copies)].reset_index(drop=True)
    n = len(repeated)
    for name, step in _NUMERIC_STEPS.items():
        if name in repeated.columns:
            moved = repeated[name].to_numpy() + step * rng.integers(-1, 2, size=n)
            repeated[name] = np.clip(moved, frame[name].min(), frame[name].max())
    for name in repeated.columns:
        if name == LABEL or name in _NUMERIC_STEPS or repeated[name].dtype.kind in "iuf":
            continue
        flip = rng.random(n) < _CATEGORY_FLIP
        pool = frame[name].to_numpy()
        values = repeated[name].to_numpy(dtype=object)
        values[flip] = pool[rng.integers(0, len(pool), size=int(flip.sum()))]
        repeated[name] = values
    return repeated


def auc(members: npt.ArrayLike, non_members: npt.ArrayLike) -> float:
    """ROC AUC of "higher score means member" (Mann-Whitney, ties count one half)."""
    a = np.asarray(members, dtype=np.float64)
    b = np.asarray(non_members, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    scores = np.concatenate([a, b])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def auc_standard_error(value: float, members: int, non_members: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC estimate."""
    q1 = value / (2 - value)
    q2 = 2 * value * value / (1 + value)
    var = (
        value * (1 - value)
        + (members - 1) * (q1 - value * value)
        + (non_members - 1) * (q2 - value * value)
    ) / (members * non_members)
    return float(np.sqrt(max(var, 0.0)))


@dataclass
class Answers:
    """What the gateway answered one key: a probability row per answered record."""

    proba: npt.NDArray[np.float64]
    answered: int
    refused: int
    refusal: str | None


def answers_as_proba(
    predictions: Sequence[Mapping[str, Any]], classes: Sequence[str]
) -> npt.NDArray[np.float64]:
    """Probability rows from predict answers: a label becomes one-hot; probabilities as sent.

    Probabilities the gateway shaped (rounded, noisy, top-k) are clipped at 0 and
    renormalised; a row of zeros becomes uniform, the attacker's best guess.
    """
    index = {str(c): i for i, c in enumerate(classes)}
    out = np.zeros((len(predictions), len(classes)), dtype=np.float64)
    for row, answer in enumerate(predictions):
        probabilities = answer.get("probabilities")
        top = answer.get("top")
        if isinstance(probabilities, Mapping) and probabilities:
            for name, p in probabilities.items():
                if str(name) in index and p is not None:
                    out[row, index[str(name)]] = max(float(p), 0.0)
        elif isinstance(top, list) and top:
            for item in top:
                out[row, index[str(item["label"])]] = max(float(item["probability"]), 0.0)
        else:
            out[row, index[str(answer["label"])]] = 1.0
    total = out.sum(axis=1, keepdims=True)
    uniform = np.full_like(out, 1.0 / max(len(classes), 1))
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)


def ask(
    client: Any,
    model: str,
    token: str,
    records: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    *,
    batch: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> Answers:
    """Send ``records`` to ``POST /v1/models/{model}/predict`` in batches until refused.

    The attacker sizes each batch to the ``records_left`` the last answer reported (a
    count budget refuses a whole batch that would pass it), so it gets every record the
    budget allows. The first refusal (the count budget spent, a suspension) ends the run,
    as an attacker who is told "no" would stop; later records count as refused. A rate
    limit (429) is waited out as its ``retry_after`` says.
    """
    from veil.bench._serve_load import error_code, post_json  # noqa: PLC0415

    rows: list[npt.NDArray[np.float64]] = []
    answered = 0
    refusal: str | None = None
    left: int | None = None
    path = f"/v1/models/{model}/predict"
    waits = 0
    while answered < len(records):
        size = batch if left is None else max(1, min(batch, left))
        chunk = list(records[answered : answered + size])
        status, body = post_json(client, path, {"records": chunk}, token)
        if status == 429 and waits < _MAX_WAITS:  # noqa: PLR2004 - a rate limit: wait, retry
            error = body.get("error") or {}
            wait = float((error.get("details") or {}).get("retry_after", 1.0))
            time.sleep(min(max(wait, 0.05), 5.0))
            waits += 1
            continue
        if status >= 300:  # noqa: PLR2004
            refusal = error_code(status, body)
            break
        rows.append(answers_as_proba(body["predictions"], classes))
        answered += len(chunk)
        left = body.get("records_left")
        if on_batch is not None:
            on_batch(answered)
    proba = np.concatenate(rows) if rows else np.zeros((0, len(classes)))
    return Answers(proba=proba, answered=answered, refused=len(records) - answered, refusal=refusal)


class Replay:
    """A :class:`veil.audit.Classifier` that replays the gateway's answers.

    ``extraction_curve`` asks its target twice: for the query pool (answered here from
    what the gateway sent, looked up row by row) and for the evaluation rows (answered
    by ``truth``, the model's own log-probabilities read in-process).
    """

    def __init__(
        self,
        pool: npt.NDArray[np.float32],
        proba: npt.NDArray[np.float64],
        evaluation: npt.NDArray[np.float32],
        truth: npt.NDArray[np.float64],
    ) -> None:
        self._index: dict[bytes, int] = {}
        for i, row in enumerate(np.ascontiguousarray(pool, dtype=np.float32)):
            self._index.setdefault(row.tobytes(), i)
        self._log = np.log(np.clip(proba, 1e-12, 1.0))
        self._evaluation = np.ascontiguousarray(evaluation, dtype=np.float32)
        self._truth = truth

    def log_proba(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        if rows.shape == self._evaluation.shape and np.array_equal(rows, self._evaluation):
            return self._truth
        try:
            return self._log[[self._index[row.tobytes()] for row in rows]]
        except KeyError:
            raise InvalidInputError(
                "the replayed target was asked about a row the gateway never answered",
                expected="rows of the query pool or the evaluation set",
                got=f"{len(rows)} rows",
            ) from None


# ---------------------------------------------------------------- Adult, as the attacks see it
@dataclass(frozen=True)
class Adult:
    """Adult as the attacks use it: frames, the model's encoder, classes, in-process truth."""

    train: pd.DataFrame
    test: pd.DataFrame
    encode: Callable[[pd.DataFrame], npt.NDArray[np.float32]]
    classes: tuple[str, ...]
    log_proba: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]
    columns: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """``frame``'s rows as the model takes them: its columns only, unknown categories null."""
        out = json_records(frame[list(self.columns)])
        for record in out:
            for name, allowed in self.categories.items():
                if record[name] is not None and str(record[name]) not in allowed:
                    record[name] = None
        return out

    def labels(self, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.asarray([index[str(v)] for v in frame[LABEL]], dtype=np.int64)


def load_adult(home: Path, model: str, train_file: Path, test_file: Path) -> Adult:
    """Adult's frames and ``model`` read in-process from the workspace (the defender's view)."""
    from veil.audit import as_classifier  # noqa: PLC0415
    from veil.data import load_table  # noqa: PLC0415
    from veil.train import FeatureEncoder, ModelRegistry  # noqa: PLC0415
    from veil.workspace import Workspace  # noqa: PLC0415

    saved = ModelRegistry.for_workspace(Workspace(home)).load(model)
    encoder = FeatureEncoder.from_dict(saved.meta["encoder"])
    target = as_classifier(saved.model)

    def encode(frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        return np.asarray(encoder.encode(frame).numpy(), dtype=np.float32)

    return Adult(
        train=load_table(train_file, format="adult"),
        test=load_table(test_file, format="adult"),
        encode=encode,
        classes=tuple(str(c) for c in saved.meta["classes"]),
        log_proba=target.log_proba,
        columns=tuple(encoder.order),
        categories={k: tuple(str(c) for c in v) for k, v in encoder.categorical.items()},
    )
