"""The attack parts of ``veil bench serve``: extraction, the monitor, label-only membership.

Each runs through the gateway's HTTP endpoint with the keys the set-up made
(:mod:`veil.bench._serve_setup`), from the pieces in :mod:`veil.bench._serve_attacks`
(whose docstring describes the attacks and why they are measured as they are).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.bench._serve_attacks import (
    Adult,
    MarginalSampler,
    Replay,
    ask,
    auc,
    auc_standard_error,
    augment,
)
from veil.errors import InvalidInputError

__all__ = ["extraction", "flagged", "membership", "monitor"]


def extraction(
    client: Any,
    adult: Adult,
    tokens: Mapping[str, str],
    policies: Sequence[str],
    *,
    model: str,
    budgets: Sequence[int],
    cap: int,
    batch: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Agreement of a surrogate with ``model`` per output policy and query count, with and
    without the per-key budget (keys ``extract-<policy>-open`` / ``-budget``)."""
    import torch  # noqa: PLC0415

    from veil.audit import extraction_curve  # noqa: PLC0415

    # The surrogates are tiny MLPs: on this 2-core machine, shared with the gateway, two
    # torch threads made one curve 40x slower than one thread (20 s against 0.5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _extraction(client, adult, tokens, policies, model=model, budgets=budgets,
                           cap=cap, batch=batch, seed=seed, progress=progress,
                           curve=extraction_curve)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _extraction(
    client: Any,
    adult: Adult,
    tokens: Mapping[str, str],
    policies: Sequence[str],
    *,
    model: str,
    budgets: Sequence[int],
    cap: int,
    batch: int,
    seed: int,
    progress: Callable[[str], None] | None,
    curve: Callable[..., Any],
) -> dict[str, Any]:

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
    sampler = MarginalSampler(adult.train)
    evaluation = adult.encode(adult.test)
    truth = adult.log_proba(evaluation)
    victim = truth.argmax(axis=1)
    eval_y = adult.labels(adult.test)
    largest = max(budgets)
    rows: list[dict[str, Any]] = []
    for policy in policies:
        for capped in (False, True):
            key = f"extract-{policy}-{'budget' if capped else 'open'}"
            frame = sampler.sample(largest if not capped else max(largest, cap + 100), rng)
            if progress is not None:
                progress(f"extraction {policy} {'budget' if capped else 'no budget'}")
            answers = ask(
                client, model, tokens[key], adult.records(frame), adult.classes, batch=batch
            )
            pool = adult.encode(frame.iloc[: answers.answered])
            wanted = [min(int(b), answers.answered) for b in budgets]
            usable = sorted({b for b in wanted if b > 0})
            agreement: list[float | None] = [None] * len(budgets)
            if usable:
                found = curve(
                    Replay(pool, answers.proba, evaluation, truth),
                    pool,
                    evaluation,
                    eval_y,
                    budgets=usable,
                    defences=("none",),
                    seed=seed,
                )
                by_budget = dict(zip(found.budgets, found.fidelity["none"], strict=True))
                agreement = [by_budget.get(b) for b in wanted]
            rows.append(
                {
                    "policy": policy,
                    "budget": cap if capped else None,
                    "queries": list(budgets),
                    "agreement": agreement,
                    "answered": answers.answered,
                    "refused": answers.refused,
                    "refusal": answers.refusal,
                }
            )
    return {
        "victim_accuracy": float((victim == eval_y).mean()),
        "constant_agreement": float(np.bincount(victim).max() / len(victim)),
        "evaluation_rows": len(evaluation),
        "budgets": list(budgets),
        "rows": rows,
    }


def monitor(
    client: Any,
    adult: Adult,
    tokens: Mapping[str, str],
    *,
    model: str,
    benign: int,
    attackers: int,
    attack_queries: int,
    batch: int,
    seed: int,
) -> list[tuple[str, str, int]]:
    """Benign keys replay Adult's test rows (split evenly), attackers send marginal samples.

    Requests are interleaved round-robin over all keys, as traffic from many users is.
    Returns the (key name, kind, records sent) of every key.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x30]))
    sampler = MarginalSampler(adult.train)
    shares = np.array_split(np.arange(len(adult.test)), benign)
    plans = [
        (f"benign-{i}", "benign", adult.records(adult.test.iloc[share]))
        for i, share in enumerate(shares)
    ]
    plans += [
        (f"attacker-{i}", "attacker", adult.records(sampler.sample(attack_queries, rng)))
        for i in range(attackers)
    ]
    cursors = [0] * len(plans)
    from veil.bench._serve_load import post_json  # noqa: PLC0415

    path = f"/v1/models/{model}/predict"
    while True:
        sent = False
        for k, (name, _, records) in enumerate(plans):
            if cursors[k] >= len(records):
                continue
            chunk = records[cursors[k] : cursors[k] + batch]
            cursors[k] += len(chunk)
            post_json(client, path, {"records": chunk}, tokens[name])
            sent = True
        if not sent:
            break
    return [(name, kind, len(records)) for name, kind, records in plans]


def membership(
    client: Any,
    adult: Adult,
    token: str,
    *,
    model: str,
    members: int,
    non_members: int,
    copies: int,
    seed: int,
) -> dict[str, Any]:
    """Label-only membership through the gateway: the gap and augmentation attacks' AUC."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3E3]))
    inside = adult.train.iloc[
        rng.choice(len(adult.train), size=min(members, len(adult.train)), replace=False)
    ]
    outside = adult.test.iloc[
        rng.choice(len(adult.test), size=min(non_members, len(adult.test)), replace=False)
    ]
    scores: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
    for side, chosen in (("members", inside), ("non_members", outside)):
        frame = chosen.reset_index(drop=True)
        y = adult.labels(frame)
        plain = ask(client, model, token, adult.records(frame), adult.classes)
        varied = augment(frame, copies, rng)
        noisy = ask(client, model, token, adult.records(varied), adult.classes)
        if plain.refusal or noisy.refusal:
            raise InvalidInputError(
                "the gateway refused the membership attacker",
                expected="every record answered (the key has no count budget)",
                got=str(plain.refusal or noisy.refusal),
            )
        right = (plain.proba.argmax(axis=1) == y).astype(np.float64)
        right_copies = (noisy.proba.argmax(axis=1) == np.repeat(y, copies)).reshape(len(y), copies)
        scores[side] = {
            "gap": right,
            "augmentation": (right + right_copies.sum(axis=1)) / (copies + 1),
        }
    out: dict[str, Any] = {
        "members": len(inside),
        "non_members": len(outside),
        "copies": copies,
        "member_accuracy": float(scores["members"]["gap"].mean()),
        "non_member_accuracy": float(scores["non_members"]["gap"].mean()),
    }
    for attack in ("gap", "augmentation"):
        value = auc(scores["members"][attack], scores["non_members"][attack])
        out[f"{attack}_auc"] = value
        out[f"{attack}_auc_se"] = auc_standard_error(value, len(inside), len(outside))
    return out


def flagged(
    home: Path, ids: Mapping[str, str], plan: Sequence[tuple[str, str, int]]
) -> dict[str, Any]:
    """Which keys the monitor flagged: the ``serve.alert`` entries on the workspace's trail.

    Read after the gateway stopped (its spool flushed), in-process from the store.
    """
    from veil.access import Trail  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.workspace import Workspace  # noqa: PLC0415

    store = Store.for_workspace(Workspace(home))
    try:
        alerts = Trail(store).entries(action="serve.alert")
    finally:
        store.dispose()
    first: dict[str, int] = {}
    signals: Counter[str] = Counter()
    for entry in alerts:
        details = entry.details or {}
        key_id = str(details.get("key_id"))
        signals[str(details.get("signal"))] += 1
        queries = int(details.get("queries") or 0)
        first[key_id] = min(first.get(key_id, queries), queries)
    kinds: dict[str, list[int | None]] = {"benign": [], "attacker": []}
    for name, kind, _ in plan:
        kinds[kind].append(first.get(ids[name]))
    hit = {kind: [q for q in found if q is not None] for kind, found in kinds.items()}
    attackers, benign = len(kinds["attacker"]), len(kinds["benign"])
    sent = max((n for _, kind, n in plan if kind == "attacker"), default=0)
    return {
        "benign": benign,
        "attackers": attackers,
        "attack_queries": sent,
        "attackers_flagged": len(hit["attacker"]),
        "benign_flagged": len(hit["benign"]),
        "attacker_rate": len(hit["attacker"]) / attackers if attackers else float("nan"),
        "false_alarm_rate": len(hit["benign"]) / benign if benign else float("nan"),
        "median_queries_to_flag": float(np.median(hit["attacker"])) if hit["attacker"] else None,
        "signals": dict(signals),
    }
