"""JAX's persistent compilation cache: the user's own folder, or none at all.

JAX loads and runs the programs it finds in its cache folder, so the folder is
used only when it belongs to the user and nobody else may write it (the
outsider's cases below); one child process shows the default path end to end.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from veil.synth._model import compilation_cache_folder

PROBE = """
import sys
import jax.numpy as jnp
from veil.synth import load_mbi
load_mbi(cache=sys.argv[1] == "cache")
import jax
print(jax.config.jax_compilation_cache_dir)
jax.jit(lambda x: x * 3 + 1)(jnp.arange(4.0)).block_until_ready()
"""


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_folder_is_created_for_its_owner_only(cache_home: Path):
    folder = compilation_cache_folder()
    assert folder == cache_home / "veil" / "jax"
    assert _mode(folder) == 0o700 and _mode(folder.parent) == 0o700
    assert compilation_cache_folder() == folder  # found again, as it was left


@pytest.mark.parametrize("which", ["folder", "parent"])
def test_a_folder_others_may_write_is_never_used(cache_home: Path, which: str):
    folder = cache_home / "veil" / "jax"
    folder.mkdir(parents=True)
    (folder if which == "folder" else folder.parent).chmod(0o777)  # an outsider could plant code
    assert compilation_cache_folder() is None


def test_a_link_or_a_file_in_its_place_is_never_used(cache_home: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (cache_home / "veil").mkdir(parents=True, mode=0o700)
    (cache_home / "veil" / "jax").symlink_to(elsewhere)
    assert compilation_cache_folder() is None
    (cache_home / "veil" / "jax").unlink()
    (cache_home / "veil" / "jax").write_text("not a folder")
    assert compilation_cache_folder() is None


def test_a_folder_above_that_others_may_write_without_the_sticky_bit_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could rename veil/ and put theirs in its place
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "cache"))
    assert compilation_cache_folder() is None
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner may rename what is inside
    assert compilation_cache_folder() == shared / "cache" / "veil" / "jax"


def test_a_relative_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache_folder() == tmp_path / "home" / ".cache" / "veil" / "jax"
    assert not (tmp_path / "relative").exists()  # the test runs in tmp_path


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another account needs root")
def test_a_folder_another_account_owns_is_never_used(cache_home: Path):
    folder = cache_home / "veil" / "jax"
    folder.mkdir(parents=True, mode=0o700)
    os.chown(folder, 65534, 65534)  # nobody
    assert compilation_cache_folder() is None


def _probe(cache_home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["XDG_CACHE_HOME"] = str(cache_home)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_synthesis_keeps_its_compiled_programs_there_unless_told_not_to(cache_home: Path):
    folder = cache_home / "veil" / "jax"
    assert _probe(cache_home, "cache") == str(folder)
    kept = sorted(p.name for p in folder.iterdir() if p.name.endswith("-cache"))
    assert any(name.startswith("jit__lambda") for name in kept), kept
    # Without the cache (the synthesis benchmark's generators): nothing set, nothing written.
    other = cache_home.parent / "other"
    assert _probe(other, "none") == "None"
    assert not (other / "veil").exists()
