"""The doctor's round trip: encrypted inference end to end on bundled data (``veil he demo``).

Seeded, so not private: a demonstration and a smoke test of CKKS and Paillier
together, not a way to protect data.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from veil.he._ckks import error_bound
from veil.he._client import HEClient
from veil.he._compile import compile_model, poly_activation
from veil.he._paillier import PaillierClient, paillier_linear
from veil.he._server import HEServer

__all__ = ["round_trip"]


def round_trip(*, seed: int = 0, batch: bool = True) -> dict[str, Any]:
    """The doctor's round trip on scikit-learn's digits (not private: seeded).

    A hospital-external company trains a small x^2 network and compiles it;
    the doctor makes keys for its plan, encrypts one scan, the company infers
    on the ciphertext with only the public context, and the doctor decrypts.
    """
    import torch  # noqa: PLC0415
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(y))  # not-private: a demo split
    train, test = order[:1200], order[1200:]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), poly_activation(), torch.nn.Linear(32, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    features = torch.tensor(x[train], dtype=torch.float32)
    labels = torch.tensor(y[train]).long()
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    program = compile_model(model, calibration=x[train])
    plan = program.plan(layouts=("vector", "batch") if batch else ("vector",))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    doctor = HEClient.generate(plan)
    context = doctor.public_context()
    timings["keygen_s"] = time.perf_counter() - started
    company = HEServer(program, context, workers=1)
    scan = x[test[0]]
    started = time.perf_counter()
    request = doctor.encrypt(scan)
    timings["encrypt_s"] = time.perf_counter() - started
    started = time.perf_counter()
    response = company.infer(request)
    timings["infer_s"] = time.perf_counter() - started
    started = time.perf_counter()
    logits = doctor.decrypt(response)[0]
    timings["decrypt_s"] = time.perf_counter() - started
    plain = program.forward(scan)[0]
    result: dict[str, Any] = {
        "model": "64-32-10 MLP with x^2, trained on 1,200 digits",
        "plan": plan.to_dict(),
        "public_context_bytes": len(context),
        "request_bytes": len(request),
        "response_bytes": len(response),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "encrypted_prediction": int(logits.argmax()),
        "plaintext_prediction": int(plain.argmax()),
        "true_label": int(y[test[0]]),
        "max_error": float(np.max(np.abs(logits - plain))),
        "error_bound": error_bound(program, plan),
        "secret_key_in_context": doctor.to_bytes()[-2000:] in context,
    }
    if batch:
        images = x[test]
        batched = doctor.decrypt(company.infer(doctor.encrypt(images, layout="batch")))
        result["batch"] = {
            "images": len(test),
            "encrypted_accuracy": float(np.mean(batched.argmax(1) == y[test])),
            "plaintext_accuracy": float(np.mean(program.forward(images).argmax(1) == y[test])),
            "agreement": float(np.mean(batched.argmax(1) == program.forward(images).argmax(1))),
        }
    # Paillier: an encrypted linear risk score of one patient (the weights stay with the server)
    patient = PaillierClient.generate(2048)
    weights = np.linspace(-1, 1, 8)
    record = x[test[0]][:8]
    score = patient.decrypt(
        paillier_linear(patient.public_bytes(), patient.encrypt(record), weights, 0.5)
    )
    result["paillier"] = {
        "score": float(score[0]),
        "plaintext_score": float(weights @ record + 0.5),
    }
    return result
