"""One round of secure aggregation: Flower's ``SecAggPlusWorkflow`` driven from Veil's loop.

SecAgg+ exists only on Flower's legacy ``Strategy`` path (Flower 1.41-1.42),
so a round wraps this round's clients in a minimal ``Strategy`` that hands
them out and keeps the sum the workflow reconstructs; the server sees only
that sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.compat.common import recorddict_compat as compat
from flwr.compat.common.parameter import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.typing import FitIns, FitRes, Parameters
from flwr.server import LegacyContext
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from veil.federated._config import FederatedConfig

__all__ = ["secagg_round"]

_QUANTISATION = 2**22


class _SecAggRound(Strategy):
    """The legacy ``Strategy`` SecAgg+ asks for: it hands out this round's clients and keeps the sum."""

    def __init__(self, grid: Grid, nodes: list[int], config: dict[str, Any]) -> None:
        self.grid, self.nodes, self.config = grid, nodes, config
        self.mean: list[np.ndarray] | None = None
        self.metrics: list[dict[str, Any]] = []
        self.weight_total = 0

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> list[tuple[ClientProxy, FitIns]]:
        del server_round, client_manager
        return [
            (
                GridClientProxy(n, self.grid, self.grid.run.run_id),
                FitIns(parameters, dict(self.config)),
            )
            for n in self.nodes
        ]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        del server_round, failures
        if results:
            self.mean = parameters_to_ndarrays(
                results[0][1].parameters
            )  # every entry holds the sum
            self.metrics = [dict(res.metrics) for _, res in results]
            self.weight_total = sum(res.num_examples for _, res in results)
        return None, {}

    def initialize_parameters(self, client_manager: Any) -> None:
        del client_manager

    def configure_evaluate(self, *args: Any) -> list[Any]:
        del args
        return []

    def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
        del args
        return None, {}

    def evaluate(self, *args: Any) -> None:
        del args


def secagg_round(  # noqa: PLR0917 - one round's whole state
    grid: Grid,
    config: FederatedConfig,
    nodes: list[int],
    weights: list[np.ndarray],
    round_config: dict[str, Any],
    server_round: int,
    max_weight: int,
) -> tuple[list[np.ndarray] | None, list[dict[str, Any]], int]:
    strategy = _SecAggRound(grid, nodes, round_config)
    base = Context(
        run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
    )
    context = LegacyContext(base, strategy=strategy, client_manager=SimpleClientManager())
    context.state.config_records["config"] = ConfigRecord({"current_round": server_round})
    context.state.array_records["parameters"] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(weights), keep_input=True
    )
    shares = min(config.shares, len(nodes))
    if shares < len(nodes) and shares % 2 == 0:
        shares -= 1  # an odd degree for SecAgg+'s neighbour graph
    threshold = min(config.threshold, shares - 1)
    workflow = SecAggPlusWorkflow(
        num_shares=shares,
        reconstruction_threshold=threshold,
        max_weight=float(max_weight),
        clipping_range=float(config.update_bound or 1.0),
        quantization_range=_QUANTISATION,
    )
    workflow(grid, context)
    return strategy.mean, strategy.metrics, strategy.weight_total
