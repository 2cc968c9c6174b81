"""A federated run, declared: :class:`FederatedConfig`, from flags or a TOML/YAML file.

Every parameter is checked when the config is made, before any client trains
or any budget is spent (STYLE.md: validate up front), and combinations that
cannot work are refused with the reason: a robust rule that needs individual
updates under secure aggregation, a DP run without a delta, fewer clients per
round than the secure-aggregation threshold, and so on.

Flower's run config is a flat table of scalars with dashed keys;
:meth:`FederatedConfig.to_run_config` / :meth:`FederatedConfig.from_run_config`
translate, so one config drives the in-process runner and a deployment.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from veil._validate import whole_number
from veil.errors import InvalidInputError

__all__ = [
    "ATTACK_KINDS",
    "DP_MODES",
    "MODELS",
    "PARTITIONS",
    "ROBUST_STRATEGIES",
    "STRATEGIES",
    "FederatedConfig",
    "Mode",
    "load_config",
]

MODELS = ("logreg", "mlp", "cnn")
PARTITIONS = ("iid", "dirichlet", "pathological", "quantity")
STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "krum",
    "multikrum",
    "bulyan",
    "median",
    "trimmed-mean",
)
# Rules that look at each client's update separately: secure aggregation hides those.
ROBUST_STRATEGIES = ("krum", "multikrum", "bulyan", "median", "trimmed-mean")
DP_MODES = ("none", "central", "local")
ATTACK_KINDS = ("none", "label-flip", "sign-flip", "backdoor", "free-ride")
DATASETS = ("mnist", "digits")
_RENAMED = {"fraction": "sample_rate"}  # old key -> setting, for configs and results on disk


class Mode(enum.StrEnum):
    """Where a federated run executes (:func:`veil.federated.federate`'s ``mode``).

    The plain strings are accepted too (``mode="deploy"``). Flower's Ray simulation is not
    a mode: Flower 1.42's ``run_simulation`` takes no run config, returns no result and
    could not be charged through the budget gate, so ``"ray"`` is refused before anything
    runs (:meth:`parse`).
    """

    SIMULATE = "simulate"  # Veil's in-process runner, one process, no Ray
    DEPLOY = "deploy"  # a running SuperLink and its SuperNodes (veil.federated.deploy)

    @classmethod
    def parse(cls, value: str) -> Mode:
        """``value`` as a :class:`Mode`; an unknown mode, or ``"ray"``, is refused."""
        try:
            return cls(value)
        except ValueError:
            pass
        if str(value).lower() == "ray":
            raise InvalidInputError(
                "Flower's Ray simulation is not a mode of a Veil run",
                expected="mode " + " | ".join(cls),
                got="'ray'",
                fix="use 'simulate' (--simulate, the default: the same ServerApp and ClientApp "
                "in one process, with the budget gate), or 'deploy' (--deploy) against a "
                "SuperLink; Flower 1.42's Ray runner cannot carry the run's config, return "
                "its result or charge its budget",
            )
        raise InvalidInputError("unknown mode", expected=" | ".join(cls), got=repr(value))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _fail(name: str, expected: str, value: object, fix: str | None = None) -> InvalidInputError:
    return InvalidInputError(
        f"invalid federated run setting '{name.replace('_', '-')}'",
        expected=expected,
        got=repr(value),
        fix=fix,
    )


@dataclass(frozen=True)
class FederatedConfig:
    """Everything a federated run needs. Field names map to ``--flags`` and config keys.

    Data: ``dataset`` is ``mnist`` (``data`` = a directory holding the MNIST idx
    files) or ``digits`` (scikit-learn's bundled 8x8 digits); ``limit`` keeps
    the first N training examples (tests); ``ledger_dataset`` names the
    registered dataset whose budget a DP run spends. ``data_sha256`` binds the
    run to that dataset's bytes: the SHA-256 the catalogue recorded for it
    (filled in from the registration when the run is charged to a workspace
    ledger); every process that loads the training data (the server, each
    client) fingerprints what it loaded and refuses to train on other data.
    ``data_check`` makes a run that only asks every client for that
    fingerprint, without training (a deployment's first step before the charge).

    Secure aggregation: ``secagg`` runs Flower's SecAgg+ (Bell et al. 2020);
    ``secagg_shares`` (default: all sampled clients) and
    ``secagg_threshold`` (default: two thirds of the shares) set its
    dropout tolerance; updates are L2-bounded by ``norm_bound`` (or the DP
    clip) on the client, which also sets the quantisation range.

    Rounds: ``sample_rate`` is the share of clients sampled per round (training's
    word; ``fraction`` in configs and results written before, still read), exactly
    ``round(sample_rate * clients)`` of them, or under central DP each with that
    probability. ``rounds`` are federated rounds, not optimiser steps: in each
    round a client takes ``local_epochs`` of local steps, so the name stays.

    Central DP (``dp = "central"``, DP-FedAvg): clients are Poisson-sampled
    with rate ``sample_rate``, their updates clipped to ``clip`` (adaptively when
    ``adaptive_clip``), Gaussian noise ``noise_multiplier`` (or calibrated to
    ``target_epsilon``) is added by the server; ``delta`` is required. ``clip``
    bounds a client's whole update (user-level DP), not one example's gradient,
    so it is not training's ``max_grad_norm``; that one is ``client_max_grad_norm``.
    Local DP (``dp = "local"``): each client clips and noises its own update.
    Record-level DP-SGD at each client: ``client_noise_multiplier`` and
    ``client_max_grad_norm``.
    """

    dataset: str = "mnist"
    data: str | None = None
    limit: int | None = None
    ledger_dataset: str | None = None
    data_sha256: str | None = None
    data_check: bool = False
    model: str = "mlp"
    hidden: int = 128
    clients: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    sample_rate: float = 1.0
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    strategy: str = "fedavg"
    server_lr: float = 1.0
    proximal_mu: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_tau: float = 1e-3
    byzantine: int = 0
    trim: float = 0.1
    norm_bound: float | None = None
    secagg: bool = False
    secagg_shares: int | None = None
    secagg_threshold: int | None = None
    dp: str = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    clip: float = 1.0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    delta: float | None = None
    max_epsilon: float | None = None
    client_noise_multiplier: float | None = None
    client_max_grad_norm: float = 1.0
    attack: str = "none"
    malicious: float = 0.0
    attack_scale: float | None = None
    backdoor_target: int = 0
    dropout: float = 0.0
    seed: int = 0
    secure_rng: bool = True
    output: str | None = None

    def __post_init__(self) -> None:  # noqa: C901, PLR0912 - one check per setting
        choices = {
            "dataset": DATASETS,
            "model": MODELS,
            "partition": PARTITIONS,
            "strategy": STRATEGIES,
            "dp": DP_MODES,
            "attack": ATTACK_KINDS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise _fail(name, " | ".join(allowed), getattr(self, name))
        for name in ("clients", "rounds", "local_epochs", "batch_size", "hidden"):
            whole_number(
                getattr(self, name),
                name,
                message=f"invalid federated run setting '{name.replace('_', '-')}'",
                expected="a whole number >= 1",
            )
        if self.clients < 2:  # noqa: PLR2004
            raise _fail("clients", "at least 2 clients", self.clients)
        for name in ("lr", "server_lr", "clip", "alpha", "client_max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise _fail(name, "a finite number > 0", value)
        for name in ("momentum", "proximal_mu", "adam_tau"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise _fail(name, "a finite number >= 0", value)
        if not 0 < self.sample_rate <= 1:
            raise _fail(
                "sample_rate", "0 < sample_rate <= 1 (clients sampled per round)", self.sample_rate
            )
        if not 0 <= self.malicious < 1:
            raise _fail("malicious", "0 <= fraction of malicious clients < 1", self.malicious)
        if not 0 <= self.dropout < 1:
            raise _fail("dropout", "0 <= probability a client disconnects < 1", self.dropout)
        if not 0 <= self.trim < 0.5:  # noqa: PLR2004
            raise _fail("trim", "0 <= trim < 0.5", self.trim)
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise _fail("norm_bound", "a number > 0, or unset", self.norm_bound)
        if self.limit is not None and self.limit < self.clients:
            raise _fail("limit", f"at least one example per client (>= {self.clients})", self.limit)
        if self.dataset == "mnist" and not self.data:
            raise _fail(
                "data",
                "the directory holding the MNIST idx files",
                self.data,
                fix="pass --data ../shared/data/mnist (or --dataset digits for the bundled set)",
            )
        if self.data_sha256 is not None and not _SHA256.fullmatch(self.data_sha256):
            raise _fail(
                "data_sha256",
                "64 lowercase hexadecimal digits (the content_sha256 of veil datasets show)",
                self.data_sha256,
            )
        if self.data_check and self.data_sha256 is None:
            raise _fail(
                "data_check",
                "a data_sha256 to check the clients' data against",
                self.data_check,
                fix="set data_sha256 (or --ledger-dataset, which reads it from the registration)",
            )
        if self.attack != "none" and self.malicious == 0:
            raise _fail("malicious", "a fraction > 0 of clients for the attack", self.malicious)
        self._check_secagg()
        self._check_dp()

    def _check_secagg(self) -> None:
        if not self.secagg:
            return
        if self.strategy in ROBUST_STRATEGIES:
            raise InvalidInputError(
                f"'{self.strategy}' cannot run under secure aggregation",
                expected="fedavg, fedprox or fedadam with --secagg (norm bounding and DP clipping "
                "are compatible: clients apply them before masking)",
                got=f"strategy={self.strategy} with secagg",
                fix=f"drop --secagg, or use --norm-bound with fedavg instead of {self.strategy}: "
                f"{self.strategy} needs every client's update in the clear, which is what "
                "secure aggregation hides",
            )
        if self.dp == "central" and self.adaptive_clip:
            raise _fail(
                "adaptive_clip",
                "fixed clipping under secure aggregation (the unclipped count would need "
                "its own masked sum)",
                "adaptive",
                fix="drop --adaptive-clip or --secagg",
            )
        per_round = self.expected_clients
        threshold = self.threshold
        if per_round < max(threshold, 3) or threshold < 2:  # noqa: PLR2004
            raise InvalidInputError(
                "fewer clients per round than the secure-aggregation threshold",
                expected=f"at least {max(threshold, 3)} clients per round (the threshold of "
                "shares needed to unmask; SecAgg+ needs 3 or more)",
                got=f"{per_round:g} expected clients per round "
                f"({self.clients} clients x sample rate {self.sample_rate})",
                fix="raise --clients or --sample-rate, or lower --secagg-threshold",
            )
        if self.shares < 3 or threshold >= self.shares:  # noqa: PLR2004
            raise _fail(
                "secagg_threshold",
                f"2 <= threshold < shares ({self.shares}), shares >= 3",
                (threshold, self.shares),
            )

    def _check_dp(self) -> None:
        if self.dp == "none":
            if self.noise_multiplier is not None or self.target_epsilon is not None:
                raise _fail(
                    "dp",
                    "central or local when a noise level is given",
                    self.dp,
                    fix="--dp central",
                )
            return
        if self.delta is None or not 0 < self.delta < 1:
            raise _fail(
                "delta",
                "0 < delta < 1 for a DP run (typically below 1 / clients)",
                self.delta,
                fix="pass --delta 1e-5",
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise _fail(
                "noise_multiplier",
                "exactly one of --noise-multiplier or --target-epsilon",
                (self.noise_multiplier, self.target_epsilon),
            )
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise _fail("noise_multiplier", "a number > 0", self.noise_multiplier)
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise _fail("target_epsilon", "a number > 0", self.target_epsilon)
        if self.dp == "central" and self.strategy in ROBUST_STRATEGIES:
            raise _fail(
                "strategy",
                "fedavg, fedprox or fedadam with central DP (its sensitivity is the clipped mean's)",
                self.strategy,
            )
        if self.dp == "local" and self.target_epsilon is not None:
            raise _fail("target_epsilon", "--noise-multiplier for local DP", self.target_epsilon)

    # ------------------------------------------------------------ derived
    @property
    def expected_clients(self) -> float:
        """Clients per round: exactly ``round(sample_rate * clients)`` or, under DP, in expectation."""
        if self.dp == "central":
            return self.sample_rate * self.clients
        return float(max(1, round(self.sample_rate * self.clients)))

    @property
    def shares(self) -> int:
        """SecAgg+ shares per client: the neighbours each client masks with and shares its keys to.

        Default: every sampled client, made odd (Flower's SecAgg+ graph needs an odd
        degree when it is not complete), at least 3.
        """
        if self.secagg_shares is not None:
            return self.secagg_shares
        shares = max(3, math.floor(self.expected_clients))
        return shares if shares % 2 or shares >= self.expected_clients else shares - 1

    @property
    def threshold(self) -> int:
        """Shares needed to reconstruct a secret (default: two thirds of the shares, below them)."""
        if self.secagg_threshold is not None:
            return self.secagg_threshold
        return max(2, min(self.shares - 1, math.ceil(2 * self.shares / 3)))

    @property
    def update_bound(self) -> float | None:
        """The L2 bound every client applies to its update, if any."""
        if self.dp in ("central", "local"):
            return self.clip
        return self.norm_bound

    def replace(self, **changes: Any) -> FederatedConfig:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------ Flower run config
    def to_run_config(self) -> dict[str, int | float | str | bool]:
        """Flat, dashed, scalar keys (Flower's run config); unset values are left out."""
        return {
            f.name.replace("_", "-"): getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> FederatedConfig:
        """From a mapping with dashed or underscored keys; unknown keys are refused.

        Keys written before a setting was renamed (``fraction``) are read as the new one.
        """
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            name = _RENAMED.get(name, name)  # as with dashes and underscores, the last wins
            if name not in known:
                raise InvalidInputError(
                    f"unknown setting '{key}' in the {source}",
                    expected="one of " + ", ".join(sorted(n.replace("_", "-") for n in known)),
                    got=repr(key),
                )
            kwargs[name] = _coerce(name, value, known[name].type)
        return cls(**kwargs)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederatedConfig:
        return cls.from_mapping(run_config, source="Flower run config")


def _coerce(name: str, value: Any, annotation: Any) -> Any:  # noqa: C901, PLR0911 - one branch per type
    kind = str(annotation)
    if value is None:
        return None
    if "bool" in kind:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise _fail(name, "true or false", value)
    if "int" in kind and "float" not in kind:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise _fail(name, "a whole number", value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _fail(name, "a whole number", value) from None
    if "float" in kind:
        if isinstance(value, bool):
            raise _fail(name, "a number", value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _fail(name, "a number", value) from None
    return str(value)


def load_config(path: str | Path, **overrides: Any) -> FederatedConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) run config; flags override it.

    The file may hold the settings at its top level or under a ``[federate]`` table.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            "no such run config", expected="a .toml or .yaml file", got=str(path)
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            values: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text) or {}
        else:
            raise InvalidInputError(
                "unknown run config format",
                expected="a .toml, .yaml or .yml file",
                got=path.name,
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(
            f"cannot parse the run config {path.name}", expected="valid TOML or YAML", got=str(exc)
        ) from None
    if not isinstance(values, dict):
        raise InvalidInputError(
            "a run config is a table of settings",
            expected="key = value lines",
            got=type(values).__name__,
        )
    values = dict(values.get("federate", values))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FederatedConfig.from_mapping(values, source=path.name)
