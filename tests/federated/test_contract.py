"""The Flower hooks Veil's in-process runner and SecAgg+ path rely on (fails loudly on an upgrade)."""

from __future__ import annotations

import inspect

import flwr
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid


def test_flower_version_is_one_veil_was_tested_with():
    major, minor = (int(p) for p in flwr.__version__.split(".")[:2])
    assert (major, minor) in {(1, 41), (1, 42)}, (
        f"flwr {flwr.__version__}: re-check veil.federated._runner and _server against it"
    )


def test_grid_has_the_abstract_methods_the_runner_implements():
    assert Grid.__abstractmethods__ == {
        "set_run",
        "run",
        "create_message",
        "get_node_ids",
        "push_messages",
        "pull_messages",
        "send_and_receive",
    }
    assert list(inspect.signature(Grid.send_and_receive).parameters) == [
        "self",
        "messages",
        "timeout",
    ]


def test_message_metadata_fields_the_runner_sets():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 0
    message = Message(RecordDict(), 7, "train", group_id="1")
    for key in ("_message_id", "_src_node_id", "_run_id", "_reply_to_message_id", "_dst_node_id"):
        assert key in message.metadata.__dict__
    assert message.metadata.dst_node_id == 7


def test_secagg_plus_pieces_are_where_veil_imports_them():
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow

    assert RECORD_KEY_CONFIGS == "secaggplus_configs"
    assert Stage.COLLECT_MASKED_VECTORS == "collect_masked_vectors"
    parameters = inspect.signature(SecAggPlusWorkflow).parameters
    for name in (
        "num_shares",
        "reconstruction_threshold",
        "max_weight",
        "clipping_range",
        "quantization_range",
    ):
        assert name in parameters
    assert callable(secaggplus_mod)
    assert "strategy" in inspect.signature(LegacyContext).parameters
    assert callable(compat.recorddict_to_fitins) and callable(compat.fitres_to_recorddict)


def test_client_app_keeps_its_mods_list():
    from veil.federated._apps import client_app

    assert any(m.__name__ == "_secagg_when_asked" for m in client_app._mods)
