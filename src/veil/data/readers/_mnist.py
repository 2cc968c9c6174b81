"""MNIST in its IDX files: images and labels from a folder, one split at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from veil.data._idx import read_idx
from veil.data.readers._base import Declaration, ImageArrays, Reader, sha256_files
from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback

__all__ = ["MnistReader"]


class MnistReader(Reader):
    """MNIST in its original IDX files: a directory, and a split (``train`` or ``test``)."""

    format = "mnist"
    kind = "images"
    _PREFIX: ClassVar[dict[str, str]] = {"train": "train", "test": "t10k"}

    def __init__(self, path: Path, *, split: str = "train") -> None:
        if split not in self._PREFIX:
            raise InvalidInputError(
                "unknown MNIST split",
                expected="train or test",
                got=repr(split),
                fix="pass --split train or --split test",
            )
        path = path.expanduser().resolve()
        directory = path if path.is_dir() else path.parent
        if not directory.exists():
            raise NotFoundError(
                "MNIST directory not found",
                expected=f"a directory at {directory}",
                got="nothing there",
                fix="pass the folder holding the four IDX files",
            )
        self.split = split
        self.directory = directory
        prefix = self._PREFIX[split]
        self.images_path = self._find(directory, f"{prefix}-images-idx3-ubyte")
        self.labels_path = self._find(directory, f"{prefix}-labels-idx1-ubyte")
        self._arrays: ImageArrays | None = None

    @staticmethod
    def _find(directory: Path, stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (directory / name).is_file():
                return directory / name
        raise NotFoundError(
            f"MNIST file {stem}[.gz] not found",
            expected=f"{stem}.gz or {stem} in {directory}",
            got="neither",
            fix="pass the folder holding MNIST's original IDX files",
        )

    @property
    def source(self) -> str:
        return str(self.directory)

    def load_options(self) -> dict[str, Any]:
        return {"split": self.split}

    def columns(self) -> list[str]:
        return ["image", "label"]

    def declarations(self) -> dict[str, Declaration]:
        return {
            "image": Declaration("array", bounds=(0.0, 255.0), shape=(28, 28)),
            "label": Declaration("categorical", categories=tuple(str(d) for d in range(10))),
        }

    def arrays(self) -> ImageArrays:
        """The images (n, 28, 28) and labels (n,) as uint8 arrays, checked for consistency."""
        if self._arrays is None:
            images = read_idx(self.images_path)
            labels = read_idx(self.labels_path)
            if (
                images.ndim != 3  # noqa: PLR2004 - (n, rows, cols)
                or labels.ndim != 1
                or images.dtype != np.uint8
                or labels.dtype != np.uint8
            ):
                raise InvalidInputError(
                    "these IDX files do not hold MNIST images and labels",
                    expected="uint8 images of shape (n, 28, 28) and uint8 labels of shape (n,)",
                    got=f"images {images.dtype}{images.shape}, labels {labels.dtype}{labels.shape}",
                    fix="pass the MNIST image (idx3) and label (idx1) files of one split",
                )
            if images.shape[0] != labels.shape[0]:
                raise InvalidInputError(
                    "MNIST images and labels disagree in number",
                    expected=f"{images.shape[0]} labels, one per image",
                    got=f"{labels.shape[0]} labels",
                    fix="pass the image and label files of the same split",
                )
            self._arrays = ImageArrays(images.astype(np.uint8), labels.astype(np.uint8))
        return self._arrays

    def chunks(self) -> Iterator[pd.DataFrame]:
        arrays = self.arrays()
        yield pd.DataFrame({"label": arrays.labels.astype(str)})

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        arrays = self.arrays()
        frame = pd.DataFrame({"image": list(arrays.images), "label": arrays.labels.astype(str)})
        return frame[list(columns)] if columns else frame

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        paths = [self.images_path, self.labels_path]
        return sha256_files(paths, progress), sum(p.stat().st_size for p in paths)

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        del n_columns, columns
        return n_rows * (28 * 28 + 1)
