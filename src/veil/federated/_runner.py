"""Veil's in-process runner: Flower ClientApps driven through Flower's public ``Grid``.

Flower's own simulation needs Ray (about 2 GB of memory and 20 s to start on
two cores). :class:`InProcessGrid` implements the abstract
:class:`flwr.serverapp.Grid` instead: a message pushed to a node is deep-copied
(Flower's mods, ``secaggplus_mod`` among them, pop keys from the records they
are given, and two nodes must never share an object), handed to the real
``ClientApp`` with that node's own :class:`flwr.app.Context`, and the reply is
deep-copied back. The server side (Veil's round loop, or Flower's
``SecAggPlusWorkflow``) cannot tell it from a SuperLink, and the same
``ClientApp`` runs unchanged under ``flower-supernode``.

Nodes run one after another in this process: the two cores go to PyTorch's
intra-op threads inside each client's training instead.

``drop`` simulates disconnects: a callable that sees each message before it is
delivered and returns ``True`` when the node should vanish (it then answers
nothing more in that round, the message's ``group_id``, as a phone that lost
its connection; it is back for the next round).

``test_contract.py`` checks the Flower hooks this relies on, so a Flower
upgrade that changes them fails loudly rather than quietly.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid", "TrafficCounter", "message_bytes"]

_SERVER_NODE_ID = 1
_FIRST_NODE_ID = 1_000


def message_bytes(content: RecordDict) -> int:
    """The payload size of a message: its arrays and its config/metric values."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(array.data) for array in record.values())
    for config in content.config_records.values():
        for value in config.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in items)
    for metrics in content.metric_records.values():
        for value in metrics.values():
            total += 8 * (len(value) if isinstance(value, list) else 1)
    return total


@dataclass
class TrafficCounter:
    """Bytes the server sent and received, and messages exchanged (reset per round)."""

    sent: int = 0
    received: int = 0
    messages: int = 0
    client_seconds: float = 0.0

    def reset(self) -> None:
        self.sent = self.received = self.messages = 0
        self.client_seconds = 0.0


@dataclass
class InProcessGrid(Grid):
    """A Flower ``Grid`` whose nodes are ``ClientApp`` calls in this process.

    Args:
        client_app: The ``ClientApp`` every node runs.
        node_configs: One node config per node (``partition-id``, ...).
        run_config: The run config every context carries.
        drop: Called with each message before delivery; ``True`` disconnects its node.
    """

    client_app: ClientApp
    node_configs: list[Mapping[str, int | float | str | bool]]
    run_config: Mapping[str, int | float | str | bool] = field(default_factory=dict)
    drop: Callable[[Message], bool] | None = None
    traffic: TrafficCounter = field(default_factory=TrafficCounter)

    def __post_init__(self) -> None:
        self._run = Run.create_empty(run_id=int(uuid.uuid4().int % 2**62))
        self._contexts = {
            _FIRST_NODE_ID + i: Context(
                run_id=self._run.run_id,
                node_id=_FIRST_NODE_ID + i,
                node_config=dict(config),
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
            for i, config in enumerate(self.node_configs)
        }
        self._replies: dict[str, Message] = {}
        self.dropped: set[int] = set()
        self._group = ""
        self._claim_identity()

    def _claim_identity(self) -> None:
        # Flower 1.42's Message() reads the sender from the process's task identity, which
        # a SuperLink-launched ServerApp process gets at start-up: this process is the server.
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = _SERVER_NODE_ID
        TaskIdentity.task_id = 0

    # ------------------------------------------------------------ Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def partition_of(self, node_id: int) -> int:
        """The ``partition-id`` of a node."""
        return int(self._contexts[node_id].node_config["partition-id"])

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._claim_identity()
        ids: list[str] = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            message.metadata.__dict__["_src_node_id"] = _SERVER_NODE_ID
            message.metadata.__dict__["_run_id"] = self._run.run_id
            ids.append(message_id)
            node = message.metadata.dst_node_id
            if message.metadata.group_id != self._group:  # a new round: everyone may answer again
                self._group = message.metadata.group_id
                self.dropped.clear()
            if node not in self._contexts:
                raise KeyError(f"no node {node} in this grid")
            if node in self.dropped or (self.drop is not None and self.drop(message)):
                self.dropped.add(node)
                continue
            self.traffic.sent += message_bytes(message.content)
            self.traffic.messages += 1
            delivered = copy.deepcopy(message)
            started = time.perf_counter()
            reply = self.client_app(delivered, self._contexts[node])
            self.traffic.client_seconds += time.perf_counter() - started
            reply = copy.deepcopy(reply)
            reply.metadata.__dict__["_src_node_id"] = node
            reply.metadata.__dict__["_reply_to_message_id"] = message_id
            if reply.has_content():
                self.traffic.received += message_bytes(reply.content)
            self._replies[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        del timeout  # every node answers at once or never (it was dropped)
        return self.pull_messages(self.push_messages(messages))
