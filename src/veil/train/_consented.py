"""Training on a dataset under consent management that leaves nobody to train on.

A dataset under consent management with the opt-in default (``withdrawn``)
and no grant recorded for the training's purpose loads as zero rows: that is
the consent rule working, not an empty file. Without this check the run
stopped later with "no training examples", which does not say why the table
that has rows has none to give, nor what to do. No count is printed: the
person and row counts of the consent snapshot stay in the ledger and the
trail, where they already are.
"""

from __future__ import annotations

from typing import Any

from veil.errors import InvalidInputError

__all__ = ["require_consented_rows"]


def require_consented_rows(dataset: str, frame: Any) -> None:
    """Refuse, naming the consent rule, when consent left no row of ``dataset``.

    Raises:
        InvalidInputError: ``frame`` is empty and its consent snapshot
            (``frame.attrs["veil.consent"]``) says rows were left out.
    """
    if len(frame):
        return
    consent = getattr(frame, "attrs", {}).get("veil.consent")
    if not consent or not consent.get("rows_excluded"):
        return  # empty for another reason: the training plan refuses it in its own words
    term = consent.get("purpose", "model-training")
    raise InvalidInputError(
        f"no rows of '{dataset}' to train on: consent for '{term}' leaves every person out",
        expected=f"persons whose consent for '{term}' is granted",
        got=f"no person whose latest record grants it (the default without a record: "
        f"'{consent.get('default')}')",
        fix=f"record the persons' consent (veil consent set {dataset} --person ID --purpose "
        f"{term} --granted, or veil consent import {dataset} FILE); `veil consent show "
        f"{dataset}` counts who granted what",
    )
