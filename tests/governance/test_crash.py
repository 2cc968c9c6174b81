"""kill -9 in the middle of ``veil erase`` and ``veil retention run``: old or new, never neither.

Each test runs the command in a child process that SIGKILLs itself at one step
(``VEIL_TEST_CRASH_AT``: the catalogue's ``managed.<step>`` points inside the
version protocol, this package's ``governance.<step>`` points around it), then
checks from the parent that exactly one version is current and that it is
whole: the old one with the person, or the new one without. A key is destroyed
only once its version is superseded by a durable one. Then the next command
(which finishes shredding first) completes or redoes the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.governance._data import VAULT_KEY

pytestmark = pytest.mark.slow  # a child process to kill per step (about two seconds each)

PERSON = "P-0003"
CHILD = "import sys; from veil.cli._app import main; sys.exit(main(sys.argv[1:]))"

# One step per state a crash can leave: a sealed file no row records; the swap's transaction
# open; the new version committed, the old one not shredded; the old key destroyed, its file
# and row not yet updated. (The other crash points leave one of these states too.)
ERASE_STEPS = [
    "managed.file-written",
    "managed.before-commit",
    "governance.erase.after_commit",
    "managed.key-destroyed",
]
RETENTION_STEPS = [
    "managed.file-written",
    "governance.retention.after_commit",
    "managed.key-destroyed",
]


def _child(cwd: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env |= {"VEIL_VAULT_KEY": VAULT_KEY, "COLUMNS": "120"}
    if crash_at is not None:
        env["VEIL_TEST_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _state(catalog_of) -> tuple[int, list[tuple[int, str]], set[str], set[str]]:
    """(current version, [(version, state)], the current version's persons, destroyed key ids)."""
    catalog = catalog_of()
    versions = catalog.versions("visits")
    current = [v.version for v in versions if v.state == "current"]
    assert len(current) == 1, f"exactly one version must be current, got {versions}"
    frame = catalog.load_frame("visits", purpose="test")
    assert frame.attrs.get("veil.version") == current[0]
    manifest = json.loads((Path(catalog.workspace.home) / "vault" / "vault.json").read_text())
    destroyed = set(manifest.get("destroyed", {}))
    return current[0], [(v.version, v.state) for v in versions], set(frame["pid"]), destroyed


@pytest.mark.parametrize("step", ERASE_STEPS)
def test_kill_9_during_erase_leaves_the_old_or_the_new_version(
    tmp_path, managed, catalog_of, cli, step
):
    before = catalog_of().current_version("visits")
    done = _child(tmp_path, "erase", "visits", "--person", PERSON, "--reason", "r", crash_at=step)
    assert done.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (step, done.stderr)
    current, versions, people, destroyed = _state(catalog_of)
    if current == before.version:
        assert PERSON in people, step
        assert before.object_id not in destroyed, "the only current version lost its key"
    else:
        assert current == before.version + 1
        assert PERSON not in people, step
    if before.object_id in destroyed:  # a key is destroyed only behind a durable new version
        assert current == before.version + 1
    # The next erase finishes the shredding first, then does (or finds done) the work (run
    # here: a fresh process proves nothing more than the killed one's being gone).
    code, _, err = cli("erase", "visits", "--person", PERSON, "--reason", "r", "--json")
    if current == before.version:
        assert code == 0, err
    else:
        assert code == 6, err  # not found: already erased
    current, versions, people, destroyed = _state(catalog_of)
    assert PERSON not in people
    assert [s for _, s in versions].count("current") == 1
    assert all(s == "shredded" for v, s in versions if v != current), versions
    assert before.object_id in destroyed
    leftovers = sorted(
        p.name
        for p in (Path(catalog_of().workspace.home) / "datasets").rglob("*")
        if p.is_file() and p.name != ".lock"
    )
    assert leftovers == [f"v{current}.parquet.veil"]


@pytest.mark.parametrize("step", RETENTION_STEPS)
def test_kill_9_during_retention_leaves_the_old_or_the_new_version(
    tmp_path, managed, catalog_of, cli, step
):
    assert cli("retention", "set", "visits", "--older-than", "365d", "--date-column",
               "visit_date")[0] == 0  # fmt: skip
    before = catalog_of().current_version("visits")
    done = _child(tmp_path, "retention", "run", crash_at=step)
    assert done.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (step, done.stderr)
    current, _, _, destroyed = _state(catalog_of)
    assert current in (before.version, before.version + 1)
    if before.object_id in destroyed:
        assert current == before.version + 1
    code, out, err = cli("retention", "run", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["changed"] == ([] if current == before.version + 1 else ["visits"])
    current, versions, _, destroyed = _state(catalog_of)
    assert current == before.version + 1
    assert all(s == "shredded" for v, s in versions if v != current), versions
    assert before.object_id in destroyed
