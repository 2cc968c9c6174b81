"""Membership scores on the whole of UCI Adult: Veil's AIM at epsilon 1 against AIM without noise.

The study behind docs/benchmarks.md's "Looked at again" table (synthetic
data, membership inference). It fits both generators at ``veil synth``'s
defaults (for Adult's 15 columns: 16 rounds, a 2 MB model; 16 bins, the 3-way
workload of marginals of at most 10,000 cells), draws 5,000 members from ``adult.data`` and 5,000 non-members
from ``adult.test`` (the rest of ``adult.test`` is the attacker's reference),
and scores every target by the log ratio of its own cell's frequency in the
release and in the reference (pseudo-count 0.1 a cell) over each clique:
summed over the workload, summed over the measured cliques, the largest
single clique; on all targets and on the 5% rarest under the reference
(chosen apart among members and non-members, from the reference alone). It
also counts how many of the training data's single-row cells, and of its
empty cells, hold a synthetic row.

    python benchmarks/synth/membership_whole_table.py --data ../shared/data

About 8 minutes and 2 GB on a 2-core machine. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from veil.bench._synth_child import adult_frame, adult_schema
from veil.synth import SynthSettings, fit_nonprivate, synthesize_frame

PSEUDO_COUNT = 0.1
TARGETS = 5000


def _fit(data: Path, private: bool) -> dict[str, Any]:
    train, test = adult_frame(data, "train"), adult_frame(data, "test")
    common: dict[str, Any] = {
        "rows": len(train),
        "workload": "3-way",
        "max_cells": 10_000,
        "bins": 16,
        "seed": 0,
        "settings": SynthSettings(),  # veil synth's defaults
    }
    if private:
        result = synthesize_frame(
            train, adult_schema(), epsilon=1.0, delta=1e-9, dataset="adult", **common
        )
    else:
        result = fit_nonprivate(train, adult_schema(), method="aim", **common)
    columns = list(result.encoder.columns)
    return {
        "sizes": [result.encoder.sizes[c] for c in columns],
        "index": {c: i for i, c in enumerate(columns)},
        "synth": result.codes[columns].to_numpy(np.int64),
        "train": result.encoder.encode(train)[columns].to_numpy(np.int64),
        "test": result.encoder.encode(test)[columns].to_numpy(np.int64),
        "measured": [tuple(c) for c in result.trace.measured],
        "workload": [tuple(c) for c in result.workload],
    }


def _counts(rows: np.ndarray, clique: list[int], sizes: list[int]) -> np.ndarray:
    dims = [sizes[i] for i in clique]
    keys = np.ravel_multi_index(tuple(rows[:, i] for i in clique), dims)
    return np.bincount(keys, minlength=int(np.prod(dims)))


def _cells(rows: np.ndarray, clique: list[int], sizes: list[int]) -> np.ndarray:
    return np.ravel_multi_index(tuple(rows[:, i] for i in clique), [sizes[i] for i in clique])


def _tpr_at(is_member: np.ndarray, scores: np.ndarray, fpr_level: float) -> float:
    fpr, tpr, _ = roc_curve(is_member, scores)
    return float(tpr[fpr <= fpr_level].max())


def _study(fit: dict[str, Any]) -> dict[str, Any]:
    sizes, index = fit["sizes"], fit["index"]
    rng = np.random.default_rng(0)
    test = fit["test"][rng.permutation(len(fit["test"]))]
    non_members, reference = test[:TARGETS], test[TARGETS:]
    members = fit["train"][rng.choice(len(fit["train"]), TARGETS, replace=False)]
    targets = np.concatenate([members, non_members])
    is_member = np.r_[np.ones(TARGETS, bool), np.zeros(TARGETS, bool)]
    out: dict[str, Any] = {}
    for name, cliques in (
        ("workload_cliques", fit["workload"]),
        ("measured_cliques", [c for c in fit["measured"] if len(c) > 1]),
    ):
        ratios, rarity = [], []
        for clique in cliques:
            idx = [index[c] for c in clique]
            cells = _cells(targets, idx, sizes)
            synth, ref = _counts(fit["synth"], idx, sizes), _counts(reference, idx, sizes)
            p_synth = (synth[cells] + PSEUDO_COUNT) / (
                len(fit["synth"]) + PSEUDO_COUNT * synth.size
            )
            p_ref = (ref[cells] + PSEUDO_COUNT) / (len(reference) + PSEUDO_COUNT * ref.size)
            ratios.append(np.log(p_synth) - np.log(p_ref))
            rarity.append(p_ref)
        summed, largest = np.sum(ratios, axis=0), np.max(ratios, axis=0)
        rarest = np.min(rarity, axis=0)  # from the reference alone: no membership in it
        k = TARGETS // 20
        chosen = np.r_[np.argsort(rarest[:TARGETS])[:k], TARGETS + np.argsort(rarest[TARGETS:])[:k]]
        out[name] = {
            "cliques": len(cliques),
            "auc_summed": roc_auc_score(is_member, summed),
            "auc_largest": roc_auc_score(is_member, largest),
            "auc_summed_rarest_5pct": roc_auc_score(is_member[chosen], summed[chosen]),
            "tpr_at_1pct_fpr_summed": _tpr_at(is_member, summed, 0.01),
        }
    single = empty = single_kept = empty_filled = 0
    for clique in {c for c in fit["measured"] if len(c) > 1}:
        idx = [index[c] for c in clique]
        train, synth = _counts(fit["train"], idx, sizes), _counts(fit["synth"], idx, sizes)
        single += int((train == 1).sum())
        single_kept += int((synth[train == 1] > 0).sum())
        empty += int((train == 0).sum())
        empty_filled += int((synth[train == 0] > 0).sum())
    out["cells"] = {
        "single_row_cells": single,
        "single_row_cells_in_release": single_kept,
        "empty_cells": empty,
        "empty_cells_in_release": empty_filled,
    }
    out["measurements"] = len(fit["measured"])
    out["distinct_measurements"] = len(set(fit["measured"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    report = {
        name: _study(_fit(args.data, private))
        for name, private in (("nonprivate", False), ("epsilon-1", True))
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
