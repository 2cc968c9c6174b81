"""Federated runs end to end in the in-process runner, on the bundled digits (fast) and MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message

from veil.errors import BudgetExceededError, InvalidInputError, PrivacyLeakWarning
from veil.federated import (
    FederatedConfig,
    FederatedResult,
    InProcessGrid,
    Mode,
    federate,
    load_config,
    run_federation,
)
from veil.federated._apps import _train
from veil.federated._task import load_task

BASE = {
    "dataset": "digits",
    "model": "logreg",
    "clients": 6,
    "rounds": 2,
    "lr": 0.2,
    "batch_size": 16,
}


def _config(**changes):
    return FederatedConfig(**{**BASE, **changes})


@pytest.mark.slow
def test_fedavg_learns_and_reports_rounds():
    result = federate(_config(rounds=3))
    assert [row["round"] for row in result.history] == [1, 2, 3]
    assert result.rounds_completed == 3
    assert all(row["participants"] == 6 for row in result.history)
    assert result.history[-1]["accuracy"] > result.history[0]["accuracy"] - 0.02
    assert result.accuracy > 0.5  # logreg on digits after 3 rounds
    assert result.history[0]["bytes_sent"] > 0 and result.history[0]["bytes_received"] > 0
    payload = json.loads(json.dumps(result.to_dict()))
    assert FederatedResult.from_dict(payload).to_dict() == payload  # a deployed run's way back


def test_modes_are_an_enum_that_takes_the_plain_strings_too():
    assert Mode.parse("simulate") is Mode.SIMULATE
    assert Mode.parse(Mode.DEPLOY) is Mode.DEPLOY
    assert [str(mode) for mode in Mode] == ["simulate", "deploy"]
    with pytest.raises(InvalidInputError, match="unknown mode") as caught:
        Mode.parse("cluster")
    assert "simulate | deploy" in caught.value.expected


def test_ray_is_refused_before_anything_runs(monkeypatch):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr("veil.federated._run.load_task", no_work)
    monkeypatch.setattr("veil.federated._run.bind_to_ledger", no_work)
    with pytest.raises(InvalidInputError, match="Ray simulation is not a mode") as caught:
        federate(_config(), mode="ray")
    assert "simulate" in caught.value.fix
    assert "deploy" in caught.value.fix


def test_a_deployed_run_needs_its_superlink_and_takes_no_round_hooks():
    with pytest.raises(InvalidInputError, match="needs its SuperLink"):
        federate(_config(), mode=Mode.DEPLOY)
    with pytest.raises(InvalidInputError, match="no per-round hooks"):
        federate(_config(), mode="deploy", superlink="127.0.0.1:9095", on_round=print)


@pytest.mark.slow
def test_secagg_equals_plain_fedavg_within_one_quantisation_step():
    bound = 2.0
    plain = federate(_config(rounds=1, norm_bound=bound))
    secure = federate(_config(rounds=1, norm_bound=bound, secagg=True))
    step = 2 * bound / 2**22  # SecAgg+ quantises [-bound, bound] into 2^22 levels
    diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(plain.weights, secure.weights, strict=True)
    )
    assert 0 < diff <= step, diff  # not bit-identical (it was quantised), but within one step
    assert secure.history[0]["participants"] == 6


@pytest.mark.slow
def test_secagg_survives_a_client_dropping_mid_round():
    def drop_node(message: Message) -> bool:
        configs = message.content.config_records.get("secaggplus_configs")
        return (
            message.metadata.dst_node_id == 1_002
            and configs is not None
            and configs.get("stage") == "collect_masked_vectors"
        )

    config = _config(rounds=1, norm_bound=2.0, secagg=True)
    result = federate(config, drop=drop_node)
    assert result.history[0]["participants"] == 5 and result.rounds_completed == 1
    # The right sum: plain FedAvg over the five clients that stayed.
    task = load_task(config)
    keep = [i for i in range(6) if i != 2]
    reference = federate(
        config.replace(secagg=False), drop=lambda m: m.metadata.dst_node_id == 1_002
    )
    assert list(keep) and reference.history[0]["participants"] == 5
    diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(reference.weights, result.weights, strict=True)
    )
    assert diff <= 2 * 2 * 2.0 / 2**22, diff
    assert task.parts  # the partition the two runs share


def test_incompatible_and_unsafe_configs_are_refused_before_the_run():
    with pytest.raises(InvalidInputError, match="cannot run under secure aggregation"):
        _config(secagg=True, strategy="krum")
    with pytest.raises(InvalidInputError, match="threshold"):
        _config(clients=3, sample_rate=0.3, secagg=True)
    with pytest.raises(InvalidInputError, match="delta"):
        _config(dp="central", noise_multiplier=1.0)
    with pytest.raises(InvalidInputError, match="a DP run needs a budget"):
        federate(_config(dp="central", noise_multiplier=1.0, delta=1e-3))
    with pytest.raises(BudgetExceededError, match="exceed"):
        federate(_config(dp="central", noise_multiplier=0.3, delta=1e-3, max_epsilon=1.0))


def test_config_files_toml_and_yaml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[federate]\ndataset = "digits"\nmodel = "mlp"\nclients = 4\nlocal-epochs = 2\n'
    )
    config = load_config(toml, rounds=3)
    assert (config.model, config.clients, config.local_epochs, config.rounds) == ("mlp", 4, 2, 3)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("dataset: digits\nstrategy: median\nclients: 5\n")
    assert load_config(yaml_file).strategy == "median"
    (tmp_path / "bad.toml").write_text("clinets = 4\n")
    with pytest.raises(InvalidInputError, match="unknown setting 'clinets'"):
        load_config(tmp_path / "bad.toml")
    assert FederatedConfig.from_run_config(config.to_run_config()) == config


def test_the_old_name_of_sample_rate_is_still_read(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('dataset = "digits"\nclients = 4\nfraction = 0.5\n')
    assert load_config(old).sample_rate == 0.5
    assert load_config(old, sample_rate=0.75).sample_rate == 0.75  # the flag wins
    stored = {**_config().to_dict(), "fraction": 0.25}  # a result written before the rename
    del stored["sample_rate"]
    assert FederatedConfig.from_mapping(stored).sample_rate == 0.25


def _corrupting_app(bad_partition: int, kind: str):
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Message, context):
        reply = _train(message, context)
        if int(context.node_config["partition-id"]) == bad_partition:
            arrays = reply.content.array_records["update"].to_numpy_ndarrays()
            arrays = [np.full_like(arrays[0], np.nan), *arrays[1:]] if kind == "nan" else arrays[:1]
            reply.content.array_records["update"] = ArrayRecord(arrays)
        return reply

    return app


@pytest.mark.parametrize("kind", ["nan", "shape"])
def test_malformed_updates_are_rejected_and_logged(kind):
    config = _config(rounds=1)
    task = load_task(config)
    grid = InProcessGrid(
        client_app=_corrupting_app(3, kind),
        node_configs=[{"partition-id": i, "num-partitions": 6} for i in range(6)],
        run_config=config.to_run_config(),
    )
    result = run_federation(grid, config, task=task)
    assert result.history[0]["rejected"] == 1 and result.history[0]["participants"] == 5
    assert result.rejected[0]["node"] == 1_003
    assert ("NaN" in result.rejected[0]["reason"]) == (kind == "nan")
    assert all(np.all(np.isfinite(w)) for w in result.weights)


@pytest.mark.slow
def test_robust_rule_resists_sign_flipping():
    attacked = {
        "attack": "sign-flip",
        "malicious": 0.3,
        "attack_scale": 10.0,
        "clients": 10,
        "rounds": 3,
    }
    fedavg = federate(_config(**attacked))
    median = federate(_config(**attacked, strategy="median"))
    assert median.accuracy > fedavg.accuracy + 0.1, (median.accuracy, fedavg.accuracy)


@pytest.mark.slow
def test_central_dp_run_is_charged_to_the_ledger_once(workspace):
    from veil.data import Catalog
    from veil.ledger import Budget, Ledger

    Catalog.open().add("sklearn:digits", name="digits-fl", split="train")
    ledger = Ledger.open()
    ledger.set_budget("digits-fl", Budget(epsilon=20.0, delta=1e-4), reason="test")
    config = _config(
        dp="central",
        noise_multiplier=1.0,
        delta=1e-4,
        sample_rate=0.8,
        ledger_dataset="digits-fl",
        secure_rng=True,
    )
    result = federate(config, guard=ledger)
    entries = ledger.entries("digits-fl")
    assert len(entries) == 1 and entries[0].operation == "federated"
    assert entries[0].epsilon == pytest.approx(result.privacy["epsilon"])
    assert result.privacy["epsilon_rdp"] >= result.privacy["epsilon"]
    with pytest.raises(BudgetExceededError):  # a run that would overspend never starts
        federate(config.replace(rounds=40), guard=ledger)  # epsilon 33 (under the cap of 100)
    assert len(ledger.entries("digits-fl")) == 1


@pytest.mark.slow
def test_local_dp_and_client_dpsgd_runs_report_their_epsilon():
    local = federate(
        _config(dp="local", noise_multiplier=2.0, clip=1.0, delta=1e-5, max_epsilon=100.0, rounds=1)
    )
    assert local.privacy["epsilon"] > 0 and "local" in local.privacy["level"]
    with pytest.warns(PrivacyLeakWarning, match="seeded"):
        record = federate(_config(rounds=1, client_noise_multiplier=1.0, secure_rng=False))
    assert record.privacy["level"].startswith("record") and record.rounds_completed == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"strategy": "fedprox", "proximal_mu": 0.1},
        {"strategy": "fedadam", "server_lr": 0.05},
        {"strategy": "krum", "byzantine": 2},
        {"strategy": "multikrum", "byzantine": 2},
        {"strategy": "bulyan", "byzantine": 2},
        {"strategy": "median", "partition": "dirichlet", "alpha": 0.3},
        {"strategy": "trimmed-mean", "trim": 0.2},
        {"partition": "pathological", "classes_per_client": 4},
        {"norm_bound": 0.5, "partition": "quantity"},
    ],
    ids=lambda c: "-".join(str(v) for v in c.values()),
)
def test_every_strategy_runs_a_round_and_improves_on_chance(changes):
    result = federate(_config(clients=11, rounds=2, **changes))
    assert result.rounds_completed == 2
    assert result.accuracy > 0.2, result.accuracy  # chance is 0.1
    if "norm_bound" in changes:
        assert result.history[0]["norm_bounded"] > 0


@pytest.mark.slow
def test_adaptive_clipping_moves_the_clip():
    config = _config(
        dp="central",
        noise_multiplier=1.0,
        delta=1e-4,
        adaptive_clip=True,
        clip=0.01,
        sample_rate=1.0,
        max_epsilon=1e3,
        rounds=3,
        clients=12,
        secure_rng=False,
    )
    with pytest.warns(PrivacyLeakWarning):
        result = federate(config)
    clips = [row["clip"] for row in result.history]
    assert clips[-1] > clips[0]  # every update is far above 0.01: the clip grows
