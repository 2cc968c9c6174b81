"""Managed versions under kill -9 and under concurrent erasures and loads.

The crash tests run ``replace_version`` in a child process that SIGKILLs
itself at one step (``VEIL_TEST_CRASH_AT=managed.<step>``, read by
:func:`veil.data._managed.crash_point`), then check from the parent that
exactly one version is current and loads, that the old key was not destroyed
before the new version committed, and that ``finish_shredding`` completes
whatever the crash left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from veil.access import Access, Principal
from veil.data import Catalog
from veil.vault import Vault

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from veil.access import Access, Principal
    from veil.data import Catalog
    from veil.store import Store
    from veil.workspace import Workspace

    store = Store.open(sys.argv[1])
    catalog = Catalog(store, access=Access(store, Principal("alice")),
                      workspace=Workspace(Path(sys.argv[2])))
    frame = catalog.load_frame("patients")
    kept = frame.loc[frame["patient_id"] != "p3"].reset_index(drop=True)
    catalog.replace_version("patients", kept, reason="crash test", action="dataset.erase")
    print("finished")
    """
)
STEPS_BEFORE_COMMIT = ["file-written", "before-commit"]
STEPS_AFTER_COMMIT = ["committed", "key-destroyed", "file-deleted"]


@pytest.fixture
def patients(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    rows = ["patient_id,age,score"] + [f"p{i // 2},{20 + i % 50},{i * 0.5}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _register(catalog: Catalog, patients: Path) -> None:
    catalog.add(patients, name="patients", privacy_unit="patient_id", max_rows=2, managed=True)


def _vault_objects(catalog: Catalog) -> set[str]:
    assert catalog.workspace is not None
    return {o.object_id for o in Vault.inspect(catalog.workspace).objects}


def _sealed_files(catalog: Catalog) -> list[str]:
    assert catalog.workspace is not None
    return sorted(p.name for p in (catalog.workspace.home / "datasets").rglob("*.veil"))


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS_BEFORE_COMMIT + STEPS_AFTER_COMMIT)
def test_kill_9_at_each_step_leaves_exactly_one_current_version(
    managed_owner: Catalog, patients: Path, store_url: str, step: str
):
    _register(managed_owner, patients)
    [old] = managed_owner.versions("patients")
    assert managed_owner.workspace is not None
    env = os.environ | {"VEIL_TEST_CRASH_AT": f"managed.{step}"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, store_url, str(managed_owner.workspace.home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "finished" not in child.stdout

    states = [(v.version, v.state) for v in managed_owner.versions("patients")]
    current = [v for v, s in states if s == "current"]
    assert len(current) == 1, states
    frame = managed_owner.load_frame("patients")
    if step in STEPS_BEFORE_COMMIT:
        assert states == [(1, "current")]
        assert len(frame) == 60
        assert old.object_id in _vault_objects(managed_owner)  # never destroyed before commit
    else:
        assert states == [(1, "superseded"), (2, "current")]
        assert len(frame) == 58 and frame.attrs["veil.version"] == 2

    managed_owner.finish_shredding()
    after = [(v.version, v.state) for v in managed_owner.versions("patients")]
    assert [s for _, s in after].count("current") == 1
    assert all(s in ("current", "shredded") for _, s in after), after
    live = {v.object_id for v in managed_owner.versions("patients") if v.state == "current"}
    assert _vault_objects(managed_owner) == live  # no key left behind, orphan's included
    assert len(_sealed_files(managed_owner)) == 1  # no file left behind
    # And the dataset works on: the next erasure succeeds.
    frame = managed_owner.load_frame("patients")
    kept = frame.loc[frame["patient_id"] != "p5"].reset_index(drop=True)
    change = managed_owner.replace_version("patients", kept, reason="next", action="dataset.erase")
    assert len(managed_owner.load_frame("patients")) == len(kept) == change.new.n_rows


ADD_OR_REMOVE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from veil.access import Access, Principal
    from veil.data import Catalog
    from veil.store import Store
    from veil.workspace import Workspace

    store = Store.open(sys.argv[1])
    catalog = Catalog(store, access=Access(store, Principal("alice")),
                      workspace=Workspace(Path(sys.argv[2])))
    if sys.argv[3] == "add":
        catalog.add(sys.argv[4], name="patients", privacy_unit="patient_id", max_rows=2,
                    managed=True)
    else:
        catalog.remove("patients")
    print("finished")
    """
)


def _killed(catalog: Catalog, store_url: str, step: str, *args: str) -> None:
    assert catalog.workspace is not None
    child = subprocess.run(
        [sys.executable, "-c", ADD_OR_REMOVE, store_url, str(catalog.workspace.home), *args],
        env=os.environ | {"VEIL_TEST_CRASH_AT": f"managed.{step}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]


@pytest.mark.slow
def test_a_registration_killed_before_its_commit_leaves_nothing_after_finish_shredding(
    managed_owner: Catalog, patients: Path, store_url: str
):
    managed_owner.access.trail.head()  # alice claims the workspace before the child acts
    managed_owner.list()
    _killed(managed_owner, store_url, "registration-written", "add", str(patients))
    assert managed_owner.list() == []
    assert len(_sealed_files(managed_owner)) == 1 and len(_vault_objects(managed_owner)) == 1
    managed_owner.finish_shredding()
    assert _sealed_files(managed_owner) == [] and _vault_objects(managed_owner) == set()
    _register(managed_owner, patients)  # and the registration then succeeds
    assert len(managed_owner.load_frame("patients")) == 60
    assert len(_vault_objects(managed_owner)) == 1


@pytest.mark.slow
def test_a_removal_killed_before_shredding_is_completed_by_finish_shredding(
    managed_owner: Catalog, patients: Path, store_url: str
):
    _register(managed_owner, patients)
    _killed(managed_owner, store_url, "removal-committed", "remove")
    assert managed_owner.list() == []
    assert len(_sealed_files(managed_owner)) == 1  # the key and the file outlived the crash
    managed_owner.finish_shredding()
    assert _sealed_files(managed_owner) == [] and _vault_objects(managed_owner) == set()


@pytest.mark.slow
def test_concurrent_erasures_and_loads_each_see_one_whole_version(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    store, workspace = managed_owner.store, managed_owner.workspace
    rounds = 6
    failures: list[BaseException] = []
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def erase() -> None:
        catalog = Catalog(store, access=Access(store, Principal("alice")), workspace=workspace)
        try:
            for person in range(rounds):
                frame = catalog.load_frame("patients")
                kept = frame.loc[frame["patient_id"] != f"p{person}"].reset_index(drop=True)
                catalog.replace_version("patients", kept, reason="r", action="dataset.erase")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            done.set()

    def load() -> None:
        catalog = Catalog(store, access=Access(store, Principal("alice")), workspace=workspace)
        try:
            while not done.is_set() or len(seen) < 3:
                frame = catalog.load_frame("patients", ["patient_id", "age"])
                seen.append((frame.attrs["veil.version"], len(frame)))
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=erase), threading.Thread(target=load)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    counts = {v.version: v.n_rows for v in managed_owner.versions("patients")}
    assert counts == {1 + i: 60 - 2 * i for i in range(rounds + 1)}
    assert seen
    assert len({version for version, _ in seen}) > 1  # the loads did overlap the erasures
    for version, n_rows in seen:
        assert n_rows == counts[version], (version, n_rows)
