"""Model extraction: how many queries buy a copy of the model?

The attacker holds unlabelled data from the same population (here: half of
the non-members), sends ``budget`` of them to the model's API, and trains a
surrogate (a small MLP) on the answers (Tramèr et al. 2016; Orekondy et al.'s
"knockoff" setting with in-distribution queries). **Fidelity** is the share
of fresh inputs on which surrogate and model agree; **accuracy** is the
surrogate's on the true labels. Output defences change what each answer
reveals:

* ``none`` — the full probability vector;
* ``top1`` — only the label;
* ``round1`` — probabilities rounded to one decimal;
* ``noise`` — probabilities plus Gaussian noise (std 0.1), clipped and
  renormalised. (The audit simulates this defence with its own seeded
  generator: it measures utility to an attacker, it is not a privacy
  mechanism.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.audit._targets import Classifier
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = ["DEFENCES", "ExtractionResult", "extraction_curve"]

DEFENCES = ("none", "top1", "round1", "noise")


@dataclass(frozen=True)
class ExtractionResult:
    """Fidelity and accuracy of surrogates, per defence and query budget."""

    budgets: list[int]
    fidelity: dict[str, list[float]] = field(default_factory=dict)
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    victim_accuracy: float = float("nan")
    evaluation_points: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "surrogate": "MLP (64 tanh units) trained on the answers (soft labels), Adam",
            "budgets": self.budgets,
            "fidelity": self.fidelity,
            "accuracy": self.accuracy,
            "victim_accuracy": self.victim_accuracy,
            "evaluation_points": self.evaluation_points,
        }


def _defend(
    proba: npt.NDArray[np.float64], defence: str, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    if defence == "none":
        return proba
    if defence == "top1":
        return np.asarray(np.eye(proba.shape[1])[proba.argmax(axis=1)], dtype=np.float64)
    if defence == "round1":
        out = np.round(proba, 1)
    else:
        jitter = rng.normal(0.0, 0.1, size=proba.shape)  # not-private: the simulated defence
        out = np.clip(proba + jitter, 0.0, None)
    total = out.sum(axis=1, keepdims=True)
    uniform = np.full_like(out, 1.0 / out.shape[1])
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)


def _fit_surrogate(
    x: npt.NDArray[np.float32], soft: npt.NDArray[np.float64], seed: int, epochs: int
) -> Any:
    import torch  # noqa: PLC0415 - optional extra
    from torch import nn  # noqa: PLC0415

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.Tanh(), nn.Linear(64, soft.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt = torch.from_numpy(x)
    st = torch.from_numpy(soft.astype(np.float32))
    batch = 64
    steps = max(200, epochs * max(1, len(x) // batch))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=generator)
        opt.zero_grad()
        loss = -(st[idx] * torch.log_softmax(net(xt[idx]), dim=1)).sum(dim=1).mean()
        loss.backward()
        opt.step()
    return net


def extraction_curve(
    target: Classifier,
    query_pool: npt.NDArray[Any],
    eval_x: npt.NDArray[Any],
    eval_y: npt.NDArray[np.int64],
    *,
    budgets: Sequence[int] = (50, 200, 1000, 5000),
    defences: Sequence[str] = DEFENCES,
    epochs: int = 30,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> ExtractionResult:
    """Train surrogates from ``budget`` answers of ``target`` for every defence and budget."""
    import torch  # noqa: PLC0415

    bad = [d for d in defences if d not in DEFENCES]
    if bad:
        raise InvalidInputError(
            "unknown output defence", expected=", ".join(DEFENCES), got=", ".join(bad)
        )
    pool = np.asarray(query_pool, dtype=np.float32).reshape(len(query_pool), -1)
    evaluation = np.asarray(eval_x, dtype=np.float32).reshape(len(eval_x), -1)
    usable = sorted({min(int(b), len(pool)) for b in budgets if int(b) > 0})
    if not usable or len(evaluation) == 0:
        raise InvalidInputError(
            "model extraction needs query and evaluation points",
            expected="a non-empty query pool and evaluation set",
            got=f"{len(pool)} query points, {len(evaluation)} evaluation points",
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7]))  # a stream of its own
    order = rng.permutation(len(pool))
    answers = np.exp(target.log_proba(np.asarray(query_pool)[order]))
    victim = target.log_proba(np.asarray(eval_x)).argmax(axis=1)
    result = ExtractionResult(
        budgets=usable,
        victim_accuracy=float((victim == eval_y).mean()),
        evaluation_points=len(evaluation),
    )
    total, done = len(usable) * len(defences), 0
    for defence in defences:
        seen = _defend(answers, defence, np.random.default_rng(seed + 1))
        fid, acc = [], []
        for budget in usable:
            net = _fit_surrogate(pool[order[:budget]], seen[:budget], seed, epochs)
            with torch.no_grad():
                guess = net(torch.from_numpy(evaluation)).argmax(dim=1).numpy()
            fid.append(float((guess == victim).mean()))
            acc.append(float((guess == eval_y).mean()))
            done += 1
            detail = f"{defence} {budget}"
            emit(progress, "model extraction", done, total, unit="surrogates", detail=detail)
        result.fidelity[defence] = fid
        result.accuracy[defence] = acc
    return result
