"""One line per attack, and a paragraph a non-expert can read.

Levels: ``pass`` (nothing measurable, or consistent with the claim), ``warn``
(measurable leakage, within the claim), ``fail`` (strong leakage, or a
measured epsilon above the claimed one), ``info`` (a figure without a
threshold, e.g. fairness gaps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from veil.audit._fairness import MIN_GROUP
from veil.audit._metrics import FPR_LEVELS

if TYPE_CHECKING:
    from veil.audit._attribute import AttributeResult
    from veil.audit._dpaudit import CanaryAudit
    from veil.audit._extraction import ExtractionResult
    from veil.audit._fairness import FairnessResult
    from veil.audit._inversion import InversionResult
    from veil.audit._metrics import AttackResult

__all__ = ["Findings", "Verdict", "verdicts"]


class Findings(Protocol):
    """What the verdicts read of an :class:`~veil.audit.AuditReport` (which holds it)."""

    settings: dict[str, Any]
    membership: list[AttackResult]
    attribute: AttributeResult | None
    inversion: InversionResult | None
    extraction: ExtractionResult | None
    dp: CanaryAudit | None
    fairness: FairnessResult | None
    utility: dict[str, Any] | None

    @property
    def claimed_epsilon(self) -> float: ...


_STRONG = 10.0  # TPR at a low FPR this many times the FPR: an attack that works
_FAIRNESS_GAP = 0.1  # a common rule of thumb for parity gaps
_FIDELITY = 0.9  # a surrogate that agrees this often is a working copy


@dataclass(frozen=True)
class Verdict:
    attack: str
    level: str
    headline: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label(result: AttackResult) -> str:
    s = result.settings
    if s.get("reference_models"):
        return f"{result.attack} ({s.get('mode')}, {s['reference_models']} reference models)"
    return f"{result.attack} ({s.get('mode')})"


def _membership(report: Findings) -> Verdict | None:
    results = report.membership
    if not results:
        return None
    alpha = float(report.settings.get("alpha", 0.05))
    level_key, fpr = None, 1.0
    for level in sorted(FPR_LEVELS):  # the lowest level every attack can report
        key = f"{level * 100:g}%"
        if all(r.tpr_at_fpr.get(key) is not None for r in results):
            level_key, fpr = key, level
            break
    best_eps = max(results, key=lambda r: r.epsilon.epsilon_lower)
    claimed = report.claimed_epsilon
    eps_line = (
        f" The strongest measured lower bound on epsilon is {best_eps.epsilon.shown:.2f} "
        f"({best_eps.epsilon.confidence:.0%} confidence, {best_eps.attack})"
        + (
            f", against a claimed {claimed:.3g}."
            if math.isfinite(claimed)
            else "; the model claims no epsilon."
        )
    )
    if math.isfinite(claimed) and best_eps.epsilon.epsilon_lower > claimed:
        return Verdict(
            "membership",
            "fail",
            f"measured epsilon {best_eps.epsilon.epsilon_lower:.2f} exceeds the claimed {claimed:.3g}",
            "The attack succeeded more often than a model with the claimed guarantee allows: the "
            "claim is wrong (a bug in training or accounting) or the model was not trained as its "
            "card says." + eps_line,
        )
    # Chance: every attack's AUC, and its TPR at each reportable low FPR, consistent with a blind
    # attack (Bonferroni over attacks and the two tests).
    level = alpha / (2 * len(results))
    at_chance = all(
        r.auc_p_value >= level
        and all(p is None or p >= level for p in r.tpr_at_fpr_p_value.values())
        for r in results
    )
    if level_key is None:
        best = max(results, key=lambda r: r.auc)
        strength = f"best AUC {best.auc:.3f}: {_label(best)}"
        strong = False
    else:
        best = max(results, key=lambda r: r.tpr_at_fpr[level_key] or 0.0)
        tpr = best.tpr_at_fpr[level_key] or 0.0
        lower = (best.tpr_at_fpr_ci[level_key] or (0.0, 0.0))[0]
        strong = lower > _STRONG * fpr
        strength = (
            f"{_label(best)} finds {tpr:.2%} of members at {level_key} false positives "
            f"({tpr / fpr:.1f}x chance); AUC {best.auc:.3f}"
        )
    if at_chance and not strong:
        return Verdict(
            "membership",
            "pass",
            f"no attack beats chance ({strength})",
            "An attacker who sees the model's answers cannot tell who was in the training data "
            f"better than a coin flip, within the statistical error of {best.members} members and "
            f"{best.non_members} non-members (every attack's AUC is consistent with 0.5)."
            + eps_line,
        )
    if strong:
        per_thousand = (best.tpr_at_fpr[level_key] or 0.0) * 1000 if level_key else 0.0
        return Verdict(
            "membership",
            "fail",
            f"strong membership leakage: {strength}",
            "An attacker who sees only the model's answers can pick out people who were in the "
            f"training data with confidence: tuned to wrongly accuse 1 in {round(1 / fpr)} "
            f"non-members, it correctly identifies about {per_thousand:.0f} in 1,000 members. "
            "Train with differential privacy (veil train --epsilon) or regularise more." + eps_line,
        )
    return Verdict(
        "membership",
        "warn",
        f"weak but measurable membership leakage: {strength}",
        "The model behaves measurably differently on its training data, but no attack identifies "
        "members with confidence at low false-positive rates." + eps_line,
    )


def _dp(report: Findings) -> Verdict | None:
    audit = report.dp
    if audit is None:
        return None
    best = audit.best
    claimed = audit.claimed_epsilon
    confidence = 1 - float(report.settings.get("alpha", 0.05))  # both bounds together
    head = (
        f"measured epsilon >= {best.shown:.2f} ({confidence:.0%} confidence, {audit.canaries} "
        f"canaries, {best.method.split(' (')[0]})"
    )
    if not math.isfinite(claimed):
        return Verdict(
            "dp",
            "fail" if best.epsilon_lower > 1 else "warn",
            head + "; the model claims no differential privacy",
            "The model was trained without differential privacy, so no bound limits what it can "
            "reveal about one person; the canary audit shows how much a single record moves it.",
        )
    if not audit.consistent:
        return Verdict(
            "dp",
            "fail",
            head + f" > claimed {claimed:.3g}",
            "Inserted test records (canaries) were detectable beyond what the claimed epsilon "
            "permits: the privacy claim does not hold for this training procedure.",
        )
    return Verdict(
        "dp",
        "pass",
        head + f" <= claimed {claimed:.3g}",
        "Test records (canaries) inserted at random were detected no more often than the claimed "
        "guarantee allows. A lower bound is evidence, not proof: black-box canaries often give "
        "bounds well below the true epsilon of DP-SGD.",
    )


def _attribute(report: Findings) -> Verdict | None:
    result = report.attribute
    if result is None:
        return None
    ci = result.ci95.get("attack_members", (0.0, 1.0))
    base = result.baseline_accuracy_members
    head = (
        f"'{result.attribute}' guessed with {result.attack_accuracy_members:.1%} accuracy on members "
        f"(non-members {result.attack_accuracy_non_members:.1%}) vs {base:.1%} without the model "
        f"({result.baseline_kind})"
    )
    if ci[0] > base:
        return Verdict(
            "attribute",
            "warn",
            head,
            f"Knowing the model's answers helps an attacker guess a person's {result.attribute} "
            "beyond what the other columns reveal.",
        )
    return Verdict(
        "attribute",
        "pass",
        head,
        f"The model's answers do not help guess a person's {result.attribute} beyond what the "
        "other columns already reveal (a guess from public data is as good).",
    )


def _inversion(report: Findings) -> Verdict | None:
    result = report.inversion
    if result is None:
        return None
    rate, chance = result.identification_rate, result.chance
    head = (
        f"reconstructions match their class for {rate:.0%} of classes (chance {chance:.0%}); "
        f"mean cosine to the class mean {sum(result.cosine_to_own_class) / len(result.identified):.2f}"
    )
    return Verdict(
        "inversion",
        "warn" if rate > chance else "pass",
        head,
        "Inversion rebuilds a typical input of each class from the model. Class averages are "
        "often what a model is meant to learn; it leaks a person only when reconstructions "
        "resemble individual records.",
    )


def _extraction(report: Findings) -> Verdict | None:
    result = report.extraction
    if result is None:
        return None
    parts = []
    for defence, fid in result.fidelity.items():
        reached = next(
            (b for b, f in zip(result.budgets, fid, strict=True) if f >= _FIDELITY), None
        )
        parts.append(f"{defence}: {'>' + str(result.budgets[-1]) if reached is None else reached}")
    head = "queries for a 90%-agreement copy: " + ", ".join(parts)
    return Verdict(
        "extraction",
        "info",
        head,
        "With this many answers an attacker can train a copy that agrees with the model 90% of "
        "the time. Returning only the label or rounded probabilities makes copying costlier.",
    )


def _fairness(report: Findings) -> Verdict | None:
    result = report.fairness
    if result is None:
        return None
    head = (
        f"by '{result.attribute}': demographic parity difference "
        f"{result.demographic_parity_difference:.3f}, equalised odds difference "
        f"{result.equalized_odds_difference:.3f}, equal opportunity difference "
        f"{result.equal_opportunity_difference:.3f}"
    )
    judged = result.judged_gap
    small = ""
    if result.too_small:
        sizes = ", ".join(f"{g} ({int(result.by_group[g]['count'])})" for g in result.too_small[:5])
        small = f" Groups too small to judge (under {MIN_GROUP} people): {sizes}."
    if judged is None:
        return Verdict(
            "fairness",
            "info",
            head + "; fewer than two groups are large enough to judge",
            f"Too few held-out people per group of '{result.attribute}' to tell a real gap from "
            f"sampling noise.{small}",
        )
    flagged = judged > _FAIRNESS_GAP and result.significant
    return Verdict(
        "fairness",
        "warn" if flagged else "info",
        head
        + f"; judged gap {judged:.3f}"
        + (" (beyond sampling noise)" if result.significant else " (within sampling noise)"),
        f"How differently the model treats groups of '{result.attribute}' on held-out data "
        f"(0 = identical; gaps above {_FAIRNESS_GAP} that persist at the 95% interval ends are "
        f"flagged for review).{small}",
    )


def _utility(report: Findings) -> Verdict | None:
    u = report.utility
    if u is None:
        return None
    head = (
        f"held-out accuracy {u['accuracy']:.1%} (95% CI {u['accuracy_ci95'][0]:.1%}-"
        f"{u['accuracy_ci95'][1]:.1%}) vs {u['majority_rate']:.1%} by always predicting "
        f"'{u['majority_class']}'; {u['top_prediction_share']:.0%} of predictions are "
        f"'{u['top_prediction']}'"
    )
    if not u["useful"]:
        return Verdict(
            "utility",
            "warn",
            "no utility: " + head,
            "The model is not distinguishable from guessing the most common class, so its "
            "privacy figures describe a model that learned nothing useful. Train with a larger "
            "epsilon, more data or a simpler model before relying on it.",
        )
    return Verdict(
        "utility",
        "pass",
        head,
        "The model predicts better than always guessing the most common class.",
    )


def verdicts(report: Findings) -> list[Verdict]:
    checks = (_utility, _membership, _dp, _attribute, _inversion, _extraction, _fairness)
    found = [f(report) for f in checks]
    return [v for v in found if v is not None]
