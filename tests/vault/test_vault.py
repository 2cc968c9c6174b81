"""veil.vault: round trips, wrong keys, every tamper case, rotation and its crash safety."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.progress import ProgressEvent
from veil.vault import MasterKey, SealedObject, Vault, VaultStatus
from veil.vault._format import HEADER_BYTES, TAG_BYTES
from veil.workspace import Workspace

CHEAP_N = 2**4  # scrypt cost for tests only; the default is 2**17
PASSPHRASE = "correct horse battery staple"  # noqa: S105 - a test passphrase
CHUNK = 64


def _key(passphrase: str = PASSPHRASE) -> MasterKey:
    return MasterKey.from_passphrase(passphrase, n=CHEAP_N)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / ".veil")


@pytest.fixture
def vault(ws: Workspace) -> Vault:
    return Vault.open(_key(), ws, create=True)


def _manifest(ws: Workspace) -> dict:
    return json.loads((ws.home / "vault" / "vault.json").read_text(encoding="utf-8"))


def _write_manifest(ws: Workspace, manifest: dict) -> None:
    (ws.home / "vault" / "vault.json").write_text(json.dumps(manifest), encoding="utf-8")


def _chunks(blob: bytes, name: str) -> tuple[bytes, list[bytes]]:
    start = HEADER_BYTES + len(name.encode())
    body = blob[start:]
    size = CHUNK + TAG_BYTES
    return blob[:start], [body[i : i + size] for i in range(0, len(body), size)]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 5])
def test_file_round_trip_at_chunk_edges(vault: Vault, tmp_path: Path, size: int):
    plain = os.urandom(size)
    (tmp_path / "data.bin").write_bytes(plain)
    record = vault.encrypt_file("data.bin", "data.bin.veil", chunk_size=CHUNK)
    assert isinstance(record, SealedObject) and record.kind == "file" and record.size == size
    sealed = (tmp_path / "data.bin.veil").read_bytes()
    chunks = max(1, -(-size // CHUNK))  # an empty input is one empty, final chunk
    assert len(sealed) == HEADER_BYTES + len("data.bin.veil") + size + chunks * TAG_BYTES
    assert stat.S_IMODE((tmp_path / "data.bin.veil").stat().st_mode) == 0o600
    opened = vault.decrypt_file("data.bin.veil", "back.bin")
    assert opened.object_id == record.object_id
    assert (tmp_path / "back.bin").read_bytes() == plain
    assert stat.S_IMODE((tmp_path / "back.bin").stat().st_mode) == 0o600


def test_default_chunks_stream_a_larger_file_and_report_progress(vault: Vault, tmp_path: Path):
    plain = os.urandom(2 * 2**20 + 17)  # three 1 MiB chunks
    (tmp_path / "big.bin").write_bytes(plain)
    events: list[ProgressEvent] = []
    vault.encrypt_file("big.bin", "big.veil", progress=events.append)
    assert plain[:4096] not in (tmp_path / "big.veil").read_bytes()
    assert [e.completed for e in events] == [2**20, 2**21, len(plain)]
    assert events[-1].total == len(plain) and events[-1].unit == "bytes"
    vault.decrypt_file("big.veil", "big.out")
    assert (tmp_path / "big.out").read_bytes() == plain


def test_seal_and_unseal_in_memory(vault: Vault, ws: Workspace):
    secret = os.urandom(300)
    blob = vault.seal(secret, name="he/ckks-secret-key", chunk_size=CHUNK)
    assert secret not in blob and blob.startswith(b"VEILVLT\x01")
    assert vault.unseal(blob, name="he/ckks-secret-key") == secret
    status = vault.status()
    assert isinstance(status, VaultStatus) and status.exists
    assert [(o.name, o.kind, o.size) for o in status.objects] == [
        ("he/ckks-secret-key", "blob", 300)
    ]
    # A second process opens the same vault with the same passphrase.
    assert Vault.open(_key(), ws).unseal(blob, name="he/ckks-secret-key") == secret


def test_the_vault_state_is_owner_only_and_holds_no_secret(vault: Vault, ws: Workspace):
    raw = bytes(range(32))
    vault.seal(b"x", name="a")
    directory = ws.home / "vault"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    text = (directory / "vault.json").read_text(encoding="utf-8")
    assert stat.S_IMODE((directory / "vault.json").stat().st_mode) == 0o600
    assert PASSPHRASE not in text
    assert "n=16" in repr(_key()) and PASSPHRASE not in repr(_key())
    assert repr(MasterKey.from_key(raw)) == "MasterKey(raw key)"
    status = json.dumps(vault.status().to_dict())
    assert "salt" not in status and '"dek"' not in status and '"check"' not in status


def test_inspect_and_open_before_a_vault_exists(ws: Workspace):
    status = Vault.inspect(ws)
    assert not status.exists and status.objects == ()
    with pytest.raises(NotFoundError, match="no vault yet"):
        Vault.open(_key(), ws)
    assert not (ws.home / "vault" / "vault.json").exists()
    Vault.open(_key(), ws, create=True)
    assert Vault.inspect(ws).kdf == {"name": "scrypt", "n": CHEAP_N, "r": 8, "p": 1}


# ------------------------------------------------------------------ wrong keys


def test_wrong_passphrase_is_refused_and_writes_nothing(vault: Vault, ws: Workspace, tmp_path):
    (tmp_path / "a.txt").write_text("patient 1\n", encoding="utf-8")
    vault.encrypt_file("a.txt", "a.veil")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidInputError, match="does not open the vault") as caught:
        Vault.open(_key("not the passphrase"), ws)
    assert "not the passphrase" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_raw_and_passphrase_keys_are_not_confused(ws: Workspace):
    raw = MasterKey.from_key(os.urandom(32))
    Vault.open(raw, ws, create=True)
    with pytest.raises(InvalidInputError, match="opens with a raw key"):
        Vault.open(_key(), ws)
    with pytest.raises(InvalidInputError, match="does not open the vault"):
        Vault.open(MasterKey.from_key(os.urandom(32)), ws)
    assert Vault.inspect(ws).kdf == {"name": "raw"}


def test_passphrase_vault_refuses_a_raw_key(vault: Vault, ws: Workspace):
    with pytest.raises(InvalidInputError, match="opens with a passphrase"):
        Vault.open(MasterKey.from_key(os.urandom(32)), ws)


def test_keys_from_the_environment():
    raw = os.urandom(32)
    for text in (
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    ):
        assert MasterKey.from_env({"VEIL_VAULT_KEY": text})._raw == raw
    key = MasterKey.from_env({"VEIL_VAULT_PASSPHRASE": PASSPHRASE})
    assert key.kind == "scrypt"
    # The raw key wins when both are set.
    both = {"VEIL_VAULT_KEY": raw.hex(), "VEIL_VAULT_PASSPHRASE": PASSPHRASE}
    assert MasterKey.from_env(both).kind == "raw"
    with pytest.raises(NotFoundError, match="no vault secret"):
        MasterKey.from_env({})
    for bad in ("ab" * 31, "zz" * 32, base64.b64encode(raw[:16]).decode()):
        with pytest.raises(InvalidInputError, match="not a 256-bit key") as caught:
            MasterKey.from_env({"VEIL_VAULT_KEY": bad})
        assert bad not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MasterKey.from_passphrase("short"), "too short"),
        (lambda: MasterKey.from_passphrase(PASSPHRASE, n=1000), "scrypt"),
        (lambda: MasterKey.from_passphrase(PASSPHRASE, n=2**23), "scrypt"),
        (lambda: MasterKey.from_passphrase(PASSPHRASE, r=0), "scrypt"),
        (lambda: MasterKey.from_passphrase(PASSPHRASE, n=2**22, r=8), "1 GiB"),
        (lambda: MasterKey.from_key(b"x" * 31), "32 bytes"),
    ],
)
def test_bad_key_parameters_are_refused(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_bad_names_and_chunk_sizes_are_refused(vault: Vault):
    for name in ("", "a\x00b", "x" * 1025):
        with pytest.raises(InvalidInputError, match="invalid name"):
            vault.seal(b"x", name=name)
    for size in (0, 15, 2**26 + 1):
        with pytest.raises(InvalidInputError, match="chunk size"):
            vault.seal(b"x", name="a", chunk_size=size)
    assert vault.status().objects == ()


def test_passphrases_are_nfc_normalised(ws: Workspace):
    blob = Vault.open(
        MasterKey.from_passphrase("caf\u00e9 au lait", n=CHEAP_N), ws, create=True
    ).seal(b"x", name="a")
    decomposed = MasterKey.from_passphrase("cafe\u0301 au lait", n=CHEAP_N)
    assert Vault.open(decomposed, ws).unseal(blob, name="a") == b"x"


# ------------------------------------------------------------------ tampering


def test_every_flipped_byte_of_a_blob_is_detected(vault: Vault):
    name = "he/key"
    blob = vault.seal(os.urandom(3 * CHUNK + 7), name=name, chunk_size=CHUNK)
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(InvalidInputError):
            vault.unseal(bytes(damaged), name=name)


def test_every_truncation_is_detected(vault: Vault):
    blob = vault.seal(os.urandom(3 * CHUNK), name="k", chunk_size=CHUNK)
    for length in range(len(blob)):
        with pytest.raises(InvalidInputError):
            vault.unseal(blob[:length], name="k")


def test_chunks_reordered_dropped_duplicated_or_appended_are_detected(vault: Vault):
    name = "k"
    plain = os.urandom(3 * CHUNK + 9)  # chunks 0, 1, 2 full, chunk 3 final
    blob = vault.seal(plain, name=name, chunk_size=CHUNK)
    header, chunks = _chunks(blob, name)
    assert len(chunks) == 4
    variants = {
        "swap 0 and 1": [chunks[1], chunks[0], chunks[2], chunks[3]],
        "drop a middle chunk": [chunks[0], chunks[2], chunks[3]],
        "drop the final chunk": chunks[:3],
        "duplicate a chunk": [chunks[0], chunks[0], chunks[1], chunks[2], chunks[3]],
        "append a chunk": [*chunks, chunks[1]],
        "final chunk first": [chunks[3], chunks[0], chunks[1], chunks[2]],
    }
    for label, order in variants.items():
        with pytest.raises(InvalidInputError, match="tampered") as caught:
            vault.unseal(header + b"".join(order), name=name)
        assert "chunk" in str(caught.value), label
    assert vault.unseal(header + b"".join(chunks), name=name) == plain


def test_a_file_cut_at_a_chunk_boundary_is_detected(vault: Vault, tmp_path: Path):
    (tmp_path / "a.bin").write_bytes(os.urandom(4 * CHUNK))  # 4 full chunks, the last one final
    vault.encrypt_file("a.bin", "a.veil", chunk_size=CHUNK)
    sealed = (tmp_path / "a.veil").read_bytes()
    (tmp_path / "a.veil").write_bytes(sealed[: -(CHUNK + TAG_BYTES)])  # drop the final chunk
    with pytest.raises(InvalidInputError, match="fails authentication"):
        vault.decrypt_file("a.veil", "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]


def test_a_tampered_file_writes_no_output(vault: Vault, tmp_path: Path):
    (tmp_path / "a.bin").write_bytes(os.urandom(5 * CHUNK))
    vault.encrypt_file("a.bin", "a.veil", chunk_size=CHUNK)
    sealed = bytearray((tmp_path / "a.veil").read_bytes())
    sealed[-1] ^= 0x80  # the last chunk: everything before it decrypts first
    (tmp_path / "a.veil").write_bytes(bytes(sealed))
    with pytest.raises(InvalidInputError, match="chunk 4 fails authentication"):
        vault.decrypt_file("a.veil", "out.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".veil", "a.bin", "a.veil"]


def test_swapped_files_are_detected_and_a_renamed_file_opens_by_its_sealed_path(
    vault: Vault, tmp_path: Path
):
    (tmp_path / "a.csv").write_text("a\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("b\n", encoding="utf-8")
    vault.encrypt_file("a.csv", "a.veil")
    vault.encrypt_file("b.csv", "b.veil")
    a, b = (tmp_path / "a.veil").read_bytes(), (tmp_path / "b.veil").read_bytes()
    (tmp_path / "a.veil").write_bytes(b)
    (tmp_path / "b.veil").write_bytes(a)
    with pytest.raises(InvalidInputError, match="sealed under another name") as caught:
        vault.decrypt_file("a.veil", "out.csv")
    assert caught.value.got == "an object named 'b.veil'"
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(InvalidInputError, match="sealed at another path"):
        vault.decrypt_file("a.veil", "out.csv", name="b.veil")  # the name alone is not enough
    vault.decrypt_file("a.veil", "out.csv", sealed_path="b.veil")  # renamed on purpose
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "b\n"


def test_a_blob_under_another_name_is_refused(vault: Vault):
    blob = vault.seal(b"secret", name="he/alice")
    with pytest.raises(InvalidInputError, match="sealed under another name"):
        vault.unseal(blob, name="he/bob")


def test_wrapped_keys_swapped_or_flipped_in_the_manifest_are_detected(vault: Vault, ws: Workspace):
    first = vault.seal(b"one", name="one")
    second = vault.seal(b"two", name="two")
    pristine = _manifest(ws)
    ids = list(pristine["objects"])
    swapped = json.loads(json.dumps(pristine))
    swapped["objects"][ids[0]]["dek"], swapped["objects"][ids[1]]["dek"] = (
        pristine["objects"][ids[1]]["dek"],
        pristine["objects"][ids[0]]["dek"],
    )
    _write_manifest(ws, swapped)
    with pytest.raises(InvalidInputError, match="data key"):
        vault.unseal(first, name="one")
    flipped = json.loads(json.dumps(pristine))
    wrapped = bytearray(base64.b64decode(flipped["objects"][ids[1]]["dek"]))
    for position in range(len(wrapped)):
        wrapped[position] ^= 0x04
        flipped["objects"][ids[1]]["dek"] = base64.b64encode(bytes(wrapped)).decode()
        _write_manifest(ws, flipped)
        with pytest.raises(InvalidInputError, match="data key"):
            vault.unseal(second, name="two")
        wrapped[position] ^= 0x04
    renamed = json.loads(json.dumps(pristine))
    renamed["objects"][ids[1]]["name"] = "one"  # an entry relabelled to another object's name
    _write_manifest(ws, renamed)
    with pytest.raises(InvalidInputError, match="data key"):
        vault.rotate(_key("a brand new passphrase"))
    assert _manifest(ws) == renamed  # nothing rotated


def test_tampered_key_check_or_kdf_refuses_to_open(vault: Vault, ws: Workspace):
    pristine = _manifest(ws)
    for change in (
        lambda m: m["key"].update(check="00" * 32),
        lambda m: m["key"]["kdf"].update(n=CHEAP_N * 2),
        lambda m: m["key"]["kdf"].update(salt=base64.b64encode(b"\x00" * 16).decode()),
    ):
        changed = json.loads(json.dumps(pristine))
        change(changed)
        _write_manifest(ws, changed)
        with pytest.raises(InvalidInputError, match="does not open the vault"):
            Vault.open(_key(), ws)
    for change, message in (
        (lambda m: m["key"]["kdf"].update(n=2**40), "scrypt"),
        (lambda m: m["key"]["kdf"].update(name="argon9"), "tampered"),
        (lambda m: m.update(version=99), "unsupported version"),
        (lambda m: m.pop("objects"), "tampered"),
    ):
        changed = json.loads(json.dumps(pristine))
        change(changed)
        _write_manifest(ws, changed)
        with pytest.raises(InvalidInputError, match=message):
            Vault.open(_key(), ws)
    (ws.home / "vault" / "vault.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="invalid JSON"):
        Vault.inspect(ws)


def test_objects_of_another_vault_or_unknown_objects_are_refused(vault: Vault, tmp_path: Path):
    other = Vault.open(_key(), Workspace.create(tmp_path / "other" / ".veil"), create=True)
    blob = other.seal(b"x", name="k")
    with pytest.raises(InvalidInputError, match="sealed by another vault"):
        vault.unseal(blob, name="k")
    (tmp_path / "plain.txt").write_text("not sealed\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not a Veil vault object"):
        vault.decrypt_file("plain.txt", "out.txt")
    with pytest.raises(InvalidInputError, match="not a Veil vault object"):
        vault.unseal(b"", name="k")


# ------------------------------------------------------------------ refusals


def test_existing_outputs_are_kept_unless_overwrite(vault: Vault, tmp_path: Path, ws: Workspace):
    (tmp_path / "a.txt").write_text("one\n", encoding="utf-8")
    (tmp_path / "a.veil").write_text("precious\n", encoding="utf-8")
    with pytest.raises(ConflictError, match="already exists"):
        vault.encrypt_file("a.txt", "a.veil")
    assert (tmp_path / "a.veil").read_text(encoding="utf-8") == "precious\n"
    first = vault.encrypt_file("a.txt", "a.veil", overwrite=True)
    (tmp_path / "a.txt").write_text("two\n", encoding="utf-8")
    second = vault.encrypt_file("a.txt", "a.veil", overwrite=True)
    # The replaced file's data key is dropped; the new one is kept.
    assert [o.object_id for o in vault.status().objects] == [second.object_id] != [first.object_id]
    with pytest.raises(ConflictError):
        vault.decrypt_file("a.veil", "a.txt")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "two\n"
    with pytest.raises(InvalidInputError, match="the output is the input"):
        vault.encrypt_file("a.txt", "a.txt", overwrite=True)
    with pytest.raises(NotFoundError, match="does not exist"):
        vault.encrypt_file("gone.txt", "gone.veil")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        vault.encrypt_file(ws.home, "dir.veil")
    with pytest.raises(NotFoundError, match="output directory"):
        vault.encrypt_file("a.txt", "missing/a.veil")
    assert not (tmp_path / "gone.veil").exists() and not (tmp_path / "dir.veil").exists()


def test_an_interrupted_encryption_leaves_no_output_and_no_key(vault: Vault, tmp_path: Path):
    (tmp_path / "a.bin").write_bytes(os.urandom(4 * CHUNK))

    def stop(event: ProgressEvent) -> None:
        if event.completed >= 2 * CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vault.encrypt_file("a.bin", "a.veil", chunk_size=CHUNK, progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".veil", "a.bin"]
    assert vault.status().objects == ()


# ------------------------------------------------------------------ rotation


def test_rotation_rewraps_keys_without_touching_the_data(vault: Vault, ws: Workspace, tmp_path):
    (tmp_path / "a.csv").write_bytes(os.urandom(5 * CHUNK))
    vault.encrypt_file("a.csv", "a.veil", chunk_size=CHUNK)
    blob = vault.seal(b"he secret key", name="he/sk")
    sealed_before = (tmp_path / "a.veil").read_bytes()
    old_id = vault.key_id
    new = MasterKey.from_passphrase("an entirely new passphrase", n=CHEAP_N)
    status = vault.rotate(new)
    assert status.key_id == vault.key_id != old_id
    assert status.rotations == 1
    assert isinstance(status.rotated, str) and status.rotated >= status.created
    assert (tmp_path / "a.veil").read_bytes() == sealed_before  # not one byte re-encrypted
    with pytest.raises(InvalidInputError, match="does not open the vault"):
        Vault.open(_key(), ws)
    reopened = Vault.open(new, ws)
    reopened.decrypt_file("a.veil", "a.out")
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "a.csv").read_bytes()
    assert reopened.unseal(blob, name="he/sk") == b"he secret key"
    vault.decrypt_file("a.veil", "a.out2")  # the rotating handle moved to the new key


def test_rotation_to_a_raw_key_and_refusals(vault: Vault, ws: Workspace):
    blob = vault.seal(b"x", name="k")
    stale = Vault.open(_key(), ws)
    raw = MasterKey.from_key(os.urandom(32))
    vault.rotate(raw)
    assert Vault.inspect(ws).kdf == {"name": "raw"}
    with pytest.raises(InvalidInputError, match="rotated since it was opened"):
        stale.unseal(blob, name="k")
    with pytest.raises(InvalidInputError, match="same key as the current one"):
        vault.rotate(raw)
    assert Vault.open(raw, ws).unseal(blob, name="k") == b"x"


def test_a_failed_manifest_replace_leaves_the_old_key_in_force(
    vault: Vault, ws: Workspace, monkeypatch: pytest.MonkeyPatch
):
    blob = vault.seal(b"x", name="k")
    before = (ws.home / "vault" / "vault.json").read_bytes()

    def broken(self: Path, target: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", broken)
    with pytest.raises(OSError, match="No space left"):
        vault.rotate(_key("the next passphrase"))
    monkeypatch.undo()
    assert (ws.home / "vault" / "vault.json").read_bytes() == before
    assert sorted(p.name for p in (ws.home / "vault").iterdir()) == [".lock", "vault.json"]
    assert Vault.open(_key(), ws).unseal(blob, name="k") == b"x"


CRASH = """
import os, sys
from pathlib import Path
from veil.vault import MasterKey, Vault
from veil.workspace import Workspace

real = Path.replace

def crash(self, target):
    if Path(target).name == "vault.json":
        os._exit(137)  # killed after the new manifest is on disk, before it replaces the old
    return real(self, target)

Path.replace = crash
vault = Vault.open(MasterKey.from_passphrase(sys.argv[2], n=16), Workspace(Path(sys.argv[1])))
vault.rotate(MasterKey.from_passphrase(sys.argv[3], n=16))
"""


def test_a_crash_during_rotation_leaves_every_object_under_the_old_key(
    vault: Vault, ws: Workspace, tmp_path: Path
):
    (tmp_path / "a.csv").write_bytes(os.urandom(3 * CHUNK))
    vault.encrypt_file("a.csv", "a.veil", chunk_size=CHUNK)
    blob = vault.seal(b"x", name="k")
    new = "the passphrase after"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(ws.home), PASSPHRASE, new],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 137, done.stderr
    leftovers = [p.name for p in (ws.home / "vault").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the complete, unused new manifest
    with pytest.raises(InvalidInputError, match="does not open the vault"):
        Vault.open(_key(new), ws)
    old = Vault.open(_key(), ws)
    assert old.unseal(blob, name="k") == b"x"
    old.decrypt_file("a.veil", "a.out")
    # Rotating again after the crash works; the stray temporary file is harmless.
    old.rotate(_key(new))
    assert Vault.open(_key(new), ws).unseal(blob, name="k") == b"x"
