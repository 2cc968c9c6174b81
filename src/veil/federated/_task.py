"""The learning task of a federated run: data, models, local training and evaluation.

* Data: MNIST from its idx files (pixels scaled to [0, 1]) or scikit-learn's
  bundled 8x8 digits (the demo: the catalogue's fixed ``train`` split, tested
  on its ``test`` split), split by :func:`veil.federated._partition.partition`.
  Both are read with the catalogue's own readers, so the training data's
  SHA-256 (:attr:`Task.data_sha256`) is the one ``veil datasets add`` records
  for the same bytes (MNIST ``--split train``; ``sklearn:digits --split
  train``); a run bound to a registered dataset (``data_sha256``) refuses any
  other data (:func:`check_training_data`).
* Models: ``logreg``; ``mlp`` (784-128-10 with ReLU, the "2NN" of McMahan et
  al. 2017 has two 200-unit layers); ``cnn`` (McMahan et al.'s CNN: two 5x5
  convolutions of 32 and 64 channels, each followed by 2x2 max pooling, a
  512-unit layer and the output, 1.66 M parameters on MNIST).
* Local training: SGD over ``local_epochs`` with the FedProx proximal term
  ``mu/2 ||w - w_global||^2`` when asked (Li et al. 2020), or DP-SGD at the
  client (Veil's engine, :func:`veil.train.train`, with Opacus's per-sample
  gradients and noise from AES-CTR) for record-level DP at each hospital.

Clients send the *update* ``w_local - w_global``, not their weights: it is
what clipping bounds, what secure aggregation quantises and what the robust
rules compare.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from veil.errors import InvalidInputError
from veil.federated._attacks import add_trigger, flip_labels, poison_backdoor
from veil.federated._config import FederatedConfig
from veil.federated._partition import partition

__all__ = [
    "Task",
    "build_model",
    "check_training_data",
    "evaluate",
    "get_weights",
    "load_task",
    "local_train",
    "set_weights",
    "training_data_sha256",
]


@dataclass(frozen=True)
class Task:
    """Training and test arrays, with the partition of the training set into clients."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    parts: list[np.ndarray]
    data_sha256: str = ""
    """The SHA-256 of the training data's source, as the catalogue fingerprints it."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def client_data(self, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.parts[partition_id]
        return self.x_train[index], self.y_train[index]


def _mnist_reader(directory: str) -> Any:
    # The catalogue's reader, so that the fingerprint is the one a registration records.
    from veil.data.readers import open_reader  # noqa: PLC0415 - loads pandas

    path = Path(directory)
    if not path.is_dir():
        raise InvalidInputError(
            "no MNIST directory there",
            expected="a directory with the MNIST idx files (train-images-idx3-ubyte[.gz], ...)",
            got=str(path),
            fix="pass --data ../shared/data/mnist",
        )
    return open_reader(str(path), "mnist", split="train")


def _digits_reader(split: str) -> Any:
    from veil.data.readers import open_reader  # noqa: PLC0415 - loads pandas

    return open_reader("sklearn:digits", "sklearn", split=split)


def training_data_sha256(config: FederatedConfig) -> str:
    """The SHA-256 of the data ``config`` trains on, as ``veil datasets add`` records it.

    MNIST: the training split's two idx files in ``config.data`` (a registration
    of that directory with ``--split train``); digits: scikit-learn's bundled set,
    the catalogue's ``train`` split (``sklearn:digits --split train``).
    ``limit`` is not part of it: a run on the first N examples trains on a
    subset of the fingerprinted data.
    """
    reader = (
        _mnist_reader(str(config.data)) if config.dataset == "mnist" else _digits_reader("train")
    )
    digest, _ = reader.fingerprint()
    return str(digest)


def check_training_data(
    config: FederatedConfig, actual: str, *, where: str = "for training"
) -> None:
    """Refuse data other than the registered dataset the run is bound to (``data_sha256``)."""
    expected = config.data_sha256
    if expected is None or actual == expected:
        return
    source = (
        f"the MNIST training split in {config.data}"
        if config.dataset == "mnist"
        else ("scikit-learn's digits, train split")
    )
    bound = f"'{config.ledger_dataset}'" if config.ledger_dataset else "the registered dataset"
    raise InvalidInputError(
        f"the data loaded {where} is not {bound}, the dataset this run is charged to",
        expected=f"data with the registered SHA-256 {expected[:16]}…",
        got=f"SHA-256 {actual[:16]}… ({source})",
        fix="point --data (or the node's data) at the registered files, or charge the run to "
        "the dataset that holds this data (veil datasets list shows each SHA-256)",
    )


def _mnist(directory: str, limit: int | None) -> tuple[Any, ...]:
    from veil.data import load_mnist  # noqa: PLC0415 - the data layer is light but not needed for digits

    reader = _mnist_reader(directory)
    digest, _ = reader.fingerprint()
    train, test = reader.arrays(), load_mnist(Path(directory), "test")
    x_train = (train.images.astype(np.float32) / 255.0)[:, None]
    x_test = (test.images.astype(np.float32) / 255.0)[:, None]
    y_train, y_test = train.labels.astype(np.int64), test.labels.astype(np.int64)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    return x_train, y_train, x_test, y_test, str(digest)


def _digits_arrays(reader: Any) -> tuple[np.ndarray, np.ndarray]:
    frame = reader.read()
    pixels = frame.drop(columns=["digit"]).to_numpy(dtype=np.float32)
    x = (pixels / 16.0).reshape(len(frame), 1, 8, 8)
    return x, np.array(frame["digit"].astype(np.int64), dtype=np.int64)  # a writable copy


def _digits(limit: int | None) -> tuple[Any, ...]:
    train = _digits_reader("train")
    digest, _ = train.fingerprint()
    x_train, y_train = _digits_arrays(train)
    x_test, y_test = _digits_arrays(_digits_reader("test"))
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    return x_train, y_train, x_test, y_test, str(digest)


def load_task(config: FederatedConfig) -> Task:
    """The run's data, split into ``config.clients`` partitions by ``config.partition``.

    Raises:
        InvalidInputError: ``config.data_sha256`` is set and the training data
            loaded is other data (nothing is trained).
    """
    if config.dataset == "mnist":
        x_train, y_train, x_test, y_test, digest = _mnist(str(config.data), config.limit)
    else:
        x_train, y_train, x_test, y_test, digest = _digits(config.limit)
    check_training_data(config, digest)
    parts = partition(
        y_train,
        config.clients,
        config.partition,
        alpha=config.alpha,
        classes_per_client=config.classes_per_client,
        seed=config.seed,
    )
    return Task(x_train, y_train, x_test, y_test, 10, parts, digest)


class _McMahanCNN(nn.Module):
    def __init__(self, side: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        reduced = side // 4
        self.fc1 = nn.Linear(64 * reduced * reduced, 512)
        self.fc2 = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
        x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
        out: torch.Tensor = self.fc2(functional.relu(self.fc1(torch.flatten(x, 1))))
        return out


def build_model(
    kind: str, input_shape: tuple[int, ...], classes: int, hidden: int = 128
) -> nn.Module:
    """A fresh model of ``kind`` (initialised from torch's generator: seed it for a shared start)."""
    features = math.prod(input_shape)
    if kind == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )
    if kind == "cnn":
        return _McMahanCNN(input_shape[-1], classes)
    raise InvalidInputError("unknown model", expected="logreg | mlp | cnn", got=repr(kind))


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as float32 arrays, in ``state_dict`` order."""
    return [
        v.detach().cpu().numpy().astype(np.float32, copy=True) for v in model.state_dict().values()
    ]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    state = model.state_dict()
    if len(weights) != len(state):
        raise InvalidInputError(
            "the weights do not fit the model",
            expected=f"{len(state)} arrays",
            got=str(len(weights)),
        )
    model.load_state_dict(
        {
            k: torch.from_numpy(np.asarray(w, dtype=np.float32)).reshape(v.shape)
            for (k, v), w in zip(state.items(), weights, strict=True)
        }
    )


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays of an update as one float64 vector (what clipping and the rules see)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def unflatten(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """The inverse of :func:`flatten`, shaped like ``like`` (float32)."""
    out, start = [], 0
    for array in like:
        out.append(flat[start : start + array.size].reshape(array.shape).astype(np.float32))
        start += array.size
    return out


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 2000
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch):
            inputs = torch.from_numpy(x[start : start + batch])
            targets = torch.from_numpy(y[start : start + batch])
            logits = model(inputs)
            loss += float(functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
    return loss / max(1, len(y)), correct / max(1, len(y))


def backdoor_success(model: nn.Module, x: np.ndarray, y: np.ndarray, target: int) -> float:
    """Share of test images not of class ``target`` that the trigger turns into ``target``."""
    keep = y != target
    triggered = add_trigger(x[keep], high=1.0)
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(triggered)).argmax(1).numpy()
    return float(np.mean(predictions == target)) if keep.any() else 0.0


def _sgd_epochs(  # noqa: PLR0917 - private helper
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: FederatedConfig,
    global_params: list[torch.Tensor] | None,
    generator: torch.Generator,
) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    total, batches = 0.0, 0
    for _ in range(config.local_epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(inputs[index]), targets[index])
            if global_params is not None and config.proximal_mu > 0:
                proximal = sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + 0.5 * config.proximal_mu * proximal
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach())
            batches += 1
    return total / max(1, batches)


def _dpsgd_epochs(
    model: nn.Module, x: np.ndarray, y: np.ndarray, config: FederatedConfig, seed: int | None
) -> tuple[float, float]:
    from veil.train import DPConfig, plan_training, train  # noqa: PLC0415 - heavy

    dp_config = DPConfig(
        epochs=config.local_epochs,
        batch_size=min(config.batch_size, len(y)),
        max_grad_norm=config.client_max_grad_norm,
        noise_multiplier=config.client_noise_multiplier,
        delta=min(1e-5, 0.5 / len(y)),
        learning_rate=config.lr,
        momentum=config.momentum,
        seed=seed,
    )
    plan = plan_training(dp_config, len(y))
    report = train(model, torch.from_numpy(x), torch.from_numpy(y), plan, n_classes=10)
    losses = [h.get("loss", math.nan) for h in report.history]
    steps = plan.steps_per_epoch * config.local_epochs
    return (float(losses[-1]) if losses else math.nan), float(steps)


def local_train(
    model: nn.Module,
    global_weights: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    config: FederatedConfig,
    *,
    attack: str = "none",
    seed: int = 0,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Train from ``global_weights`` on ``(x, y)``; return the update and the client's metrics.

    ``attack`` makes this client malicious (label flipping and backdoor poisoning
    act on its data; sign flipping, scaled replacement and free-riding on its update).
    """
    started = time.perf_counter()
    set_weights(model, global_weights)
    generator = torch.Generator().manual_seed(seed)  # batch order only; DP-SGD has its own stream
    rng = np.random.default_rng(seed)
    if attack == "label-flip":
        y = flip_labels(y, 10)
    elif attack == "backdoor":
        x, y = poison_backdoor(x, y, config.backdoor_target, 0.5, rng, high=1.0)
    metrics: dict[str, Any] = {}
    if attack == "free-ride":
        loss = math.nan
    elif config.client_noise_multiplier is not None:
        dp_seed = None if config.secure_rng else seed
        loss, steps = _dpsgd_epochs(model, x, y, config, dp_seed)
        metrics["dp-steps"] = steps
    else:
        anchor = None
        if config.strategy == "fedprox":
            anchor = [p.detach().clone() for p in model.parameters()]
        loss = _sgd_epochs(model, x, y, config, anchor, generator)
    local = get_weights(model)
    update = [(w - g).astype(np.float32) for w, g in zip(local, global_weights, strict=True)]
    if attack == "free-ride":
        update = [np.zeros_like(g) for g in global_weights]
    elif attack == "sign-flip":
        scale = config.attack_scale or 1.0
        update = [(-scale * u).astype(np.float32) for u in update]
    elif attack == "backdoor":
        factor = config.attack_scale or config.expected_clients / config.server_lr
        update = [(factor * u).astype(np.float32) for u in update]
    metrics.update(
        {"train-loss": loss, "num-examples": len(y), "train-seconds": time.perf_counter() - started}
    )
    return update, metrics
