"""A stand-in Flower App for the deployment tests: a 4-weight numpy "model", no data, no torch.

It honours the same contract as ``veil.federated._apps``: the ServerApp reads ``rounds``,
``clients`` and ``output`` from the run config and writes the run's result JSON to
``output``; the ClientApp reads ``partition-id`` and ``num-partitions`` from its node config.
Each client moves the weights towards its partition id, so the aggregate is checkable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    config = context.run_config
    rounds = int(config.get("rounds", 1))
    clients = int(config.get("clients", 2))
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(4, dtype=np.float64)]),
        num_rounds=rounds,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    weights = result.arrays.to_numpy_ndarrays()[0]
    payload = {
        "rounds": rounds,
        "rounds_completed": len(result.train_metrics_clientapp),
        "weights": weights.tolist(),
        "train_metrics": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "seconds": elapsed,
    }
    output = str(config.get("output", ""))
    if output:
        Path(output).write_text(json.dumps(payload), encoding="utf-8")


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    weights = message.content["arrays"].to_numpy_ndarrays()[0]
    updated = weights + float(partition + 1)
    content = RecordDict(
        {
            "arrays": ArrayRecord([updated]),
            "metrics": MetricRecord({"num-examples": 10, "partition": partition}),
        }
    )
    return Message(content=content, reply_to=message)
