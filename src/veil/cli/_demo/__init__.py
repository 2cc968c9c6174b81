"""The steps of ``veil demo`` and its HTML summary (the command itself is ``veil.cli.demo``)."""

from veil.cli._demo._steps import DEMO_EPSILON, DEMO_K, DEMO_QI, DEMO_SQL, Tour, run_demo
from veil.cli._demo._summary import summary_html

__all__ = ["DEMO_EPSILON", "DEMO_K", "DEMO_QI", "DEMO_SQL", "Tour", "run_demo", "summary_html"]
