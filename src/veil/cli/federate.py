"""``veil federate``: federated training on Flower (in one process or on a real deployment).

``veil federate --config run.toml`` (or flags) runs a federated training, simulated in
one process (the default) or submitted to a deployment (``--deploy``);
``veil federate serve`` and ``veil federate join`` start a SuperLink and
SuperNodes for ``--deploy``. Every setting of
:class:`veil.federated.FederatedConfig` is a config key; the common ones are
flags too, and ``--set KEY=VALUE`` reaches the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli import _federate_deploy
from veil.cli._output import out, print_json, progress_bar, write_json_atomic
from veil.errors import InvalidInputError

__all__ = ["app", "render_result"]

app = typer.Typer(
    help="Federated learning on Flower: SecAgg+, user-level DP with accounting, robust "
    "aggregation. Run `veil federate --config run.toml`, or start a deployment with "
    "`veil federate serve` / `veil federate join`.",
    invoke_without_command=True,
)
_federate_deploy.register(app)

_FLAGS = (
    "dataset",
    "data",
    "model",
    "clients",
    "partition",
    "alpha",
    "sample_rate",
    "rounds",
    "local_epochs",
    "batch_size",
    "lr",
    "strategy",
    "secagg",
    "dp",
    "noise_multiplier",
    "target_epsilon",
    "clip",
    "delta",
    "ledger_dataset",
    "attack",
    "malicious",
    "seed",
)


def render_result(payload: dict[str, Any]) -> None:
    """Rounds, the final model and what the run spent, for people."""
    table = Table(
        "round",
        "clients",
        "rejected",
        "loss",
        "accuracy",
        "s",
        "overhead s",
        "MB sent",
        title="federated rounds",
    )
    for row in payload["history"]:
        table.add_row(
            str(row["round"]),
            str(row["participants"]),
            str(row["rejected"]),
            f"{row['loss']:.4f}",
            f"{row['accuracy']:.4f}",
            f"{row['seconds']:.2f}",
            f"{row['overhead_seconds']:.3f}",
            f"{row['bytes_sent'] / 1e6:.2f}",
        )
    out.print(table)
    out.print(
        f"final accuracy {payload['accuracy']:.4f} after {payload['rounds_completed']} aggregated rounds"
    )
    if payload.get("backdoor_success") is not None:
        out.print(f"backdoor success rate {payload['backdoor_success']:.4f}")
    privacy = payload.get("privacy")
    if privacy:
        line = f"privacy: {privacy['level']}"
        if "epsilon" in privacy:
            line += f", epsilon {privacy['epsilon']:.3f} at delta {privacy['delta']:g}"
        if privacy.get("charged"):
            line += f", charged to the ledger of '{privacy['ledger']['dataset']}'"
        out.print(line)
    data = payload.get("data") or {}
    if data.get("dataset") and data.get("nodes"):
        out.print(
            f"data: SHA-256 {str(data['sha256'])[:16]}... of '{data['dataset']}', checked on the "
            f"server and {len(data['nodes'])} clients before round 1"
        )
    for item in payload.get("rejected", []):
        out.print(
            f"[yellow]round {item['round']}: update of node {item['node']} rejected: {item['reason']}[/yellow]"
        )


def _settings(values: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    settings = {k: v for k, v in values.items() if v is not None}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                "a --set needs KEY=VALUE", expected="e.g. --set norm-bound=5", got=repr(pair)
            )
        settings[key.strip().replace("-", "_")] = value.strip()
    return settings


@app.callback()
def federate(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A TOML or YAML run config (flags override it)."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="mnist (with --data) or digits (bundled).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Directory holding the MNIST idx files.")] = None,
    model: Annotated[str | None, typer.Option(help="logreg | mlp | cnn.")] = None,
    clients: Annotated[int | None, typer.Option(help="Number of clients.")] = None,
    partition: Annotated[
        str | None, typer.Option(help="iid | dirichlet | pathological | quantity.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Dirichlet / quantity skew concentration.")
    ] = None,
    sample_rate: Annotated[
        float | None,
        typer.Option(help="Share of clients sampled per round (DP: the Poisson rate)."),
    ] = None,
    fraction: Annotated[
        float | None, typer.Option(hidden=True, help="The old name of --sample-rate.")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="fedavg | fedprox | fedadam | krum | multikrum | bulyan | median | trimmed-mean."
        ),
    ] = None,
    secagg: Annotated[
        bool | None,
        typer.Option("--secagg/--no-secagg", help="Flower's SecAgg+ secure aggregation."),
    ] = None,
    dp: Annotated[str | None, typer.Option(help="none | central (DP-FedAvg) | local.")] = None,
    noise_multiplier: Annotated[float | None, typer.Option(help="DP noise multiplier z.")] = None,
    target_epsilon: Annotated[
        float | None, typer.Option(help="Central DP: calibrate z to this epsilon.")
    ] = None,
    clip: Annotated[
        float | None, typer.Option(help="DP: L2 bound on each client's update.")
    ] = None,
    delta: Annotated[float | None, typer.Option(help="DP: delta (required).")] = None,
    ledger_dataset: Annotated[
        str | None, typer.Option(help="DP: the registered dataset whose budget the run spends.")
    ] = None,
    attack: Annotated[
        str | None, typer.Option(help="none | label-flip | sign-flip | backdoor | free-ride.")
    ] = None,
    malicious: Annotated[float | None, typer.Option(help="Fraction of malicious clients.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the partition, model and sampling (not of DP noise)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any other setting, KEY=VALUE (repeatable).")
    ] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Veil's in-process runner (default).")
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            hidden=True,
            help="Refused with the reason: Flower's Ray simulation is not a mode of a Veil run.",
        ),
    ] = False,
    deploy: Annotated[
        bool,
        typer.Option(
            "--deploy", help="Submit to a running SuperLink (started by veil federate serve)."
        ),
    ] = False,
    superlink: Annotated[
        str,
        typer.Option(
            help="--deploy: the SuperLink's Control address, HOST:PORT on the coordinator's "
            "loopback (`veil federate serve` prints it; not the data holders' address)."
        ),
    ] = "127.0.0.1:9095",
    credentials: Annotated[
        Path, typer.Option(help="--deploy: the credentials directory (its ca.pem).")
    ] = Path("federation/credentials"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the run's JSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run a federated training from a config file and/or flags."""
    if ctx.invoked_subcommand is not None:
        return
    from veil.federated import FederatedConfig, Mode, federate, load_config  # noqa: PLC0415 - heavy

    if sample_rate is None:
        sample_rate = fraction
    local = dict(locals())
    values = _settings({k: local[k] for k in _FLAGS}, set_ or [])
    run_config = (
        load_config(config, **values)
        if config
        else FederatedConfig.from_mapping(values, source="flags")
    )
    chosen = [name for name, on in (("simulate", simulate), ("ray", ray), ("deploy", deploy)) if on]
    if len(chosen) > 1:
        raise InvalidInputError(
            "choose one mode", expected="--simulate, --ray or --deploy", got="several"
        )
    mode = Mode.parse(chosen[0] if chosen else Mode.SIMULATE)  # --ray is refused here
    # The workspace's ledger is the run's budget gate; the run is bound to the data it charges.
    guard = _workspace_ledger() if run_config.ledger_dataset is not None else None
    if mode is Mode.DEPLOY:
        from veil.federated.deploy import DeployCredentials  # noqa: PLC0415 - deployment only

        result = federate(
            run_config,
            mode=mode,
            guard=guard,
            superlink=superlink,
            credentials=DeployCredentials.load(credentials),
        )
    else:
        with progress_bar() as progress:
            result = federate(run_config, mode=mode, progress=progress, guard=guard)
    payload = result.to_dict()
    if output is not None:
        write_json_atomic(output, payload)
    if as_json:
        print_json(payload)
    else:
        render_result(payload)


def _workspace_ledger() -> Any:
    from veil.ledger import Ledger  # noqa: PLC0415 - only runs charged to a dataset need it

    return Ledger.open()
