"""What several benchmarks share: the machine they ran on, MNIST as tensors, Adult's bounds.

A module of its own so that the benchmarks import it and not one another.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from veil import __version__
from veil.data import load_mnist
from veil.errors import NotFoundError

__all__ = ["ADULT_NUMERIC_BOUNDS", "machine", "mnist_tensors"]

ADULT_NUMERIC_BOUNDS = {
    # Declared from the codebook and the census forms, not read from the rows.
    "age": (17.0, 90.0),
    "education_num": (1.0, 16.0),
    "capital_gain": (0.0, 99999.0),
    "capital_loss": (0.0, 4356.0),
    "hours_per_week": (1.0, 99.0),
}


def machine() -> dict[str, Any]:
    """CPUs, torch threads and versions: the ``machine`` part of a report."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "veil": __version__,
    }


def mnist_tensors(data: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST from ``data/mnist`` as (train images, train labels, test images, test labels).

    Images are scaled to [-1, 1] with a channel axis.
    """
    folder = data / "mnist"
    if not folder.is_dir():
        raise NotFoundError(
            "the MNIST files are missing",
            expected=f"the four IDX files in {folder}",
            got="no such folder",
            fix="pass --data DIR holding mnist/ and adult/ (the project's shared data)",
        )
    out = []
    for split in ("train", "test"):
        arrays = load_mnist(folder, split)
        images = torch.from_numpy(arrays.images).float().div_(255.0).mul_(2.0).sub_(1.0)
        out += [images.unsqueeze(1), torch.from_numpy(arrays.labels).long()]
    return out[0], out[1], out[2], out[3]
