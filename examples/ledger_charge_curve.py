"""Charge latency against history size: Gaussian releases of distinct scales, SQLite.

Run it on this checkout (after) and on a checkout from before checkpointed composition (before)::

    python examples/ledger_charge_curve.py 1000
    git worktree add /tmp/old a2cc13b
    PYTHONPATH=/tmp/old/src python examples/ledger_charge_curve.py 500

It prints the milliseconds of the 1st, 10th, 50th, 100th, 200th, 500th and
1,000th charge (as many as it makes; 50 by default), then all of them as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from veil.data import Catalog
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent
from veil.store import Store
from veil.workspace import Settings

MARKS = (1, 10, 50, 100, 200, 500, 1000)


def main(charges: int) -> dict[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'ledger.db'}", upgrade=True)
        settings = Settings(store.display_url, None, "curve")
        Catalog(store, settings).add("sklearn:diabetes", name="d")
        ledger = Ledger(store, settings)
        ledger.set_budget("d", Budget(epsilon=100.0, delta=1e-6))
        seconds = {}
        for number in range(1, charges + 1):
            sigma = 200.0 + 0.37 * number  # every release its own scale
            event = PrivacyEvent("q", (Mechanism.gaussian(sigma=sigma, sensitivity=1.0),))
            began = time.perf_counter()
            ledger.charge("d", event, purpose="curve")
            elapsed = time.perf_counter() - began
            if number in MARKS:
                seconds[number] = elapsed
                print(f"charge {number:>5}: {1e3 * elapsed:7.1f} ms", flush=True)
        store.dispose()
    return seconds


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)))
