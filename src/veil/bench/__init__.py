"""The benchmarks behind ``veil bench NAME``, each returning a JSON-ready report.

>>> from veil.bench import run_query_benchmark
>>> report = run_query_benchmark(rows=2_000, groups=5, repeats=1, libraries=["raw", "veil"])
>>> [r["library"] for r in report["results"]]
['raw', 'veil']
"""

from veil.bench._anonymize import run_anonymize_benchmark
from veil.bench._audit import run_audit_benchmark
from veil.bench._dpsgd import run_dpsgd_benchmark, run_mnist_benchmark
from veil.bench._query import run_query_benchmark

__all__ = [
    "run_anonymize_benchmark",
    "run_audit_benchmark",
    "run_dpsgd_benchmark",
    "run_mnist_benchmark",
    "run_query_benchmark",
]
