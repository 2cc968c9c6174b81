"""Each row of ``veil bench federated`` against its goal: figures, a summary line, met or not.

The figures come from a run's per-round history (accuracy per round, seconds
per round as the median of rounds 2..n, overhead: a round's wall time less the
clients' own training); :func:`summarise` returns the row's configuration,
results, goal, verdict and the words the table prints.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from veil.bench._federated_plan import ATTACKS, ROBUST, SECAGG_SHARES, Outcome, Run

__all__ = ["summarise"]


def _rounds_to(history: list[dict[str, Any]], accuracy: float) -> int | None:
    return next((int(h["round"]) for h in history if h["accuracy"] >= accuracy), None)


def _figures(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per round and the round times (median of rounds 2..n when there are several)."""
    timed = history[1:] or history
    return {
        "rounds": len(history),
        "accuracy": history[-1]["accuracy"] if history else None,
        "best_accuracy": max((h["accuracy"] for h in history), default=None),
        "accuracy_per_round": [round(float(h["accuracy"]), 4) for h in history],
        "seconds_per_round": statistics.median(h["seconds"] for h in timed) if timed else None,
        "mean_seconds_per_round": statistics.fmean(h["seconds"] for h in history)
        if history
        else None,
        "mean_overhead_seconds": statistics.fmean(h["overhead_seconds"] for h in history)
        if history
        else None,
        "warm_overhead_seconds": statistics.fmean(h["overhead_seconds"] for h in timed)
        if timed
        else None,
        "mean_client_train_seconds": statistics.fmean(h["client_train_seconds"] for h in history)
        if history
        else None,
        "mean_participants": statistics.fmean(h["participants"] for h in history)
        if history
        else None,
        "bytes_sent_per_round": statistics.fmean(h["bytes_sent"] for h in history)
        if history
        else None,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _row_mlp(runs: list[Run], outcomes: list[Outcome]) -> dict[str, Any]:
    history = outcomes[0][0]
    figures = _figures(history)
    reached = _rounds_to(history, 0.97)
    overhead = figures["warm_overhead_seconds"]  # round 1 pays for warm-up
    met = reached is not None and reached <= 10 and overhead is not None and overhead <= 0.15  # noqa: PLR2004
    return {
        "config": runs[0].config.to_dict(),
        "results": {**figures, "rounds_to_97": reached, "history": history},
        "goal": {"accuracy": 0.97, "within_rounds": 10, "mean_overhead_seconds": 0.15},
        "met": met,
        "summary": f"{_pct(figures['accuracy'])} after {figures['rounds']} rounds; 97% at round "
        f"{reached or '-'}; overhead {overhead:.3f} s/round; {figures['seconds_per_round']:.2f} "
        "s/round",
        "goal_text": ">= 97% within 10 rounds, overhead <= 0.15 s/round",
    }


def _row_secagg(runs: list[Run], outcomes: list[Outcome]) -> dict[str, Any]:
    results = []
    for index in range(0, len(runs), 2):
        plain, secure = _figures(outcomes[index][0]), _figures(outcomes[index + 1][0])
        ratio = secure["seconds_per_round"] / plain["seconds_per_round"]
        # The clients' training time swings with the machine's load; the protocol's own cost is
        # the rise in overhead (round time less training), added to the plain round.
        added = secure["warm_overhead_seconds"] - plain["warm_overhead_seconds"]
        adjusted = (plain["seconds_per_round"] + added) / plain["seconds_per_round"]
        results.append(
            {
                "clients": runs[index].config.clients,
                "shares": SECAGG_SHARES,
                "plain_seconds_per_round": plain["seconds_per_round"],
                "secagg_seconds_per_round": secure["seconds_per_round"],
                "ratio": ratio,
                "secagg_added_seconds": added,
                "ratio_adjusted": adjusted,
                "overhead_percent": (ratio - 1) * 100,
                "plain_accuracy": plain["accuracy"],
                "secagg_accuracy": secure["accuracy"],
                "plain_bytes_per_round": plain["bytes_sent_per_round"],
                "secagg_bytes_per_round": secure["bytes_sent_per_round"],
                "plain": plain,
                "secagg": secure,
            }
        )
    return {
        "config": {
            "plain": [runs[i].config.to_dict() for i in range(0, len(runs), 2)],
            "secagg": [runs[i].config.to_dict() for i in range(1, len(runs), 2)],
        },
        "results": results,
        "goal": {"max_ratio": 1.30, "flower_reference_ratio": 1.55},
        "met": all(r["ratio_adjusted"] <= 1.30 for r in results),  # noqa: PLR2004
        "summary": "; ".join(
            f"{r['clients']} clients: {r['plain_seconds_per_round']:.2f} -> "
            f"{r['secagg_seconds_per_round']:.2f} s/round ({r['overhead_percent']:+.0f}%; "
            f"protocol +{r['secagg_added_seconds']:.2f} s = {(r['ratio_adjusted'] - 1) * 100:+.0f}%)"
            for r in results
        ),
        "goal_text": "SecAgg+ (5 shares) <= +30% per round (Flower: +55%), judged on the "
        "protocol's added overhead",
    }


def _row_target(
    runs: list[Run], outcomes: list[Outcome], *, target: float, within: int
) -> dict[str, Any]:
    history = outcomes[0][0]
    figures = _figures(history)
    reached = _rounds_to(history, target)
    return {
        "config": runs[0].config.to_dict(),
        "results": {**figures, "rounds_to_target": reached, "history": history},
        "goal": {"accuracy": target, "within_rounds": within},
        "met": reached is not None and reached <= within,
        "summary": f"{_pct(figures['accuracy'])} after {figures['rounds']} rounds "
        f"(best {_pct(figures['best_accuracy'])}); {target:.0%} at round {reached or '-'}",
        "goal_text": f">= {target:.0%} within {within} rounds",
    }


def _row_dp(runs: list[Run], outcomes: list[Outcome]) -> dict[str, Any]:
    results = []
    for run, (history, summary) in zip(runs, outcomes, strict=True):
        figures = _figures(history)
        privacy = summary or {}
        results.append(
            {
                "target_epsilon": run.config.target_epsilon,
                "epsilon": privacy.get("epsilon"),
                "delta": privacy.get("delta"),
                "noise_multiplier": privacy.get("noise_multiplier"),
                "accuracy": figures["accuracy"],
                "best_accuracy": figures["best_accuracy"],
                "mean_participants": figures["mean_participants"],
                "privacy": privacy,
                "figures": figures,
            }
        )
    return {
        "config": [r.config.to_dict() for r in runs],
        "results": results,
        "goal": {"accuracy": 0.95, "max_epsilon": 8.0},
        "met": any(
            r["accuracy"] >= 0.95 and (r["epsilon"] or 0) <= 8.0  # noqa: PLR2004
            for r in results
        ),
        "summary": "; ".join(
            f"eps {r['target_epsilon']:g} (z={r['noise_multiplier'] or 0:.2f}): "
            f"{_pct(r['accuracy'])}"
            for r in results
        ),
        "goal_text": ">= 95% at epsilon <= 8 (delta 1e-5)",
    }


def _row_poisoning(runs: list[Run], outcomes: list[Outcome]) -> dict[str, Any]:
    clean = _figures(outcomes[0][0])["accuracy"]
    results: dict[str, Any] = {"clean_accuracy": clean}
    met = True
    parts = [f"clean {_pct(clean)}"]
    for attack, malicious in ATTACKS:
        per_rule: dict[str, Any] = {}
        for run, (history, _) in zip(runs[1:], outcomes[1:], strict=True):
            if run.config.attack != attack:
                continue
            name = run.label.split(" ", 1)[1]
            accuracy = _figures(history)["accuracy"]
            per_rule[name] = {
                "accuracy": accuracy,
                "drop_points": (clean - accuracy) * 100,
                "backdoor_success": history[-1].get("backdoor_success") if history else None,
                "history": history,
            }
        best = max(ROBUST, key=lambda s: per_rule[s]["accuracy"])
        within = per_rule[best]["drop_points"] <= 2.0  # noqa: PLR2004
        met = met and within
        results[attack] = {
            "malicious": malicious,
            "byzantine": round(malicious * runs[0].config.clients),
            "rules": per_rule,
            "best_robust": best,
            "best_robust_drop_points": per_rule[best]["drop_points"],
            "met": within,
        }
        extra = ""
        if attack == "backdoor":
            extra = f", backdoor {_pct(per_rule[best]['backdoor_success'])}"
        parts.append(
            f"{attack}: fedavg {_pct(per_rule['fedavg']['accuracy'])}, best {best} "
            f"{_pct(per_rule[best]['accuracy'])} ({-per_rule[best]['drop_points']:+.1f} pts{extra})"
        )
    return {
        "config": [r.config.to_dict() for r in runs],
        "results": results,
        "goal": {"max_drop_points": 2.0},
        "met": met,
        "summary": "; ".join(parts),
        "goal_text": "best robust rule within 2 points of clean",
    }


_SUMMARIES: dict[str, Callable[[list[Run], list[Outcome]], dict[str, Any]]] = {
    "mlp-iid": _row_mlp,
    "secagg-overhead": _row_secagg,
    "cnn-iid": lambda r, o: _row_target(r, o, target=0.99, within=20),
    "dp-fedavg": _row_dp,
    "poisoning": _row_poisoning,
}


def summarise(
    row: str, runs: list[Run], outcomes: list[Outcome], *, max_rounds: int
) -> dict[str, Any]:
    """The row's ``config``, ``results``, ``goal``, ``met``, ``summary`` and ``goal_text``."""
    if row == "pathological":
        return _row_target(runs, outcomes, target=0.99, within=max_rounds)
    return _SUMMARIES[row](runs, outcomes)
