"""The rows an unlearning run reads: every row's person, but tensors of the retrained rows only.

Why a module of its own: unlearning one person retrains one shard of ``S``,
about ``1 / S`` of the table, yet needs every row's person (the shard of a row
comes from its person's token). Encoding every row's features (and, for
images, applying a fixed front end to every image) was most of the cost of
unlearning one person. Here the table is loaded and checked as a whole-table
load checks it (access, the load's own checks and trail entry, every label
against the declared classes) and only the rows the retrained stages read are
encoded. The encoding is row by row from declared bounds and categories
(:class:`~veil.train.FeatureEncoder`), so a row's features are the same
whichever other rows are encoded with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from veil.data import Catalog, DatasetInfo, DataUse
from veil.train._models import FeatureEncoder
from veil.train._pipeline import _classes, _targets, dataset_tensors, frame_tensors

__all__ = ["UnlearnRows", "unlearn_rows"]

Select = Callable[[npt.NDArray[np.int64]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class UnlearnRows:
    """Every row's person, the version and consent state read, and tensors on demand."""

    persons: list[Any] | None
    n_rows: int
    version: int | None
    consent: dict[str, Any] | None
    select: Select  # (inputs, targets) of the given rows, in that order


def unlearn_rows(
    catalog: Catalog,
    info: DatasetInfo,
    dataset: str,
    *,
    label: str,
    encoder: FeatureEncoder | None,
    frame: Any,
    purpose: str,
) -> UnlearnRows:
    """The rows of ``dataset`` (its current version, for the mechanism) or of ``frame``."""
    if encoder is None or info.format == "mnist":  # images, or no saved encoder: the whole load
        if frame is None:
            data = dataset_tensors(
                catalog, dataset, label=label, encoder=encoder, use=DataUse.MECHANISM,
                purpose=purpose,
            )  # fmt: skip
        else:
            data = frame_tensors(info, frame, label=label, encoder=encoder)
        inputs, targets = data.inputs, data.targets

        def whole(rows: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.from_numpy(rows)
            return inputs[index], targets[index]

        return UnlearnRows(data.persons, int(inputs.shape[0]), data.version, data.consent, whole)
    if frame is None:  # dataset_tensors' order: the role, the label, then the load
        use = DataUse.MECHANISM
        catalog.access.require(use.permission, dataset, action="dataset.read", purpose=purpose)
        classes = _classes(info, label)
        frame = catalog.load_frame(dataset, use=use, purpose=purpose)
    else:
        classes = _classes(info, label)
    encoder.encode(frame.iloc[:0])  # refuses a frame without the model's columns, as before
    labels = _targets(frame[label].tolist(), classes, label)  # every row's label is checked
    unit = info.schema.privacy_unit
    attrs = frame.attrs if hasattr(frame, "attrs") else {}
    version = attrs.get("veil.version")

    def part(rows: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        return encoder.encode(frame.iloc[rows]), labels[torch.from_numpy(rows)]

    return UnlearnRows(
        frame[unit].tolist() if unit and unit in frame.columns else None,
        len(frame),
        None if version is None else int(version),
        attrs.get("veil.consent"),
        part,
    )
