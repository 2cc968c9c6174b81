"""The benchmarks behind ``veil bench NAME``, each returning a typed, frozen result.

Every ``run_*_benchmark`` returns a :class:`BenchResult`: ``to_dict()`` is the
JSON report that ``veil bench NAME --output`` writes, and ``view()`` the
tables the command prints. The benchmarks load heavy libraries (PyTorch,
Flower, TenSEAL, OpenDP), so each module is imported on first use of one of
its names.

>>> from veil.bench import run_query_benchmark
>>> result = run_query_benchmark(rows=2_000, groups=5, repeats=1, libraries=["raw", "veil"])
>>> [r.library for r in result.results]
['raw', 'veil']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veil.bench._anonymize import AnonymizeResult, AnonymizeRow, run_anonymize_benchmark
    from veil.bench._audit import AuditResult, AuditRow, run_audit_benchmark
    from veil.bench._audit_targets import audit_pool
    from veil.bench._dpsgd import DpsgdResult, TimingRow, run_dpsgd_benchmark
    from veil.bench._federated import ROWS as FEDERATED_ROWS
    from veil.bench._federated import FederatedResult, FederatedRow, run_federated_benchmark
    from veil.bench._he import HeResult, HeRow, run_he_benchmark
    from veil.bench._ledger import LedgerResult, LedgerRow, run_ledger_benchmark
    from veil.bench._mnist import MnistResult, MnistRun, run_mnist_benchmark
    from veil.bench._mpc import MpcResult, MpcRow, run_mpc_benchmark
    from veil.bench._query import QueryResult, QueryRow, run_query_benchmark
    from veil.bench._query_spark import SparkQueryResult, run_spark_query_benchmark
    from veil.bench._result import BenchResult, Column, Note, Table
    from veil.bench._serve import PARTS as SERVE_PARTS
    from veil.bench._serve import ServeResult, run_serve_benchmark
    from veil.bench._synth import TINY as SYNTH_TINY
    from veil.bench._synth import TINY_COLUMNS as SYNTH_TINY_COLUMNS
    from veil.bench._synth import SynthBenchResult, SynthBenchRow, run_synth_benchmark
    from veil.bench._trail import TrailResult, run_trail_benchmark
    from veil.bench._unlearning import UnlearningResult, run_unlearning_benchmark

_WHERE = {
    "BenchResult": "_result",
    "Column": "_result",
    "Note": "_result",
    "Table": "_result",
    "FEDERATED_ROWS": "_federated",
    "FederatedResult": "_federated",
    "FederatedRow": "_federated",
    "run_federated_benchmark": "_federated",
    "HeResult": "_he",
    "HeRow": "_he",
    "run_he_benchmark": "_he",
    "LedgerResult": "_ledger",
    "LedgerRow": "_ledger",
    "run_ledger_benchmark": "_ledger",
    "MpcResult": "_mpc",
    "MpcRow": "_mpc",
    "run_mpc_benchmark": "_mpc",
    "AnonymizeResult": "_anonymize",
    "AnonymizeRow": "_anonymize",
    "run_anonymize_benchmark": "_anonymize",
    "AuditResult": "_audit",
    "AuditRow": "_audit",
    "run_audit_benchmark": "_audit",
    "audit_pool": "_audit_targets",
    "DpsgdResult": "_dpsgd",
    "MnistResult": "_mnist",
    "MnistRun": "_mnist",
    "TimingRow": "_dpsgd",
    "run_dpsgd_benchmark": "_dpsgd",
    "run_mnist_benchmark": "_mnist",
    "QueryResult": "_query",
    "QueryRow": "_query",
    "run_query_benchmark": "_query",
    "SparkQueryResult": "_query_spark",
    "run_spark_query_benchmark": "_query_spark",
    "SERVE_PARTS": "_serve",
    "ServeResult": "_serve",
    "run_serve_benchmark": "_serve",
    "SYNTH_TINY": "_synth",
    "SYNTH_TINY_COLUMNS": "_synth",
    "SynthBenchResult": "_synth",
    "SynthBenchRow": "_synth",
    "run_synth_benchmark": "_synth",
    "TrailResult": "_trail",
    "run_trail_benchmark": "_trail",
    "UnlearningResult": "_unlearning",
    "run_unlearning_benchmark": "_unlearning",
}

_ALIASES = {
    "FEDERATED_ROWS": "ROWS",
    "SERVE_PARTS": "PARTS",
    "SYNTH_TINY": "TINY",
    "SYNTH_TINY_COLUMNS": "TINY_COLUMNS",
}

__all__ = [
    "FEDERATED_ROWS",
    "SERVE_PARTS",
    "SYNTH_TINY",
    "SYNTH_TINY_COLUMNS",
    "AnonymizeResult",
    "AnonymizeRow",
    "AuditResult",
    "AuditRow",
    "BenchResult",
    "Column",
    "DpsgdResult",
    "FederatedResult",
    "FederatedRow",
    "HeResult",
    "HeRow",
    "LedgerResult",
    "LedgerRow",
    "MnistResult",
    "MnistRun",
    "MpcResult",
    "MpcRow",
    "Note",
    "QueryResult",
    "QueryRow",
    "ServeResult",
    "SparkQueryResult",
    "SynthBenchResult",
    "SynthBenchRow",
    "Table",
    "TimingRow",
    "TrailResult",
    "UnlearningResult",
    "audit_pool",
    "run_anonymize_benchmark",
    "run_audit_benchmark",
    "run_dpsgd_benchmark",
    "run_federated_benchmark",
    "run_he_benchmark",
    "run_ledger_benchmark",
    "run_mnist_benchmark",
    "run_mpc_benchmark",
    "run_query_benchmark",
    "run_serve_benchmark",
    "run_spark_query_benchmark",
    "run_synth_benchmark",
    "run_trail_benchmark",
    "run_unlearning_benchmark",
]


def __getattr__(name: str) -> Any:
    """Import the benchmark module that defines ``name`` on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'veil.bench' has no attribute {name!r}")
    module = importlib.import_module(f"veil.bench.{_WHERE[name]}")
    value = getattr(module, _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
