"""A model pickled whole while its activation lived in ``veil.crypto`` still compiles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from veil.he import compile_model, load_model_file, poly_activation  # noqa: E402
from veil.he._model_files import PickleTrustWarning  # noqa: E402


def _renamed(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite the module name inside a torch zip file's pickle (protocol 2: text globals)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert new in data
            archive.writestr(info, data.replace(new, old))


def test_a_model_pickled_under_the_old_module_path_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), poly_activation(), torch.nn.Linear(3, 2))
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    _renamed(path, b"veil.crypto._layers", b"veil.he._layers")
    calibration = np.random.default_rng(0).normal(size=(8, 4))  # not private: a test input
    with pytest.warns(PickleTrustWarning):
        loaded = load_model_file(path, calibration=calibration, trust_pickle=True)
    expected = compile_model(model, calibration=calibration)
    assert len(loaded.steps) == len(expected.steps)
    np.testing.assert_allclose(loaded.forward(calibration), expected.forward(calibration))
