"""`veil he` end to end: compile, keygen, encrypt, infer, decrypt; Paillier; the vault; bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")
torch = pytest.importorskip("torch")

from veil.he import poly_activation  # noqa: E402

RAW_KEY = "ab" * 32


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from veil.cli._app import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _arch(features: int, hidden: int, outputs: int, activation: str = "PolyActivation") -> dict:
    return {
        "layers": [
            {"type": "Linear", "in_features": features, "out_features": hidden},
            {"type": activation},
            {"type": "Linear", "in_features": hidden, "out_features": outputs},
        ]
    }


@pytest.fixture
def server_files(tmp_path: Path, seed: int) -> tuple[Path, Path, np.ndarray]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), poly_activation(), torch.nn.Linear(8, 3))
    # a state dict and its architecture: nothing here is unpickled (see test_he_pickles.py)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "arch.json").write_text(json.dumps(_arch(12, 8, 3)))
    inputs = np.random.default_rng(seed).uniform(0, 1, size=(40, 12))
    np.save(tmp_path / "calibration.npy", inputs)
    np.save(tmp_path / "one.npy", inputs[:1])
    np.save(tmp_path / "many.npy", inputs[:25])
    with torch.no_grad():
        expected = model(torch.tensor(inputs, dtype=torch.float32)).numpy()
    return tmp_path / "model.pt", tmp_path / "calibration.npy", expected


@pytest.mark.slow
def test_the_round_trip_through_the_executable(server_files, tmp_path: Path) -> None:
    model, calibration, expected = server_files
    executable = Path(sys.executable).with_name("veil")

    def veil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(executable), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            env=os.environ | {"COLUMNS": "120"},
        )

    done = veil(
        "he",
        "compile",
        str(model),
        "--arch",
        "arch.json",
        "--calibrate",
        str(calibration),
        "-o",
        "model.veilhe",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    compiled = json.loads(done.stdout)
    assert compiled["steps"] == ["Affine", "Square", "Affine"]
    assert compiled["security_bits"] == 128
    assert compiled["total_coeff_bits"] <= compiled["max_coeff_bits"]
    assert veil("he", "keygen", "--plan", "model.plan.json", "-o", "keys").returncode == 0
    assert stat.S_IMODE((tmp_path / "keys" / "secret.key").stat().st_mode) == 0o600
    done = veil("he", "encrypt", "one.npy", "--keys", "keys", "-o", "one.req")
    assert done.returncode == 0, done.stderr
    done = veil(
        "he",
        "infer",
        "one.req",
        "--model",
        "model.veilhe",
        "--context",
        "keys/public.ctx",
        "-o",
        "one.resp",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    done = veil("he", "decrypt", "one.resp", "--keys", "keys", "--json")
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(
        np.array(json.loads(done.stdout)["outputs"]), expected[:1], atol=1e-4
    )


@pytest.mark.slow
def test_a_batch_round_trip(server_files, capsys, tmp_path: Path) -> None:
    model, calibration, expected = server_files
    assert (
        _main(
            capsys,
            "he",
            "compile",
            str(model),
            "--arch",
            "arch.json",
            "--calibrate",
            str(calibration),
            "-o",
            "m.veilhe",
        )[0]
        == 0
    )
    assert _main(capsys, "he", "keygen", "--plan", "m.plan.json", "-o", "keys")[0] == 0
    assert (
        _main(capsys, "he", "encrypt", "many.npy", "--keys", "keys", "-o", "many.req", "--batch")[0]
        == 0
    )
    code, _, err = _main(
        capsys,
        "he",
        "infer",
        "many.req",
        "--model",
        "m.veilhe",
        "--context",
        "keys/public.ctx",
        "-o",
        "many.resp",
    )
    assert code == 0, err
    code, stdout, _ = _main(
        capsys, "he", "decrypt", "many.resp", "--keys", "keys", "--json", "-o", "out.json"
    )
    assert code == 0
    np.testing.assert_allclose(np.array(json.loads(stdout)["outputs"]), expected[:25], atol=1e-4)
    code, _, err = _main(capsys, "he", "decrypt", "many.resp", "--keys", "keys", "-o", "out.json")
    assert code == 3
    assert "--force" in err


@pytest.mark.slow
def test_a_flooded_round_trip(server_files, capsys, tmp_path: Path) -> None:
    model, calibration, expected = server_files
    argv = ["he", "compile", str(model), "--arch", "arch.json", "--calibrate", str(calibration)]
    assert _main(capsys, *argv, "-o", "m.veilhe")[0] == 0
    assert _main(capsys, "he", "keygen", "--plan", "m.plan.json", "-o", "keys")[0] == 0
    assert _main(capsys, "he", "encrypt", "one.npy", "--keys", "keys", "-o", "one.req")[0] == 0
    infer = ["he", "infer", "one.req", "--model", "m.veilhe", "--context", "keys/public.ctx"]
    sigma = 1e-3
    code, _, err = _main(capsys, *infer, "-o", "one.resp", "--flood-sigma", str(sigma))
    assert code == 0, err
    code, _, err = _main(capsys, *infer, "-o", "again.resp", "--flood-sigma", str(sigma))
    assert code == 0, err
    assert (tmp_path / "one.resp").read_bytes() != (tmp_path / "again.resp").read_bytes()
    code, stdout, _ = _main(capsys, "he", "decrypt", "one.resp", "--keys", "keys", "--json")
    assert code == 0
    # the median over the vector layout's copies: its spread is far below sigma
    np.testing.assert_allclose(np.array(json.loads(stdout)["outputs"]), expected[:1], atol=sigma)
    code, _, err = _main(capsys, *infer, "-o", "bad.resp", "--flood-sigma", "-1")
    assert code == 3
    assert "flood_sigma" in err


@pytest.mark.slow
def test_paillier_scores_a_linear_model(capsys, tmp_path: Path, seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 5))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    np.savez(tmp_path / "risk.npz", coef=model.coef_, intercept=model.intercept_, output="sigmoid")
    np.savetxt(tmp_path / "x.csv", x[:1], delimiter=",")
    np.save(tmp_path / "cal.npy", x)
    assert (
        _main(capsys, "he", "compile", "risk.npz", "--calibrate", "cal.npy", "-o", "risk.veilhe")[0]
        == 0
    )
    assert (
        _main(capsys, "he", "keygen", "--scheme", "paillier", "--bits", "2048", "-o", "pk")[0] == 0
    )
    assert _main(capsys, "he", "encrypt", "x.csv", "--keys", "pk", "-o", "x.req")[0] == 0
    code, _, err = _main(
        capsys,
        "he",
        "infer",
        "x.req",
        "--model",
        "risk.veilhe",
        "--context",
        "pk/public.ctx",
        "-o",
        "x.resp",
    )
    assert code == 0, err
    code, _, err = _main(
        capsys, "he", "infer", "x.req", "--model", "risk.veilhe", "--context", "pk/public.ctx",
        "-o", "flooded.resp", "--flood-sigma", "0.01",
    )  # fmt: skip
    assert code == 3
    assert "CKKS" in err
    code, stdout, _ = _main(capsys, "he", "decrypt", "x.resp", "--keys", "pk", "--json")
    assert code == 0
    score = json.loads(stdout)["outputs"][0][0]
    assert score == pytest.approx(float(model.decision_function(x[:1])[0]), abs=1e-5)


@pytest.mark.slow
def test_secret_keys_can_live_in_the_vault(
    server_files, capsys, tmp_path: Path, monkeypatch
) -> None:
    model, calibration, expected = server_files
    assert _main(capsys, "init")[0] == 0
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW_KEY)
    assert (
        _main(
            capsys,
            "he",
            "compile",
            str(model),
            "--arch",
            "arch.json",
            "--calibrate",
            str(calibration),
            "-o",
            "m.veilhe",
        )[0]
        == 0
    )
    assert _main(capsys, "he", "keygen", "--plan", "m.plan.json", "-o", "keys", "--vault")[0] == 0
    assert (tmp_path / "keys" / "secret.key.veil").is_file()
    assert not (tmp_path / "keys" / "secret.key").exists()
    assert _main(capsys, "he", "encrypt", "one.npy", "--keys", "keys", "-o", "one.req")[0] == 0
    assert (
        _main(
            capsys,
            "he",
            "infer",
            "one.req",
            "--model",
            "m.veilhe",
            "--context",
            "keys/public.ctx",
            "-o",
            "one.resp",
        )[0]
        == 0
    )
    code, stdout, _ = _main(capsys, "he", "decrypt", "one.resp", "--keys", "keys", "--json")
    assert code == 0
    np.testing.assert_allclose(json.loads(stdout)["outputs"][0], expected[0], atol=1e-4)
    monkeypatch.setenv("VEIL_VAULT_KEY", "cd" * 32)
    code, _, err = _main(capsys, "he", "decrypt", "one.resp", "--keys", "keys")
    assert code == 3, err
    # Sealing and each unsealing were key uses on the trail; the wrong key's attempt failed.
    from veil.access import Access

    uses = [
        (e.action, str(e.outcome))
        for e in Access.open().trail.entries()
        if e.action in ("vault.seal", "vault.unseal")
    ]
    assert uses == [
        ("vault.seal", "allowed"),
        ("vault.unseal", "allowed"),
        ("vault.unseal", "allowed"),
        ("vault.unseal", "failed"),
    ]


@pytest.mark.slow
def test_bad_input_exits_3_and_writes_nothing(server_files, capsys, tmp_path: Path) -> None:
    model, calibration, _ = server_files
    torch.save(
        torch.nn.Sequential(
            torch.nn.Linear(12, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
        ).state_dict(),
        tmp_path / "relu.pt",
    )
    (tmp_path / "relu.json").write_text(json.dumps(_arch(12, 4, 2, "ReLU")))
    code, _, err = _main(
        capsys,
        "he",
        "compile",
        "relu.pt",
        "--arch",
        "relu.json",
        "--calibrate",
        str(calibration),
        "-o",
        "relu.veilhe",
    )
    assert code == 3
    assert "poly_activation" in err
    assert not (tmp_path / "relu.veilhe").exists()
    assert (
        _main(
            capsys,
            "he",
            "compile",
            str(model),
            "--arch",
            "arch.json",
            "--calibrate",
            str(calibration),
            "-o",
            "m.veilhe",
        )[0]
        == 0
    )
    assert _main(capsys, "he", "keygen", "--plan", "m.plan.json", "-o", "a")[0] == 0
    assert _main(capsys, "he", "keygen", "--plan", "m.plan.json", "-o", "b")[0] == 0
    np.save(tmp_path / "wide.npy", np.zeros((1, 13)))
    code, _, err = _main(capsys, "he", "encrypt", "wide.npy", "--keys", "a", "-o", "wide.req")
    assert code == 3
    assert "12 features" in err
    assert not (tmp_path / "wide.req").exists()
    assert _main(capsys, "he", "encrypt", "one.npy", "--keys", "a", "-o", "one.req")[0] == 0
    code, _, err = _main(
        capsys,
        "he",
        "infer",
        "one.req",
        "--model",
        "m.veilhe",
        "--context",
        "b/public.ctx",
        "-o",
        "one.resp",
    )
    assert code == 3
    assert "other keys" in err
    assert not (tmp_path / "one.resp").exists()
    code, _, err = _main(capsys, "he", "encrypt", "one.npy", "--keys", "a", "-o", "one.req")
    assert code == 3
    assert "--force" in err
    code, _, _ = _main(capsys, "he", "keygen", "-o", "c")
    assert code == 3
    code, _, _ = _main(capsys, "he", "decrypt", "missing.resp", "--keys", "a")
    assert code == 6


@pytest.mark.slow
def test_compiling_a_registry_model_needs_model_read_and_is_recorded(
    server_files, capsys, tmp_path: Path, monkeypatch
) -> None:
    import shutil

    from veil.access import Access
    from veil.workspace import login_name

    model, calibration, _ = server_files
    assert _main(capsys, "init")[0] == 0
    stored = tmp_path / ".veil" / "models" / "m1"
    stored.mkdir(parents=True)
    shutil.copy(model, stored / "model.pt")
    card = {"model": "m1", "dataset": "people", "dataset_sha256": "ab" * 32, "private": True}
    (stored / "privacy_card.json").write_text(json.dumps(card | {"epsilon": 3.0}))
    argv = ["he", "compile", "--arch", "arch.json", "--calibrate", str(calibration)]

    code, _, err = _main(capsys, *argv[:2], str(stored / "model.pt"), *argv[2:], "-o", "a.veilhe")
    assert code == 0, err
    access = Access.open()
    try:
        _, token = access.create_key("client", "consumer", reason="test")
        (loaded,) = access.trail.entries(action="model.load")
    finally:
        access.store.dispose()
    assert (loaded.actor, loaded.dataset, loaded.links["model"]) == (login_name(), "people", "m1")
    assert loaded.details["program"] == str(tmp_path / "a.veilhe")

    monkeypatch.setenv("VEIL_KEY", token)  # a consumer may call a model, not read it
    code, _, err = _main(capsys, *argv[:2], str(stored / "model.pt"), *argv[2:], "-o", "b.veilhe")
    assert code == 9, err
    assert "model.read" in err
    assert not (tmp_path / "b.veilhe").exists()
    # a model file outside the registry is a plain file: nothing to check
    code, _, err = _main(capsys, *argv[:2], str(model), *argv[2:], "-o", "c.veilhe")
    assert code == 0, err
    monkeypatch.delenv("VEIL_KEY")
    access = Access.open()
    try:
        refused = access.trail.entries(actor="svc:client")
        assert len(access.trail.entries(action="model.load")) == 2
    finally:
        access.store.dispose()
    assert [(e.action, str(e.outcome), e.details["missing"]) for e in refused] == [
        ("model.load", "refused", "model.read")
    ]
