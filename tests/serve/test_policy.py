"""The serving policy file: layers, defaults, and strict refusals that name the file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from veil.errors import InvalidInputError, NotFoundError
from veil.serve._monitor import MonitorPolicy
from veil.serve._policy import ModelPolicy, Noise, ServePolicy


def _load(tmp_path: Path, text: str) -> ServePolicy:
    path = tmp_path / "serve.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return ServePolicy.load(path)


def _refusal(tmp_path: Path, text: str) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        _load(tmp_path, text)
    return info.value


def test_built_in_defaults_are_label_only_with_a_count_budget():
    policy = ServePolicy.load(None).for_model("any-model", "abc123")
    assert policy == ModelPolicy()
    assert (policy.output, policy.queries_per_key, policy.rate, policy.max_batch) == (
        "label",
        500,
        "20/second",
        100,
    )
    assert policy.monitor == MonitorPolicy(enabled=True, action="alert")
    assert policy.to_dict() == {
        "output": "label",
        "queries_per_key": 500,
        "rate": "20/second",
        "max_batch": 100,
    }


def test_layers_apply_defaults_then_model_then_key(tmp_path):
    policy = _load(
        tmp_path,
        """
        defaults:
          queries_per_key: 300
          decimals: 3
          monitor: {action: throttle, throttle_rate: 2/second}
        models:
          m1:
            output: top_k
            top_k: 2
            monitor: {probing: false}
        keys:
          k1:
            models:
              m1: {output: probabilities, queries_per_key: null, decimals: 1}
        """,
    )
    other = policy.for_model("m2", None)
    assert (other.output, other.queries_per_key, other.decimals) == ("label", 300, 3)
    assert other.monitor.action == "throttle"
    m1 = policy.for_model("m1", "k2")  # a key without overrides gets the model's layer
    assert (m1.output, m1.top_k, m1.queries_per_key, m1.decimals) == ("top_k", 2, 300, 3)
    # monitor mappings merge key by key: the model's layer keeps the defaults' action
    assert (m1.monitor.action, m1.monitor.throttle_rate, m1.monitor.probing) == (
        "throttle",
        "2/second",
        False,
    )
    widened = policy.for_model("m1", "k1")
    assert (widened.output, widened.queries_per_key, widened.decimals) == ("probabilities", None, 1)
    assert widened.to_dict()["queries_per_key"] is None
    assert policy.for_model("m1", "k1") is widened  # computed once per (model, key)


def test_noise_and_private_label_fields(tmp_path):
    policy = _load(
        tmp_path,
        """
        models:
          noisy: {output: probabilities, noise: {kind: gaussian, scale: 0.1}, temperature: 2.5}
          sisa: {output: private_label, epsilon: 0.25}
        """,
    )
    noisy = policy.for_model("noisy", None)
    assert noisy.noise == Noise("gaussian", 0.1)
    assert noisy.temperature == 2.5
    assert noisy.to_dict()["noise"] == {"kind": "gaussian", "scale": 0.1}
    assert policy.for_model("sisa", None).epsilon == 0.25
    assert policy.for_model("sisa", None).to_dict()["epsilon_per_key"] == 0.25 * 500
    assert policy.serves_private("sisa") and not policy.serves_private("noisy")


def test_unknown_key_names_file_line_path_and_a_suggestion(tmp_path):
    error = _refusal(
        tmp_path,
        """
        models:
          m1:
            output: label
            tmeperature: 2
        """,
    )
    assert error.details["line"] == 5
    assert error.details["key"] == "models.m1.tmeperature"
    assert error.details["path"].endswith("serve.yaml")
    assert "temperature" in (error.fix or "")
    assert "line 5" in str(error)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("defaults: {output: logits}", "defaults.output"),
        ("defaults: {top_k: 0}", "defaults.top_k"),
        ("defaults: {decimals: 9}", "defaults.decimals"),
        ("defaults: {decimals: 1.5}", "defaults.decimals"),
        ("defaults: {temperature: -1}", "defaults.temperature"),
        ("defaults: {temperature: .nan}", "defaults.temperature"),
        ("defaults: {noise: {kind: uniform, scale: 0.1}}", "defaults.noise"),
        ("defaults: {noise: {kind: laplace}}", "defaults.noise"),
        ("defaults: {noise: {kind: laplace, scale: 0}}", "defaults.noise"),
        ("defaults: {epsilon: 0}", "defaults.epsilon"),
        ("defaults: {queries_per_key: true}", "defaults.queries_per_key"),
        ("defaults: {queries_per_key: 0}", "defaults.queries_per_key"),
        ("defaults: {rate: fast}", "defaults.rate"),
        ("defaults: {rate: 5/second;100/minute}", "defaults.rate"),
        ("defaults: {max_batch: 0}", "defaults.max_batch"),
        ("defaults: {max_batch: 100000}", "defaults.max_batch"),
        ("defaults: {monitor: alert}", "defaults.monitor"),
        ("models: {'bad name!': {output: label}}", "models.bad name!"),
        ("models: [m1]", "models"),
        ("keys: {k1: {defaults: {}}}", "keys.k1.defaults"),
        ("keys: {k1: {models: {m1: {rate: x}}}}", "keys.k1.models.m1.rate"),
        ("servers: {}", "servers"),
    ],
)
def test_bad_values_are_refused_with_their_key(tmp_path, body, key):
    error = _refusal(tmp_path, body)
    assert error.details["key"] == key, error
    assert error.details["line"] == 1
    assert error.expected and error.got is not None


def test_cross_field_and_monitor_errors_are_refused_at_load_with_their_line(tmp_path):
    error = _refusal(
        tmp_path,
        """
        models:
          ok: {output: label}
          sisa:
            output: private_label
        """,
    )
    assert (error.details["key"], error.details["line"]) == ("models.sisa", 4)
    assert "epsilon" in str(error)
    error = _refusal(
        tmp_path,
        """
        keys:
          k1:
            models:
              m1: {monitor: {action: explode}}
        """,
    )
    assert (error.details["key"], error.details["line"]) == ("keys.k1.models.m1", 5)
    assert "action" in str(error)


def test_duplicates_non_text_keys_and_bad_yaml(tmp_path):
    error = _refusal(tmp_path, "models:\n  m1: {}\n  m1: {}\n")
    assert error.details["line"] == 3 and "line 2" in (error.got or "")
    error = _refusal(tmp_path, "models:\n  1.5: {}\n")
    assert error.details["line"] == 2 and "quote" in (error.fix or "")
    error = _refusal(tmp_path, "models:\n  m1: {output: [label\n")
    assert error.details["line"] >= 2 and "YAML" in str(error)
    error = _refusal(tmp_path, "- just\n- a list\n")
    assert "mapping" in (error.expected or "")


def test_empty_file_is_the_defaults_and_a_missing_file_is_not_found(tmp_path):
    assert _load(tmp_path, "").for_model("m", None) == ModelPolicy()
    with pytest.raises(NotFoundError):
        ServePolicy.load(tmp_path / "absent.yaml")
