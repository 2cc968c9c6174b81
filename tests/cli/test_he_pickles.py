"""`veil he compile` attacked with booby-trapped model files: a pickle runs its code
only behind --trust-pickle, which warns; the safe formats compile the same program."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")
torch = pytest.importorskip("torch")

from veil.he import HEProgram, compile_model, poly_activation  # noqa: E402


class _Trap:
    """Unpickling this writes a marker file: what a hostile model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (self.marker, "pwned"))  # type: ignore[return-value]


def _booby_trap(path: Path, marker: Path) -> None:
    """A model file that writes ``marker`` when loaded: torch's zip format for .pt, else a
    plain pickle (what joblib reads)."""
    if path.suffix in (".pt", ".pth"):
        torch.save(_Trap(marker), path)
    else:
        path.write_bytes(pickle.dumps(_Trap(marker)))


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from veil.cli._app import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model() -> torch.nn.Sequential:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), poly_activation(), torch.nn.Linear(4, 2))


_ARCH = {
    "layers": [
        {"type": "Linear", "in_features": 5, "out_features": 4},
        {"type": "PolyActivation", "coefficients": [0.0, 0.0, 1.0]},
        {"type": "Linear", "in_features": 4, "out_features": 2},
    ]
}


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).uniform(-1, 1, size=(30, 5)))
    return tmp_path / "cal.npy"


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".joblib", ".pkl"])
def test_a_booby_trapped_pickle_is_refused_and_never_runs(
    capsys, tmp_path: Path, calibration: Path, suffix: str
) -> None:
    marker = tmp_path / "marker"
    trap = tmp_path / f"model{suffix}"
    _booby_trap(trap, marker)
    (tmp_path / "arch.json").write_text(json.dumps(_ARCH))
    for extra in ([], ["--arch", "arch.json"]):
        code, _, err = _main(
            capsys, "he", "compile", trap.name, "--calibrate", "cal.npy", "-o", "m.veilhe", *extra
        )
        assert code == 3, err
        assert "--trust-pickle" in err or "state dict" in err
        assert not marker.exists(), "the model file's code ran"
        assert not (tmp_path / "m.veilhe").exists()
        assert not (tmp_path / "m.plan.json").exists()


def test_trust_pickle_loads_it_and_warns(capsys, tmp_path: Path, calibration: Path) -> None:
    marker = tmp_path / "marker"
    _booby_trap(tmp_path / "model.pt", marker)
    code, _, err = _main(
        capsys, "he", "compile", "model.pt", "--calibrate", "cal.npy", "-o", "m.veilhe",
        "--trust-pickle",
    )  # fmt: skip
    assert marker.exists()  # the code ran: that is what trusting a pickle means
    assert "warning" in err.lower()
    assert "runs any code" in err
    assert code == 3  # and then it is not a model
    torch.save(_model(), tmp_path / "whole.pt")
    code, _, err = _main(
        capsys, "he", "compile", "whole.pt", "--calibrate", "cal.npy", "-o", "w.veilhe",
        "--trust-pickle",
    )  # fmt: skip
    assert code == 0, err
    assert "warning" in err.lower()


def test_a_state_dict_and_an_architecture_compile_the_same_program(
    capsys, tmp_path: Path, calibration: Path
) -> None:
    model = _model()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "arch.json").write_text(json.dumps(_ARCH))
    code, _, err = _main(
        capsys, "he", "compile", "weights.pt", "--arch", "arch.json", "--calibrate", "cal.npy",
        "-o", "m.veilhe",
    )  # fmt: skip
    assert code == 0, err
    assert "warning" not in err.lower()
    compiled = HEProgram.from_bytes((tmp_path / "m.veilhe").read_bytes())
    expected = compile_model(model, calibration=np.load(calibration))
    for got, want in zip(compiled.steps, expected.steps, strict=True):
        assert type(got) is type(want)
        if hasattr(want, "weight"):
            np.testing.assert_allclose(got.weight, want.weight)
            np.testing.assert_allclose(got.bias, want.bias)


def test_an_architecture_names_only_allowed_layers(
    capsys, tmp_path: Path, calibration: Path
) -> None:
    torch.save(_model().state_dict(), tmp_path / "weights.pt")
    for layer in (
        {"type": "os.system", "command": "touch marker"},
        {"type": "Linear", "in_features": 5, "out_features": 4, "device": "meta"},
        {"type": "Linear", "in_features": "5", "out_features": 4},
    ):
        (tmp_path / "arch.json").write_text(json.dumps({"layers": [layer]}))
        code, _, err = _main(
            capsys, "he", "compile", "weights.pt", "--arch", "arch.json", "--calibrate",
            "cal.npy", "-o", "m.veilhe",
        )  # fmt: skip
        assert code == 3, err
    assert not (tmp_path / "marker").exists()
    # weights that do not fit the architecture are refused too
    (tmp_path / "arch.json").write_text(
        json.dumps({"layers": [{"type": "Linear", "in_features": 5, "out_features": 3}]})
    )
    code, _, err = _main(
        capsys, "he", "compile", "weights.pt", "--arch", "arch.json", "--calibrate", "cal.npy",
        "-o", "m.veilhe",
    )  # fmt: skip
    assert code == 3
    assert "state dict" in err


def test_scikit_learn_coefficients_compile_without_a_pickle(
    capsys, tmp_path: Path, calibration: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.load(calibration)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    np.savez(tmp_path / "risk.npz", coef=model.coef_, intercept=model.intercept_, output="sigmoid")
    code, _, err = _main(
        capsys, "he", "compile", "risk.npz", "--calibrate", "cal.npy", "-o", "r.veilhe"
    )
    assert code == 0, err
    program = HEProgram.from_bytes((tmp_path / "r.veilhe").read_bytes())
    assert program.output == "sigmoid"
    np.testing.assert_allclose(program.forward(x)[:, 0], model.decision_function(x))
    # an .npz that smuggles a pickled object is refused (np.load never unpickles)
    np.savez(tmp_path / "bad.npz", coef=np.array([_Trap(tmp_path / "marker")], dtype=object))
    code, _, err = _main(capsys, "he", "compile", "bad.npz", "--calibrate", "cal.npy", "-o", "b")
    assert code == 3, err
    assert not (tmp_path / "marker").exists()
