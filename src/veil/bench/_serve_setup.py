"""The workspaces ``veil bench serve`` serves: Adult, its models, the keys and the policy.

Everything is built through the library's public calls (the catalogue, the ledger,
:func:`veil.train.fit_private`, :meth:`veil.access.Access.create_key`), exactly as an
operator's ``veil`` commands would, in scratch folders (and a scratch PostgreSQL
database) that the benchmark removes afterwards.

* The **single-worker** workspace (SQLite) holds Adult's training file as ``adult``
  and its test file as ``adult_test``; ``adult-lr``, a non-private logistic regression
  (the extraction victim and the overhead's model, as in the issue's measurements);
  ``adult-dp``, a DP-SGD MLP at epsilon 2 (the membership target); and one key per
  attacker, benign user and load generator, each with its per-key policy.
* The **multi-worker** workspace (PostgreSQL) holds scikit-learn's diabetes and wine
  tables with equal budgets (one for the concurrent clients, one for the sequential
  oracle of what the budget admits: the same COUNT query is the same release on both), ``adult-lr`` again for the rate limit,
  and the keys of the 50 clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from veil.errors import NotFoundError

__all__ = ["Keys", "adult_sources", "build_multi", "build_single"]

MODEL = "adult-lr"
DP_MODEL = "adult-dp"
COUNTS = "counts"
COUNTS_ORACLE = "counts-oracle"
PURPOSE = "benchmark: veil bench serve"


@dataclass
class Keys:
    """Tokens by role in the benchmark, and each key's policy overrides."""

    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def add(self, access: Any, name: str, role: str, dataset: str | None = None) -> str:
        info, token = access.create_key(f"bench-{name}", role, dataset, reason=PURPOSE)
        self.tokens[name] = token
        self.ids[name] = str(info.key_id)
        return str(token)

    def override(self, name: str, model: str, settings: Mapping[str, Any]) -> None:
        self.overrides.setdefault(self.ids[name], {})[model] = dict(settings)

    def policy(self, models: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """The policy file: the built-in defaults, the given model layers, these keys' layers."""
        data: dict[str, Any] = {}
        if models:
            data["models"] = {k: dict(v) for k, v in models.items()}
        if self.overrides:
            data["keys"] = {k: {"models": v} for k, v in self.overrides.items()}
        return yaml.safe_dump(data, sort_keys=True)


def adult_sources(
    data: Path, folder: Path, rows: int | None, test_rows: int | None
) -> tuple[Path, Path]:
    """Adult's two files, or their first rows (a smaller run) copied into ``folder``."""
    src = data / "adult"
    if not (src / "adult.data").is_file():
        raise NotFoundError(
            "the Adult files are missing",
            expected=f"{src}/adult.data and adult.test (the project's shared data)",
            got="no such file",
            fix="pass --data DIR holding adult/",
        )
    if rows is None and test_rows is None:
        return src / "adult.data", src / "adult.test"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (src / "adult.data").read_text().splitlines(keepends=True)
    tests = (src / "adult.test").read_text().splitlines(keepends=True)
    (folder / "adult.data").write_text("".join(lines[:rows]))
    # The test file's first line is a comment.
    (folder / "adult.test").write_text("".join(tests[: 1 + (test_rows or len(tests))]))
    return folder / "adult.data", folder / "adult.test"


@dataclass
class Built:
    """A workspace ready to serve: its home, database URL, keys and facts of its models."""

    home: Path
    database_url: str
    keys: Keys
    facts: dict[str, Any]


def _open(home: Path, database_url: str | None) -> tuple[Any, Any, Any, Any, Any, Any]:
    from veil.access import Access  # noqa: PLC0415
    from veil.data import Catalog  # noqa: PLC0415
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415
    from veil.workspace import Settings, Workspace, login_name  # noqa: PLC0415

    workspace = Workspace.create(home)
    url = database_url or f"sqlite:///{workspace.sqlite_path}"
    store = Store.open(url, upgrade=True)
    settings = Settings(url, None, login_name())
    keys = KeyStore.for_workspace(workspace)
    access = Access(store, settings=settings, signing_key=keys.get("trail"))
    catalog = Catalog(store, settings, access=access, workspace=workspace)
    ledger = Ledger(store, settings, key=keys.get("ledger"), access=access)
    return workspace, store, access, catalog, ledger, ModelRegistry.for_workspace(workspace)


def _train_victim(catalog: Any, ledger: Any, registry: Any, epochs: int) -> None:
    import torch  # noqa: PLC0415

    from veil.train import DPConfig, fit_private  # noqa: PLC0415

    torch.manual_seed(0)  # not-private: the victim is a non-private baseline by design
    config = DPConfig(
        epochs=epochs, batch_size=512, private=False, sampling="shuffle", learning_rate=0.5
    )
    fit_private(
        catalog, ledger, registry, "adult", config, name=MODEL, model="logreg",
        label="income", purpose=PURPOSE,
    )  # fmt: skip


def build_single(
    folder: Path,
    train_file: Path,
    test_file: Path,
    *,
    epochs: int,
    dp_epochs: int,
    dp_epsilon: float,
    benign: int,
    attackers: int,
    extraction_policies: Mapping[str, Mapping[str, Any]],
    budget: int,
    bounds: Mapping[str, tuple[float, float]],
) -> Built:
    """The single-worker workspace (SQLite): Adult, both models, every key, the policy."""
    from veil.ledger import Budget  # noqa: PLC0415
    from veil.train import DPConfig, fit_private  # noqa: PLC0415

    home = folder / ".veil"
    workspace, store, access, catalog, ledger, registry = _open(home, None)
    try:
        catalog.add(train_file, name="adult", format="adult", bounds=bounds)
        catalog.add(test_file, name="adult_test", format="adult", bounds=bounds)
        ledger.set_budget("adult", Budget(epsilon=10.0, delta=1e-5), reason=PURPOSE)
        _train_victim(catalog, ledger, registry, epochs)
        fit_private(
            catalog, ledger, registry, "adult",
            DPConfig(epochs=dp_epochs, batch_size=256, epsilon=dp_epsilon, delta=1e-5,
                     learning_rate=0.5),
            name=DP_MODEL, model="mlp", hidden=(64,), label="income", purpose=PURPOSE,
        )  # fmt: skip
        keys = Keys()
        fast = {"rate": "1000/second", "queries_per_key": None}
        keys.add(access, "load", "consumer")
        keys.override("load", MODEL, fast)
        for name, settings in extraction_policies.items():
            for capped in (False, True):
                key = f"extract-{name}-{'budget' if capped else 'open'}"
                keys.add(access, key, "consumer")
                layer = dict(settings)
                layer["queries_per_key"] = budget if capped else None
                if not capped:
                    layer["rate"] = "1000/second"
                if layer != {"output": "label", "queries_per_key": 500}:
                    keys.override(key, MODEL, layer)
        for i in range(benign):
            keys.add(access, f"benign-{i}", "consumer")
        for i in range(attackers):
            keys.add(access, f"attacker-{i}", "consumer")
        keys.add(access, "membership", "consumer")
        keys.override("membership", DP_MODEL, fast)
        (home / "serve.yaml").write_text(keys.policy(), encoding="utf-8")
        return Built(home, f"sqlite:///{workspace.sqlite_path}", keys, {})
    finally:
        store.dispose()


def build_multi(
    folder: Path,
    database_url: str,
    train_file: Path,
    *,
    clients: int,
    budget_epsilon: float,
    rate: str,
    bounds: Mapping[str, tuple[float, float]],
) -> Built:
    """The multi-worker workspace (PostgreSQL): two equal budgets, a model, the clients' keys."""
    from veil.ledger import Budget  # noqa: PLC0415

    home = folder / ".veil"
    _, store, access, catalog, ledger, registry = _open(home, database_url)
    try:
        # Two different tables (one dataset's bytes may hold one budget): the accountant sees
        # the same Laplace release of a COUNT on either, whatever the rows.
        for name, source in ((COUNTS, "sklearn:diabetes"), (COUNTS_ORACLE, "sklearn:wine")):
            catalog.add(source, name=name)
            ledger.set_budget(name, Budget(epsilon=budget_epsilon, delta=1e-6), reason=PURPOSE)
        catalog.add(train_file, name="adult", format="adult", bounds=bounds)
        _train_victim(catalog, ledger, registry, epochs=1)
        keys = Keys()
        for i in range(clients):
            keys.add(access, f"client-{i}", "analyst", COUNTS)
        keys.add(access, "oracle", "analyst", COUNTS_ORACLE)
        keys.add(access, "limited", "consumer")
        keys.override("limited", MODEL, {"rate": rate, "queries_per_key": None})
        (home / "serve.yaml").write_text(keys.policy(), encoding="utf-8")
        return Built(home, database_url, keys, {})
    finally:
        store.dispose()
