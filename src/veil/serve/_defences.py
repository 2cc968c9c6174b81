"""What a served model's answer reveals: output shaping and private labels, on plain arrays.

Two kinds of defence, with different claims:

**Output shaping** (``label``, ``top_k``, ``probabilities`` with ``temperature``,
``noise`` and ``decimals``) reduces what one answer says about the model's decision
surface. It slows extraction and confidence-based membership inference; it is
*not* differential privacy and makes no epsilon claim. Measured on a UCI Adult
logistic regression (FIELD-NOTES.md, issue 24), an attacker sampling column
marginals reaches 99.6 % agreement with full probabilities after ~109 queries,
97.3 % with 2-decimal rounding after 1,000, and 99.7 % with labels only after
20,000: shaping buys queries, and the per-key count budget bounds them. The steps,
in order, on each row of probabilities ``p``:

1. ``temperature`` T: ``softmax(log p / T)``. T > 1 flattens the distribution
   toward uniform (T < 1 sharpens it); the argmax never moves.
2. ``noise``: Laplace (scale b) or Gaussian (sigma) added to every probability,
   then clipped to [0, 1] and renormalised to sum 1 (a row clipped to all zeros
   becomes uniform). The noise comes from :class:`veil._random.SecureRandom`
   (AES-CTR, keyed from the OS), not OpenDP's exact samplers, because this noise
   carries no DP claim that their floating-point exactness would protect, and they
   cost ~0.6 ms (Laplace) to ~1 ms (Gaussian) per 20 values and 21-51 ms per 1,000
   on this machine, against 0.03 ms here: a 100-record answer of 10 classes would
   spend ten times the gateway's whole 3 ms budget.
3. The label is the argmax of the shaped row, so it never disagrees with the
   probabilities beside it.
4. ``top_k``: the k most probable classes, with their shaped probabilities **not
   renormalised** over the k: a top-1 answer carries the model's confidence, and
   the k values sum to less than 1 by the mass of the classes left out.
5. ``decimals``: each reported probability rounded (half to even); rounded rows
   need not sum to exactly 1.

**Private labels** (``private_label``, SISA ensembles only) *are* differentially
private with respect to the training set. A SISA ensemble trains each shard on
a disjoint set of persons (:func:`veil.train.assign_persons`), so adding or
removing one person changes one shard's model and so at most one vote: the
vote histogram moves by -1 in one class and +1 in another, an L1 sensitivity
of 2. Releasing the histogram with Laplace noise of scale 2/epsilon is the
Laplace mechanism, epsilon-DP (Dwork and Roth, "The Algorithmic Foundations of
Differential Privacy", 2014, Thm. 3.6); reporting only its argmax is
post-processing (Prop. 2.1). This is PATE's noisy aggregation (Papernot et al.,
"Semi-supervised Knowledge Transfer for Deep Learning from Private Training
Data", ICLR 2017, Sec. 3.1: Laplace of scale 1/gamma is 2 gamma-DP per answer).
The guarantee holds for each answer whatever the query, so answers compose in
the training set's ledger: each is charged there (``Mechanism.laplace`` with
scale 2/epsilon and sensitivity 2) before it is computed, and the dataset's
budget bounds how many the world gets. The noise comes from OpenDP's exact
sampler (:class:`veil.dp.LaplaceMechanism`): here a DP claim rests on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from veil._random import SecureRandom
from veil.dp import LaplaceMechanism
from veil.errors import InvalidInputError
from veil.ledger import Mechanism
from veil.serve._policy import ModelPolicy, Noise

__all__ = [
    "VOTE_SENSITIVITY",
    "answer_mechanism",
    "perturb",
    "private_labels",
    "private_mechanism",
    "shape",
    "temper",
    "vote_histogram",
]

Array = npt.NDArray[np.float64]
# One person is in one shard: their presence moves one vote, -1 in a class and +1 in another.
VOTE_SENSITIVITY = 2.0


def _rows(proba: Any) -> Array:
    arr = np.asarray(proba, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] == 0 or not np.all(np.isfinite(arr)):  # noqa: PLR2004
        raise InvalidInputError(
            "probabilities must be a finite 2-D array",
            expected="shape (records, classes) with finite values",
            got=f"shape {arr.shape}" + ("" if np.all(np.isfinite(arr)) else " with NaN or inf"),
        )
    return arr


def temper(proba: Any, temperature: float) -> Array:
    """``softmax(log p / T)`` row by row (``T = 1`` returns the rows unchanged)."""
    arr = _rows(proba)
    if temperature == 1.0:
        return arr
    with np.errstate(divide="ignore"):
        logits = np.log(np.clip(arr, 0.0, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=1, keepdims=True)
    return out


def _laplace(rng: SecureRandom, count: int, scale: float) -> Array:
    # The difference of two Exp(b) variables is Laplace(b): b (ln u2 - ln u1).
    u = rng.uniform(2 * count)
    noise: Array = scale * (np.log(u[count:]) - np.log(u[:count]))
    return noise


def perturb(proba: Any, noise: Noise, rng: SecureRandom | None = None) -> Array:
    """Rows plus ``noise``, clipped to [0, 1] and renormalised (output perturbation, not DP)."""
    arr = _rows(proba)
    rng = rng or SecureRandom()
    if noise.kind == "laplace":
        draws = _laplace(rng, arr.size, noise.scale)
    else:
        draws = rng.normal(arr.size, noise.scale).astype(np.float64)
    out = np.clip(arr + draws.reshape(arr.shape), 0.0, 1.0)
    totals = out.sum(axis=1, keepdims=True)
    empty = totals[:, 0] == 0.0
    out[empty] = 1.0
    totals[empty] = arr.shape[1]
    out /= totals
    return out


def shape(
    proba: Any,
    classes: Sequence[str],
    policy: ModelPolicy,
    rng: SecureRandom | None = None,
) -> tuple[list[dict[str, Any]], npt.NDArray[np.int64]]:
    """The answer to each row under ``policy`` (see the module), and the class index reported.

    Returns:
        One JSON-ready dict per row (``label``; ``top`` for ``top_k``;
        ``probabilities`` for ``probabilities``) and the reported class indices
        (what the monitor sees).
    """
    arr = _rows(proba)
    if arr.shape[1] != len(classes):
        raise InvalidInputError(
            "one probability per class",
            expected=f"{len(classes)} columns",
            got=f"{arr.shape[1]}",
        )
    if policy.output not in ("label", "top_k", "probabilities"):
        raise InvalidInputError(
            "this output is not shaped from probabilities",
            expected="label, top_k or probabilities",
            got=policy.output,
            fix="private_label answers come from private_labels() over the shards' votes",
        )
    names = [str(c) for c in classes]
    if policy.output == "label":
        index = arr.argmax(axis=1)
        return [{"label": names[i]} for i in index], index
    shaped = temper(arr, policy.temperature)
    if policy.noise is not None:
        shaped = perturb(shaped, policy.noise, rng)
    index = shaped.argmax(axis=1)
    reported = shaped if policy.decimals is None else np.round(shaped, policy.decimals)
    if policy.output == "probabilities":
        out = [
            {"label": names[i], "probabilities": dict(zip(names, row.tolist(), strict=True))}
            for i, row in zip(index, reported, strict=True)
        ]
        return out, index
    k = min(policy.top_k, len(names))
    # Stable sort on the negated row: ties keep the classes' order, and the first is the argmax.
    order = np.argsort(-shaped, axis=1, kind="stable")[:, :k]
    out = [
        {
            "label": names[top[0]],
            "top": [{"label": names[j], "probability": float(row[j])} for j in top],
        }
        for top, row in zip(order, reported, strict=True)
    ]
    return out, order[:, 0]


def vote_histogram(shard_labels: Any, n_classes: int) -> npt.NDArray[np.int64]:
    """Votes per class of each record: ``shard_labels`` is (shards, records) of class indices."""
    labels = np.asarray(shard_labels, dtype=np.int64)
    if labels.ndim != 2 or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):  # noqa: PLR2004
        raise InvalidInputError(
            "shard votes must be class indices",
            expected=f"shape (shards, records) with values in [0, {n_classes})",
            got=f"shape {labels.shape}",
        )
    shards, records = labels.shape
    counts = np.zeros((records, n_classes), dtype=np.int64)
    np.add.at(counts, (np.tile(np.arange(records), shards), labels.ravel()), 1)
    return counts


def private_mechanism(epsilon: float) -> LaplaceMechanism:
    """The Laplace mechanism of one private answer: scale 2/epsilon on the vote histogram."""
    return LaplaceMechanism(epsilon=epsilon, sensitivity=VOTE_SENSITIVITY)


def answer_mechanism(epsilon: float) -> Mechanism:
    """What one private answer is charged as in the ledger (a pure-epsilon Laplace event)."""
    return private_mechanism(epsilon).mechanism


def private_labels(votes: Any, epsilon: float) -> npt.NDArray[np.int64]:
    """Report-noisy-max over each record's vote histogram: each answer epsilon-DP (see the module).

    Charge ``len(votes)`` answers of :func:`answer_mechanism` *before* calling this.
    """
    counts = np.asarray(votes, dtype=np.float64)
    if counts.ndim != 2:  # noqa: PLR2004
        raise InvalidInputError(
            "votes must be a (records, classes) histogram", expected="2-D", got=f"{counts.ndim}-D"
        )
    noisy = private_mechanism(epsilon).release(counts)
    index: npt.NDArray[np.int64] = np.asarray(noisy).argmax(axis=1).astype(np.int64)
    return index
