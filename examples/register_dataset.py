"""Register a bundled dataset with a declared privacy schema, then load it back.

Run from any directory: it creates a throw-away workspace in ./example-workspace.
"""

from __future__ import annotations

from pathlib import Path

from veil.data import Catalog
from veil.store import Store
from veil.workspace import Workspace


def main() -> None:
    workspace = Workspace.create(Path("example-workspace"))
    store = Store.for_workspace(workspace, upgrade=True)
    try:
        catalog = Catalog(store, workspace.settings)
        if "wine" not in [info.name for info in catalog.list()]:
            catalog.add(
                "sklearn:wine",
                name="wine",
                sensitive=["cultivar"],
                bounds={"alcohol": (8.0, 16.0)},  # declared from oenology, not read from the data
            )
        info = catalog.get("wine")
        frame = catalog.load_frame("wine", ["alcohol", "cultivar"])
        outside = info.report["columns"]["alcohol"]
        print(
            f"{info.name}: {info.n_rows} rows; alcohol outside 8..16: "
            f"{outside['below_lower'] + outside['above_upper']}; loaded {frame.shape}"
        )
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
