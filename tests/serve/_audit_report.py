"""A real audit report of the served ``digits-lr``, made once per test process.

``veil audit`` (the library call behind it) attacks the model with the loss
threshold attack, which needs no reference models (seconds, not minutes), and
writes the HTML report and its JSON twin, which the tests copy into a served
workspace's model folder, where ``veil unlearn`` keeps the model's report and
where the console reads it. The non-members are the digits test split; the
serve workspace trains on all of digits, so they were members too and the
attack cannot beat chance: the tests read the report, not its finding.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests._cli import environment, run_cli

MODEL = "digits-lr"
_made: dict[Path, tuple[Path, Path]] = {}


def make_report(template_home: Path, scratch: Path) -> tuple[Path, Path]:
    """(html, json) of an audit of ``digits-lr`` made on a copy of ``template_home``."""
    if template_home in _made:
        return _made[template_home]
    from veil.audit import audit_model, write_report
    from veil.data import Catalog
    from veil.train import ModelRegistry
    from veil.workspace import Workspace

    home = scratch / "audited" / ".veil"
    shutil.copytree(template_home, home)
    with environment({"VEIL_HOME": str(home), "VEIL_KEY": None, "VEIL_DATABASE_URL": None}):
        done = run_cli(
            "datasets", "add", "sklearn:digits", "--name", "digits-test", "--split", "test"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        workspace = Workspace(home)
        catalog = Catalog.open(workspace)
        try:
            report = audit_model(
                catalog, ModelRegistry.for_workspace(workspace), MODEL, test="digits-test",
                attacks=("mia",), mia_attacks=("threshold",), references=0, max_points=100,
            )  # fmt: skip
        finally:
            catalog.store.dispose()
    files = (scratch / "audit-report.html", scratch / "audit-report.json")
    write_report(report, *files)
    _made[template_home] = files
    return files


def install_report(files: tuple[Path, Path], home: Path) -> Path:
    """Copy the report into ``home``'s ``digits-lr`` folder; the folder."""
    folder = home / "models" / MODEL
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return folder
