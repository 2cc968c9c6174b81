"""The demo's forgetting step: a patient withdraws consent and asks to be erased.

A managed (sealed, versioned) table of patients with an identifier, under
consent management; a SISA ensemble trained on it with a held-out set; then
one patient withdraws consent for model training and asks to be forgotten.
The erasure writes a new version without them, unlearns the ensemble (only
the shard that held them) and tests with a membership attack that the model
no longer tells them from patients it never saw, then destroys the old
version's data key: a copy of the old file taken before no longer opens.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veil.access import Access
    from veil.store import Store
    from veil.workspace import Workspace

__all__ = ["DEMO_PATIENT", "FORGET_FILES", "forget_a_patient"]

TITLE = "Forget a patient: consent withdrawn, erased, the model unlearned and tested"
DEMO_PATIENT = "P1017"
FORGET_FILES = ("patients.csv", "patients-heldout.csv")
HELD_OUT = 119  # the last rows of breast_cancer: never trained on, the attack's non-members
PATIENT_BOUNDS = {"radius": (5.0, 30.0), "texture": (5.0, 40.0), "area": (100.0, 2600.0)}


def _write_patients(directory: Any) -> None:
    """scikit-learn's breast-cancer table with a patient number: training rows and held-out rows."""
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415 - heavy

    frame = load_breast_cancer(as_frame=True).frame
    frame = frame[["mean radius", "mean texture", "mean area", "target"]].copy()
    frame.columns = ["radius", "texture", "area", "diagnosis"]
    frame["diagnosis"] = frame["diagnosis"].map({0: "malignant", 1: "benign"})
    frame.insert(0, "patient_id", [f"P{1000 + i}" for i in range(len(frame))])
    cut = len(frame) - HELD_OUT
    frame.iloc[:cut].to_csv(directory / FORGET_FILES[0], index=False)
    frame.iloc[cut:].to_csv(directory / FORGET_FILES[1], index=False)


def forget_a_patient(tour: Any, owner: Access, store: Store, workspace: Workspace) -> None:
    """Step 13 of the tour (see the module docstring); records what each stage showed."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("opacus") is None:
        tour.step(TITLE, 0.0, skipped="needs the train extra: pip install 'veil[train]'")
        return
    from veil.data import Catalog, Consent  # noqa: PLC0415 - heavy
    from veil.errors import NotFoundError  # noqa: PLC0415
    from veil.governance import carried_erasures, erase  # noqa: PLC0415
    from veil.ledger import Budget, Ledger  # noqa: PLC0415
    from veil.train import DPConfig, ModelRegistry, fit_sisa  # noqa: PLC0415
    from veil.vault import MasterKey, Vault  # noqa: PLC0415

    started = time.perf_counter()
    _write_patients(tour.directory)
    # The master key would come from VEIL_VAULT_KEY (a secrets manager); without one the demo
    # holds a fresh key in memory only, so its sealed versions close when the demo ends.
    from_env = bool(os.environ.get("VEIL_VAULT_KEY") or os.environ.get("VEIL_VAULT_PASSPHRASE"))
    master = MasterKey.from_env() if from_env else MasterKey.from_key(secrets.token_bytes(32))
    catalog = Catalog(
        store, workspace.settings, access=owner, workspace=workspace, master_key=master
    )
    for file, name in zip(FORGET_FILES, ("patients", "patients-heldout"), strict=True):
        catalog.add(
            tour.directory / file,
            name=name,
            managed=True,
            privacy_unit="patient_id",
            bounds=PATIENT_BOUNDS,
            categories={"diagnosis": ("benign", "malignant")},
        )
    consent = Consent(catalog)
    consent.enable("patients", default="granted")  # opt-out: the clinic's terms
    ledger = Ledger(store, catalog.settings, access=owner)
    ledger.set_budget(
        "patients-heldout", Budget(epsilon=0.5, delta=0.0), reason="demo: model accuracy"
    )
    registry = ModelRegistry.for_workspace(workspace)
    trained = fit_sisa(
        catalog,
        ledger,
        registry,
        "patients",
        DPConfig(epochs=6, batch_size=32, private=False, learning_rate=0.05),
        name="diagnosis-sisa",
        shards=5,
        slices=3,
        label="diagnosis",
        test="patients-heldout",
        purpose="model-training: diagnosis support",
    )
    trained_in = time.perf_counter() - started
    # The patient withdraws consent for model training, then asks to be erased.
    consent.record(
        "patients", DEMO_PATIENT, "model-training", "withdrawn", source="demo: patient portal"
    )
    old = catalog.current_version("patients")
    assert old is not None  # noqa: S101 - registered as managed just above
    old_blob = (workspace.home / old.path).read_bytes()  # a backup taken before the erasure
    erased_at = time.perf_counter()
    report = erase(
        catalog,
        "patients",
        DEMO_PATIENT,
        reason="demo: right to erasure (GDPR art. 17)",
        registry=registry,
        ledger=ledger,
    )
    erase_seconds = time.perf_counter() - erased_at
    try:
        Vault.open(master, workspace).unseal(old_blob, name=old.path)
        backup = "opened"
    except NotFoundError as gone:
        backup = gone.message
    (unlearning,) = report.unlearning
    tour.step(
        TITLE,
        time.perf_counter() - started,
        patient=DEMO_PATIENT,
        master_key="VEIL_VAULT_KEY" if from_env else "in memory for the demo",
        model=trained.card.to_dict(),
        train_seconds=round(trained_in, 3),
        erase_seconds=round(erase_seconds, 3),
        erasure=report.to_dict(),
        unlearning=unlearning,
        versions=[v.to_dict() for v in catalog.versions("patients")],
        backup_after_erasure=backup,
        carried=carried_erasures(catalog, registry, "diagnosis-sisa").to_dict(),
    )
