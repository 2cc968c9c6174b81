"""Goal (d) of ``veil bench unlearning``: ``veil erase`` on a 1,000,000-row managed dataset.

A synthetic table (one person per row: an id, an age, a date, a category) is
registered as a *managed* dataset (sealed in the workspace vault) and one
person is erased through :func:`veil.governance.erase`, the function behind
``veil erase``: a new sealed version without them, the erasure record and trail
entry in one transaction, then the old version's key destroyed. The timed call
is the whole erasure; no model is trained on the table, so no unlearning runs.

The vault's master key is a fresh random one, set in the environment only for
the run (``VEIL_VAULT_KEY``) and restored after it: decision 1 of issue 23 keeps
it outside the workspace.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from veil.progress import ProgressCallback, emit

__all__ = ["time_erase"]

_KEY_VARIABLE = "VEIL_VAULT_KEY"


@contextmanager
def _master_key() -> Iterator[None]:
    saved = os.environ.get(_KEY_VARIABLE)
    os.environ[_KEY_VARIABLE] = secrets.token_hex(32)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_KEY_VARIABLE, None)
        else:
            os.environ[_KEY_VARIABLE] = saved


def _table(path: Path, rows: int, seed: int) -> None:
    import pandas as pd  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    days = rng.integers(0, 3650, size=rows)
    frame = pd.DataFrame(
        {
            "pid": np.arange(rows, dtype=np.int64),
            "age": rng.integers(18, 90, size=rows),
            "visit_date": (np.datetime64("2016-01-01") + days.astype("timedelta64[D]")).astype(str),
            "outcome": rng.choice(["no", "yes"], size=rows),
        }
    )
    frame.to_parquet(path, index=False)


def time_erase(
    folder: Path, rows: int, *, seed: int = 0, progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Register ``rows`` synthetic rows as a managed dataset and time one erasure."""
    from veil.access import Access  # noqa: PLC0415
    from veil.data import Catalog  # noqa: PLC0415
    from veil.governance import erase  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415
    from veil.workspace import Settings, Workspace, login_name  # noqa: PLC0415

    folder.mkdir(parents=True)
    emit(progress, "erase", 0, 3, unit="steps", detail=f"writing {rows:,} rows")
    source = folder / "people.parquet"
    _table(source, rows, seed)
    with _master_key():
        workspace = Workspace.create(folder / ".veil")
        store = Store.open(f"sqlite:///{workspace.sqlite_path}", upgrade=True)
        try:
            settings = Settings(store.display_url, None, login_name())
            access = Access(
                store,
                settings=settings,
                signing_key=KeyStore.for_workspace(workspace).get("trail"),
            )
            catalog = Catalog(store, settings, access=access, workspace=workspace)
            emit(progress, "erase", 1, 3, unit="steps", detail="registering (managed)")
            start = time.perf_counter()
            catalog.add(
                source,
                name="people",
                privacy_unit="pid",
                bounds={"age": (0.0, 120.0)},
                categories={"outcome": ("no", "yes")},
                managed=True,
            )
            add_seconds = time.perf_counter() - start
            person = int(np.random.default_rng(seed).integers(rows))
            emit(progress, "erase", 2, 3, unit="steps", detail="erasing one person")
            start = time.perf_counter()
            report = erase(catalog, "people", person, reason="benchmark", unlearn=False)
            seconds = time.perf_counter() - start
        finally:
            store.dispose()
    emit(progress, "erase", 3, 3, unit="steps", detail="done")
    body = report.to_dict()
    return {
        "rows": rows,
        "seconds": seconds,
        "add_seconds": add_seconds,
        "rows_removed": body.get("rows_removed"),
        "shredded": body.get("shredded"),
    }
