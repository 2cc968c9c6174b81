"""The audit report: one self-contained HTML file (plots embedded as PNG) and its JSON twin."""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from veil import __version__
from veil._io import dumps, write_text_atomic
from veil.errors import require

if TYPE_CHECKING:
    from veil.audit._fairness import FairnessResult
    from veil.audit._findings import AuditReport

__all__ = ["render_html", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2433;line-height:1.45}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #d5d9e0;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f8}.muted{color:#667085}.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a7a32;font-weight:600}.warn{color:#a15c00;font-weight:600}
.fail{color:#b42318;font-weight:600}.info{color:#175cd3;font-weight:600}
img{max-width:100%}figure{margin:1em 0}figcaption{color:#667085;font-size:.9em}
"""


def _png(fig: Any) -> str:
    """The figure as base64 PNG; the figure is closed (pyplot keeps every open one alive)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    matplotlib = require("matplotlib", extra="audit", purpose="the audit report's plots")
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot", extra="audit", purpose="the audit report's plots")


def _roc_figure(report: AuditReport) -> str | None:
    if not report.membership:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    floor = 1.0 / max(r.non_members for r in report.membership)
    for r in report.membership:
        fpr = np.maximum(np.asarray(r.roc["fpr"]), floor / 2)
        tpr = np.maximum(np.asarray(r.roc["tpr"]), floor / 2)
        ax.plot(fpr, tpr, label=f"{r.attack} (AUC {r.auc:.3f})", lw=1.4)
    grid = np.geomspace(floor / 2, 1, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate")
    ax.set_xlim(floor / 2, 1)
    ax.set_ylim(floor / 2, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Membership inference ROC (log-log)")
    return _png(fig)


def _extraction_figure(report: AuditReport) -> str | None:
    result = report.extraction
    if result is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for defence, values in result.fidelity.items():
        ax.plot(result.budgets, values, marker="o", label=f"fidelity, {defence}")
    ax.axhline(result.victim_accuracy, color="k", ls=":", lw=0.8, label="victim accuracy")
    ax.set(xscale="log", xlabel="queries", ylabel="agreement with the model", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    ax.set_title("Model extraction: fidelity vs queries")
    return _png(fig)


def _inversion_figure(report: AuditReport) -> str | None:
    result = report.inversion
    if result is None or report.image_shape is None:
        return None
    plt = _pyplot()
    n = len(result.identified)
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.5))
    axes = np.asarray(axes).reshape(2, n)
    for c in range(n):
        for row, images in enumerate((result.reconstructions, result.class_means)):
            image = np.asarray(images[c]).reshape(report.image_shape[-2:])
            axes[row, c].imshow(image, cmap="gray", vmin=-1, vmax=1)
            axes[row, c].axis("off")
        axes[0, c].set_title(str(c), fontsize=8)
    fig.suptitle("top: reconstructed from the model; bottom: real class mean", fontsize=8)
    return _png(fig)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _fairness_section(f: FairnessResult) -> str:
    """The fairness table: gaps, then each group with counts and 95% intervals."""
    e = html.escape

    def rate(v: dict[str, Any], metric: str) -> str:
        ci = v["ci95"][metric]
        if ci is None:
            return "<td>-</td>"
        return f"<td>{v[metric]:.3f} <span class='muted'>[{ci[0]:.2f}, {ci[1]:.2f}]</span></td>"

    groups = "".join(
        f"<tr><td>{e(g)}{' <em>(too small to judge)</em>' if v['too_small'] else ''}</td>"
        f"<td>{int(v['count'])}</td><td>{int(v['positives'])}</td>"
        f"{rate(v, 'selection_rate')}{rate(v, 'true_positive_rate')}{rate(v, 'false_positive_rate')}</tr>"
        for g, v in f.by_group.items()
    )
    judged = f.judged_gap
    return (
        f"<h2>Fairness by <code>{e(f.attribute)}</code> (fairlearn)</h2><table>"
        f"<tr><th>demographic parity difference</th><td>{f.demographic_parity_difference:.3f}</td></tr>"
        f"<tr><th>equalised odds difference</th><td>{f.equalized_odds_difference:.3f}</td></tr>"
        f"<tr><th>equal opportunity difference</th><td>{f.equal_opportunity_difference:.3f}</td></tr>"
        f"<tr><th>largest gap between groups large enough to judge</th><td>"
        f"{'-' if judged is None else f'{judged:.3f}'}"
        f"{' (beyond sampling noise)' if f.significant else ' (within sampling noise)'}</td></tr></table>"
        "<table><tr><th>group</th><th>held-out rows</th><th>positives</th><th>selection rate [95% CI]</th>"
        "<th>TPR [95% CI]</th><th>FPR [95% CI]</th></tr>"
        f"{groups}</table><p class='muted'>positive class: {e(f.positive_class)}</p>"
    )


def _unlearning_section(runs: list[dict[str, Any]]) -> str:
    """One row per unlearning run: the erased people's membership scores before and after."""
    e = html.escape
    rows = []
    notes: set[str] = set()
    for run in runs:
        check = run.get("verification") or {}
        if not check.get("run"):
            cells = [e(str(run.get("at"))), str(run.get("erased_people")), "-", "-", "-", "-"]
            verdict = f"not run: {e(str(check.get('why')))}"
        else:
            before, after = check["before"], check["after"]
            cells = [
                e(str(run.get("at"))),
                str(check["erased_people"]),
                _fmt(before["auc"]),
                _fmt(after["auc"]),
                f"{_fmt(before['percentile'], '.1f')} / {_fmt(after['percentile'], '.1f')}",
                str(check["non_members"]),
            ]
            verdict = e(check["verdict"])
            notes.update(check.get("notes", []))
        rows.append(
            "<tr>"
            + "".join(f"<td class='num'>{c}</td>" for c in cells)
            + f"<td>{verdict}</td></tr>"
        )
    return (
        "<h2>Unlearning</h2><p>Erased people's rows scored by a per-example membership attack "
        "against the model before and after unlearning, beside rows the model never saw. "
        "AUC 0.5 and percentile 50 mean 'scored like a non-member'.</p>"
        "<table><tr><th>at</th><th>erased people</th><th>AUC before</th><th>AUC after</th>"
        "<th>percentile before / after</th><th>non-members</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
        + "".join(f"<p class='muted'>{e(n)}</p>" for n in sorted(notes))
    )


def render_html(report: AuditReport) -> str:
    """The report as one HTML page with every plot embedded."""
    e = html.escape
    data = report.to_dict()
    claimed = data["claimed"]
    claim = (
        f"epsilon {claimed['epsilon']:.4g} at delta {claimed['delta']:g} ({e(str(claimed['accountant']))})"
        if claimed["private"]
        else "<span class='fail'>none: trained without differential privacy</span>"
    )
    verdict_rows = "".join(
        f"<tr><td>{e(v['attack'])}</td><td class='{v['level']}'>{v['level'].upper()}</td>"
        f"<td><b>{e(v['headline'])}</b><br><span class='muted'>{e(v['explanation'])}</span></td></tr>"
        for v in data["verdicts"]
    )
    sections = [
        f"<h2>Verdicts</h2><table><tr><th>attack</th><th></th><th>finding</th></tr>{verdict_rows}</table>"
    ]
    if report.membership:
        rows = []
        for r in report.membership:
            s = r.settings
            cells = [
                e(r.attack),
                e(str(s.get("mode"))),
                str(s.get("reference_models", 0)),
                _fmt(r.auc),
                f"[{_fmt(r.auc_ci[0])}, {_fmt(r.auc_ci[1])}]",
                *(_fmt(r.tpr_at_fpr[k], ".2%") for k in r.tpr_at_fpr),
                _fmt(r.advantage),
                _fmt(r.epsilon.shown, ".2f"),
                _fmt(s.get("seconds"), ".1f"),
            ]
            rows.append("<tr>" + "".join(f"<td class='num'>{c}</td>" for c in cells) + "</tr>")
        levels = "".join(f"<th>TPR @ {e(k)} FPR</th>" for k in report.membership[0].tpr_at_fpr)
        roc = _roc_figure(report)
        notes = sorted({n for r in report.membership for n in r.notes})
        sections.append(
            "<h2>Membership inference</h2>"
            f"<p>{report.settings['members']} members (rows of <code>{e(report.train)}</code>) and "
            f"{report.settings['non_members']} non-members (rows of <code>{e(report.test)}</code>). "
            "Scores: higher means 'member'. Epsilon bounds: Clopper-Pearson, 95%, threshold chosen on "
            "a held-out half.</p>"
            "<table><tr><th>attack</th><th>mode</th><th>reference models</th><th>AUC</th><th>AUC 95% CI</th>"
            f"{levels}<th>advantage</th><th>epsilon &ge;</th><th>seconds</th></tr>{''.join(rows)}</table>"
            + "".join(f"<p class='muted'>{e(n)}</p>" for n in notes)
            + (f"<figure><img alt='ROC' src='data:image/png;base64,{roc}'></figure>" if roc else "")
        )
    if report.dp is not None:
        d = report.dp.to_dict()
        sections.append(
            "<h2>Empirical DP audit (canaries)</h2>"
            f"<p>{d['canaries']} mislabelled canaries, {d['inserted']} inserted by coin flips; one "
            f"training run repeating the card's procedure (that run's epsilon: "
            f"{_fmt(report.dp.audit_run_epsilon, '.3g')}).</p><table>"
            f"<tr><th>claimed epsilon</th><td>{_fmt(report.dp.claimed_epsilon, '.4g')}</td></tr>"
            f"<tr><th>one-run bound (Steinke et al. 2023)</th><td>{_fmt(report.dp.one_run.shown, '.3f')}</td></tr>"
            f"<tr><th>Clopper-Pearson bound</th><td>{_fmt(report.dp.clopper_pearson.shown, '.3f')}</td></tr>"
            f"<tr><th>consistent with the claim</th><td>{'yes' if report.dp.consistent else '<b class=fail>NO</b>'}</td></tr>"
            "</table>"
        )
    if report.attribute is not None:
        a = report.attribute
        sections.append(
            f"<h2>Attribute inference: <code>{e(a.attribute)}</code></h2><table>"
            "<tr><th></th><th>members</th><th>non-members</th></tr>"
            f"<tr><th>attack (model's answers)</th><td>{a.attack_accuracy_members:.2%}</td><td>{a.attack_accuracy_non_members:.2%}</td></tr>"
            f"<tr><th>baseline (no model)</th><td>{a.baseline_accuracy_members:.2%}</td><td>{a.baseline_accuracy_non_members:.2%}</td></tr>"
            f"<tr><th>majority value</th><td colspan=2>{a.majority_accuracy:.2%}</td></tr></table>"
        )
    if report.inversion is not None:
        inv = report.inversion
        fig = _inversion_figure(report)
        sections.append(
            "<h2>Model inversion</h2>"
            f"<p>Identification {inv.identification_rate:.0%} (chance {inv.chance:.0%}); cosine to "
            f"own class mean: {', '.join(f'{c:.2f}' for c in inv.cosine_to_own_class)}.</p>"
            + (
                f"<figure><img alt='inversion' src='data:image/png;base64,{fig}'></figure>"
                if fig
                else ""
            )
        )
    if report.extraction is not None:
        ex = report.extraction
        head = "".join(f"<th>{b}</th>" for b in ex.budgets)
        body = "".join(
            f"<tr><th>{e(d)}</th>"
            + "".join(
                f"<td>{f:.3f} / {a:.3f}</td>" for f, a in zip(fid, ex.accuracy[d], strict=True)
            )
            + "</tr>"
            for d, fid in ex.fidelity.items()
        )
        fig = _extraction_figure(report)
        sections.append(
            "<h2>Model extraction</h2><p>Fidelity / accuracy of a surrogate by number of queries, "
            f"per output defence (victim accuracy {ex.victim_accuracy:.3f}).</p>"
            f"<table><tr><th>defence</th>{head}</tr>{body}</table>"
            + (
                f"<figure><img alt='extraction' src='data:image/png;base64,{fig}'></figure>"
                if fig
                else ""
            )
        )
    if report.fairness is not None:
        sections.append(_fairness_section(report.fairness))
    if report.unlearning:
        sections.append(_unlearning_section(report.unlearning))
    if report.notes:
        sections.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Privacy audit: {e(report.model)}</title>
<style>{_CSS}</style></head><body>
<h1>Privacy audit of <code>{e(report.model)}</code></h1>
<p class="muted">Veil {e(__version__)} · generated {generated} · {e(str(report.card.get("architecture")))}</p>
<p><b>Claimed guarantee:</b> {claim}. <b>Training data:</b> <code>{e(report.train)}</code>;
<b>non-members:</b> <code>{e(report.test)}</code>; {report.settings["references"]} reference models;
total {report.seconds.get("total", 0):.1f} s.</p>
<p class="muted">This report is confidential: it describes how exposed the training data's
people are. It holds no record values.</p>
{"".join(sections)}
</body></html>
"""


def write_report(
    report: AuditReport, html_path: Path | None = None, json_path: Path | None = None
) -> None:
    """Write the HTML and/or JSON report, each whole or not at all."""
    if html_path is not None:
        write_text_atomic(html_path, render_html(report))
    if json_path is not None:
        write_text_atomic(json_path, dumps(report.to_dict(per_example=True), indent=1))
