"""What a served model answers, and how much, per model and per key: the serving policy file.

The policy is one YAML file (``veil serve --policy FILE``, else ``<home>/serve.yaml``,
else the built-in defaults). Every key is checked when the service starts; an
unknown key, a bad value or a duplicate key is refused with the file, the line
and the path of the key (``models.digits-lr.top_k``), so a typo never leaves a
model less defended than its operator wrote::

    defaults:                     # every model, every key (over the built-in defaults)
      output: label               # label | top_k | probabilities | private_label
      queries_per_key: 500        # records each key may have answered, per model (null: no cap)
      rate: 20/second             # requests per key (a `limits` rate string)
      max_batch: 100              # records per request
    models:
      digits-lr:                  # a model by name (over `defaults`)
        output: top_k
        top_k: 3                  # classes reported (not renormalised: see _defences)
        decimals: 2               # probabilities rounded to this many decimals
        temperature: 2.0          # softmax(log p / T): T > 1 flattens, argmax unchanged
        noise: {kind: laplace, scale: 0.05}   # added to probabilities, then clipped and
                                  # renormalised: output perturbation, NOT a DP guarantee
      adult-sisa:
        output: private_label     # SISA ensembles only: report-noisy-max over shard votes,
        epsilon: 0.5              # each answer epsilon-DP and charged on the training set's ledger
        monitor: {action: throttle}   # read by the monitor (MonitorPolicy.from_mapping)
    keys:
      3f9a0c1d2e4b:               # a service key's id (over the model's settings)
        models:
          digits-lr: {output: probabilities, queries_per_key: 5000}

Layers apply in that order, field by field (``monitor`` mappings merge key by
key), so a per-key entry may narrow or widen any field for one model. The built-in
defaults are the safest useful ones: label only, 500 records per key and model,
20 requests a second, 100 records a request, the monitor on with the action
``alert``. Modifiers that shape probabilities (``decimals``, ``temperature``,
``noise``) act on ``top_k`` and ``probabilities`` answers only; a label answer
has nothing for them to shape.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import limits
import yaml

from veil.errors import InvalidInputError, NotFoundError
from veil.ledger import MAX_RELEASE_EPSILON
from veil.serve._monitor import MonitorPolicy
from veil.train import ModelRegistry

__all__ = ["OUTPUTS", "ModelPolicy", "Noise", "ServePolicy"]

OUTPUTS = ("label", "top_k", "probabilities", "private_label")
NOISE_KINDS = ("laplace", "gaussian")
MAX_DECIMALS = 8
MAX_TEMPERATURE = 1000.0
MAX_BATCH = 10_000
_TOP = ("defaults", "models", "keys")
_DEFAULT_MONITOR: dict[str, Any] = {"enabled": True, "action": "alert"}


@dataclass(frozen=True)
class Noise:
    """Additive noise on probabilities: ``kind`` (laplace | gaussian) of ``scale`` (b or sigma)."""

    kind: Literal["laplace", "gaussian"]
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale}


@dataclass(frozen=True)
class ModelPolicy:
    """The effective policy of one model for one key (every layer of the file applied).

    Attributes:
        output: ``label``, ``top_k``, ``probabilities`` or ``private_label``.
        top_k: Classes a ``top_k`` answer reports (capped at the model's classes).
        decimals: Probabilities rounded to this many decimals (``None``: not rounded).
        temperature: Probabilities flattened as ``softmax(log p / T)``.
        noise: Additive noise on probabilities (``None``: none).
        epsilon: Epsilon of each ``private_label`` answer.
        queries_per_key: Records a key may have answered by this model (``None``: no cap).
        rate: Requests a key may make, as a ``limits`` rate string.
        max_batch: Records in one request.
        monitor: The monitor's settings (:class:`~veil.serve._monitor.MonitorPolicy`).
    """

    output: str = "label"
    top_k: int = 3
    decimals: int | None = None
    temperature: float = 1.0
    noise: Noise | None = None
    epsilon: float | None = None
    queries_per_key: int | None = 500
    rate: str = "20/second"
    max_batch: int = 100
    monitor: MonitorPolicy = field(
        default_factory=lambda: MonitorPolicy.from_mapping(_DEFAULT_MONITOR)
    )

    @property
    def shapes_probabilities(self) -> bool:
        """Whether the answer carries probabilities (``decimals``/``temperature``/``noise`` apply)."""
        return self.output in ("top_k", "probabilities")

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON values (what ``GET /v1/models/{name}`` shows the caller)."""
        out: dict[str, Any] = {"output": self.output}
        if self.output == "top_k":
            out["top_k"] = self.top_k
        if self.shapes_probabilities:
            out |= {
                "decimals": self.decimals,
                "temperature": self.temperature,
                "noise": None if self.noise is None else self.noise.to_dict(),
            }
        if self.output == "private_label":
            out["epsilon"] = self.epsilon
            # Each record answered is one epsilon-DP answer, and the count budget caps the
            # records: a key's own privacy spend is bounded by their product.
            out["epsilon_per_key"] = (
                None
                if self.queries_per_key is None or self.epsilon is None
                else self.epsilon * self.queries_per_key
            )
        out |= {
            "queries_per_key": self.queries_per_key,
            "rate": self.rate,
            "max_batch": self.max_batch,
        }
        return out


# ------------------------------------------------------------------ YAML with line numbers
class _Lines(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based) and its own."""

    line: int = 0
    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader whose mappings keep their lines and refuse duplicate keys."""

    path = "<policy>"


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Lines:
    loader.flatten_mapping(node)
    out = _Lines()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise _error(
                loader.path, line, "", f"a key that is not text ({key!r})",
                expected="names as text", fix=f"quote it: '{key}':",
            )  # fmt: skip
        if key in out:
            raise _error(
                loader.path, line, key, f"'{key}' given twice (first on line {out.lines[key]})",
                expected="each key once", fix="keep one of them",
            )  # fmt: skip
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _error(
    path: str, line: int, where: str, got: str, *, expected: str, fix: str
) -> InvalidInputError:
    location = f"{path}, line {line}" + (f", at {where}" if where else "")
    return InvalidInputError(
        f"invalid serving policy ({location})",
        expected=expected,
        got=got,
        fix=fix,
        details={"path": path, "line": line, "key": where},
    )


# ------------------------------------------------------------------ one layer's fields
_FIELDS = tuple(f.name for f in fields(ModelPolicy))


@dataclass(frozen=True)
class _Spot:
    """Where a value sits in the file, for messages."""

    path: str
    line: int
    where: str

    def bad(self, got: str, expected: str, fix: str) -> InvalidInputError:
        return _error(self.path, self.line, self.where, got, expected=expected, fix=fix)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any, spot: _Spot, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise spot.bad(repr(value), f"a whole number in [{low}, {high}]", f"for example {low}")
    return value


def _positive(value: Any, spot: _Spot, high: float) -> float:
    if not _number(value) or not math.isfinite(value) or not 0 < value <= high:
        raise spot.bad(repr(value), f"a number > 0 and <= {high:g}", "for example 0.5")
    return float(value)


def _rate(value: Any, spot: _Spot) -> str:
    try:
        items = limits.parse_many(value) if isinstance(value, str) else []
    except ValueError:
        items = []
    # A count of zero parses, but the limiter refuses it on every request (a 400 to the caller
    # for the operator's mistake): refuse it here, where the file and line are known.
    if len(items) != 1 or items[0].amount < 1:
        raise spot.bad(
            repr(value),
            "one rate of at least 1, such as 20/second or 600/minute",
            "write COUNT/UNIT",
        )
    return str(value)


def _noise(value: Any, spot: _Spot) -> Noise | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"kind", "scale"}:
        raise spot.bad(
            repr(dict(value) if isinstance(value, Mapping) else value),
            "{kind: laplace | gaussian, scale: NUMBER}",
            "for example noise: {kind: laplace, scale: 0.05}",
        )
    if value["kind"] not in NOISE_KINDS:
        raise spot.bad(repr(value["kind"]), " | ".join(NOISE_KINDS), "noise: {kind: laplace, ...}")
    scale = _positive(value["scale"], spot, 10.0)
    return Noise(kind=value["kind"], scale=scale)


def _output(value: Any, spot: _Spot) -> str:
    if value not in OUTPUTS:
        raise spot.bad(repr(value), " | ".join(OUTPUTS), "output: label (the default)")
    return str(value)


def _monitor_shape(value: Any, spot: _Spot) -> Mapping[str, Any]:
    # The monitor parses it once the layers are merged; here only its shape.
    if not isinstance(value, Mapping):
        raise spot.bad(repr(value), "a mapping of monitor settings", "monitor: {action: alert}")
    return value


def _optional(check: Callable[[Any, _Spot], Any]) -> Callable[[Any, _Spot], Any]:
    return lambda value, spot: None if value is None else check(value, spot)


_CHECKS: dict[str, Callable[[Any, _Spot], Any]] = {
    "output": _output,
    "top_k": lambda v, s: _whole(v, s, 1, 1000),
    "decimals": _optional(lambda v, s: _whole(v, s, 0, MAX_DECIMALS)),
    "temperature": lambda v, s: _positive(v, s, MAX_TEMPERATURE),
    "noise": _noise,
    "epsilon": _optional(lambda v, s: _positive(v, s, MAX_RELEASE_EPSILON)),
    "queries_per_key": _optional(lambda v, s: _whole(v, s, 1, 10**12)),
    "rate": _rate,
    "max_batch": lambda v, s: _whole(v, s, 1, MAX_BATCH),
    "monitor": _monitor_shape,
}
assert set(_CHECKS) == set(_FIELDS)  # noqa: S101 - a field without a check is a bug at import


def _layer(value: Any, spot: _Spot) -> dict[str, Any]:
    """One layer (``defaults``, ``models.NAME``, ``keys.ID.models.NAME``) checked field by field."""
    if value is None:
        return {}
    if not isinstance(value, _Lines):
        raise spot.bad(repr(value), f"a mapping of {', '.join(_FIELDS)}", "see docs/serve.md")
    out: dict[str, Any] = {}
    for name, item in value.items():
        here = _Spot(spot.path, value.lines[name], f"{spot.where}.{name}")
        if name not in _CHECKS:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove or correct the key"
            raise here.bad(repr(name), f"one of {', '.join(_FIELDS)}", fix)
        out[name] = _CHECKS[name](item, here)
    return out


def _names(value: Any, spot: _Spot, what: str) -> _Lines:
    if value is None:
        empty = _Lines()
        empty.lines = {}
        return empty
    if not isinstance(value, _Lines):
        raise spot.bad(repr(value), f"a mapping of {what}", f"{spot.where}: {{NAME: {{...}}}}")
    return value


# ------------------------------------------------------------------ the policy
class ServePolicy:
    """The serving policy: built-in defaults, then the file's layers; effective policies cached.

    Build it with :meth:`load`; :meth:`for_model` gives the effective
    :class:`ModelPolicy` of a model for a key (thread-safe, computed once per pair).
    """

    def __init__(
        self,
        defaults: Mapping[str, Any] | None = None,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        keys: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        *,
        source: str = "built-in defaults",
    ) -> None:
        self.source = source
        self._defaults = dict(defaults or {})
        self._models = {k: dict(v) for k, v in (models or {}).items()}
        self._keys = {k: {m: dict(p) for m, p in v.items()} for k, v in (keys or {}).items()}
        self._cache: dict[tuple[str, str | None], ModelPolicy] = {}
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        """The models the file names (in ``models:`` or under a key), sorted."""
        named = set(self._models) | {m for per_key in self._keys.values() for m in per_key}
        return sorted(named)

    @classmethod
    def load(cls, path: Path | None) -> ServePolicy:
        """The policy in ``path`` (YAML), or the built-in defaults for ``None``.

        Raises:
            NotFoundError: ``path`` does not exist.
            InvalidInputError: The file is not valid YAML, or a key is unknown or
                holds a bad value (the message names the line and the key).
        """
        if path is None:
            return cls()
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(
                "no such serving policy file",
                expected="a YAML file (see docs/serve.md)",
                got=name,
                fix="pass an existing file to --policy, or none for the built-in defaults",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                "cannot read the serving policy file",
                expected="a readable UTF-8 YAML file",
                got=f"{name}: {exc}",
                fix="check the path and its permissions",
            ) from None
        loader = _Loader(text)
        loader.path = name
        try:
            data = loader.get_single_data()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            problem = getattr(exc, "problem", None) or str(exc)
            raise _error(
                name, line, "", f"YAML that does not parse: {problem}",
                expected="valid YAML", fix="correct the file's syntax at that line",
            ) from None  # fmt: skip
        finally:
            loader.dispose()
        return cls._from_data(data, name)

    @classmethod
    def _from_data(cls, data: Any, path: str) -> ServePolicy:
        top = _names(data, _Spot(path, 1, ""), "defaults, models and keys")
        for key in top:
            if key not in _TOP:
                raise _error(
                    path, top.lines[key], key, repr(key),
                    expected=f"one of {', '.join(_TOP)}", fix="remove or correct the key",
                )  # fmt: skip

        def spot(where: str, holder: _Lines, key: str) -> _Spot:
            return _Spot(path, holder.lines.get(key, holder.line), where)

        defaults = _layer(top.get("defaults"), spot("defaults", top, "defaults"))
        models_node = _names(top.get("models"), spot("models", top, "models"), "models")
        models = _per_model(models_node, "models", path)
        keys: dict[str, dict[str, dict[str, Any]]] = {}
        keys_node = _names(top.get("keys"), spot("keys", top, "keys"), "key ids")
        for key_id, entry in keys_node.items():
            entry_spot = spot(f"keys.{key_id}", keys_node, key_id)
            entry_node = _names(entry, entry_spot, "models")
            for extra in entry_node:
                if extra != "models":
                    raise _error(
                        path, entry_node.lines[extra], f"keys.{key_id}.{extra}", repr(extra),
                        expected="models", fix=f"keys: {{{key_id}: {{models: {{NAME: {{...}}}}}}}}",
                    )  # fmt: skip
            per_model = _names(
                entry_node.get("models"),
                spot(f"keys.{key_id}.models", entry_node, "models"),
                "models",
            )
            keys[key_id] = _per_model(per_model, f"keys.{key_id}.models", path)
        policy = cls(defaults, models, keys, source=path)
        # Every combination the file names is resolved now: a policy that cannot hold (a
        # private_label without epsilon, a monitor setting the monitor refuses) stops the start.
        pairs: list[tuple[str, str | None, tuple[str, ...]]] = [("*", None, ("defaults",))]
        pairs += [(m, None, ("models", m)) for m in models]
        pairs += [(m, k, ("keys", k, "models", m)) for k, ms in keys.items() for m in ms]
        for model, key_id, where in pairs:
            spot_ = _Spot(path, _line_of(top, where), ".".join(where))
            policy._check(model, key_id, spot_)
        return policy

    def _check(self, model: str, key_id: str | None, spot: _Spot) -> None:
        try:
            self.for_model(model, key_id)
        except InvalidInputError as exc:
            got = exc.message if exc.got is None else f"{exc.message}: {exc.got}"
            raise spot.bad(got, exc.expected or "a valid policy", exc.fix or "") from None

    def for_model(self, model: str, key_id: str | None) -> ModelPolicy:
        """The effective policy of ``model`` for the key ``key_id`` (``None``: no key's overrides)."""
        cached = self._cache.get((model, key_id))
        if cached is not None:
            return cached
        merged: dict[str, Any] = {"monitor": dict(_DEFAULT_MONITOR)}
        layers = [self._defaults, self._models.get(model, {})]
        if key_id is not None:
            layers.append(self._keys.get(key_id, {}).get(model, {}))
        for layer in layers:
            for name, value in layer.items():
                merged[name] = {**merged["monitor"], **value} if name == "monitor" else value
        if merged.get("output") == "private_label" and merged.get("epsilon") is None:
            raise InvalidInputError(
                "a private_label output needs an epsilon per answer",
                expected="epsilon: NUMBER beside output: private_label",
                got="no epsilon",
                fix="add, for example, epsilon: 0.5 (each answer is charged on the training set's ledger)",
            )
        merged["monitor"] = MonitorPolicy.from_mapping(merged["monitor"])
        policy = ModelPolicy(**merged)
        with self._lock:
            self._cache[(model, key_id)] = policy
        return policy

    def serves_private(self, model: str) -> bool:
        """Whether ``model`` answers ``private_label`` to some key (or to keys without overrides)."""
        return self.for_model(model, None).output == "private_label" or any(
            self.for_model(model, k).output == "private_label" for k in self._keys
        )


def _per_model(node: _Lines, where: str, path: str) -> dict[str, dict[str, Any]]:
    """The layers of a ``{MODEL: {...}}`` mapping, each model name checked as the registry does."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in node.items():
        spot = _Spot(path, node.lines[name], f"{where}.{name}")
        try:
            ModelRegistry.check_name(name)
        except InvalidInputError as exc:
            raise spot.bad(
                repr(name), exc.expected or "a model name", "use the model's name"
            ) from None
        out[name] = _layer(value, spot)
    return out


def _line_of(top: _Lines, where: tuple[str, ...]) -> int:
    """The line of the key at the path ``where`` (its parent's line when absent)."""
    node: Any = top
    line = top.line
    for part in where:
        if not isinstance(node, _Lines) or part not in node:
            return line
        line = node.lines[part]
        node = node[part]
    return line
