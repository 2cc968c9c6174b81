"""DP-FedAvg's noise and client sampling need NumPy and cryptography, not torch.

A fresh interpreter imports ``veil.federated._noise``, draws noise and
Poisson coins from :class:`GaussianNoise` and reports which modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import json, sys
from veil.federated._noise import GaussianNoise
noise = GaussianNoise()
values = noise.sample((30, 20), 2.0)
coins = noise.random.bernoulli(1000, 0.1)
with open(sys.argv[1], "w") as f:
    json.dump({
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "coins": int(coins.sum()),
        "modules": sorted({m.split(".")[0] for m in sys.modules}),
    }, f)
"""


@pytest.mark.slow
def test_drawing_federated_noise_imports_no_torch(tmp_path: Path):
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text(encoding="utf-8"))
    assert result["shape"] == [30, 20]
    assert result["dtype"] == "float64"
    assert 0 < result["coins"] < 1000  # P(0 or 1000 coins at p = 0.1) < 1e-45
    assert "torch" not in result["modules"]
    assert "cryptography" in result["modules"]  # the noise came from the AES-CTR stream
