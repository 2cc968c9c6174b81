"""The standalone verifier (veil.access.verifier): what an auditor runs without Veil.

Proofs here come from the slow RFC 6962 transcription in tests/access/_rfc6962.py, not
from Veil's tree builder, so the verifier is checked against the RFC alone; the builder's
proofs are checked against the verifier in test_merkle.py. Signatures are real Ed25519.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.access import _rfc6962 as rfc

from veil.access import verifier

VERIFIER = Path(verifier.__file__)
TIMESTAMP = "2026-03-01T12:00:00Z"
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
DATA = [b"leaf %d" % i for i in range(40)]


def _body(i: int) -> str:
    entry = {"seq": i, "actor": "alice", "action": "read", "dataset": "patients", "note": "é"}
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _head(key: Ed25519PrivateKey, size: int, root: bytes, timestamp: str = TIMESTAMP) -> dict:
    return {
        "format": "veil-trail-head/v1",
        "size": size,
        "root": root.hex(),
        "timestamp": timestamp,
        "public_key": key.public_key().public_bytes_raw().hex(),
        "signature": key.sign(verifier.head_message(size, root, timestamp)).hex(),
    }


def _document(key: Ed25519PrivateKey, size: int = 11, index: int = 4) -> dict:
    bodies = [_body(i) for i in range(size)]
    data = [body.encode("utf-8") for body in bodies]
    return {
        "format": "veil-trail-proof/v1",
        "entry": {"index": index, "body": bodies[index]},
        "proof": [h.hex() for h in rfc.path(index, data)],
        "head": _head(key, size, rfc.mth(data)),
    }


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _flip_hex(value: str, nibble: int = 0) -> str:
    return value[:nibble] + format(int(value[nibble], 16) ^ 1, "x") + value[nibble + 1 :]


# ---------------------------------------------------------------- hashes and known answers


def test_leaf_and_node_hashes_are_rfc_6962():
    assert verifier.leaf_hash(b"") == rfc.CT_ROOTS[1]
    first, second = (verifier.leaf_hash(d) for d in rfc.CT_LEAVES[:2])
    assert verifier.node_hash(first, second) == rfc.CT_ROOTS[2]
    assert rfc.CT_ROOTS[0] == verifier.EMPTY_ROOT


def test_a_node_is_never_a_leaf_over_its_childrens_bytes():
    # Domain separation: the 64 bytes left || right hashed as a leaf give another hash,
    # so an interior node cannot be passed off as an entry (a second preimage).
    left, right = verifier.leaf_hash(b"a"), verifier.leaf_hash(b"b")
    assert verifier.leaf_hash(left + right) != verifier.node_hash(left, right)


@pytest.mark.parametrize(("index", "size", "proof"), rfc.CT_INCLUSION)
def test_published_inclusion_proofs_lead_to_the_published_roots(index, size, proof):
    leaf = verifier.leaf_hash(rfc.CT_LEAVES[index])
    assert verifier.root_from_inclusion(index, size, leaf, proof) == rfc.CT_ROOTS[size]
    assert verifier.verify_inclusion(index, size, leaf, proof, rfc.CT_ROOTS[size])
    assert not verifier.verify_inclusion(index, size, leaf, proof, rfc.CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old_size", "new_size", "proof"), rfc.CT_CONSISTENCY)
def test_published_consistency_proofs_verify(old_size, new_size, proof):
    old, new = rfc.CT_ROOTS[old_size], rfc.CT_ROOTS[new_size]
    assert verifier.verify_consistency(old_size, new_size, old, new, proof)
    if proof:
        assert not verifier.verify_consistency(old_size, new_size, new, old, proof)


@pytest.mark.parametrize("size", range(1, len(DATA) + 1))
def test_every_rfc_proof_of_every_small_tree_verifies(size):
    data = DATA[:size]
    root = rfc.mth(data)
    for index in range(size):
        leaf = verifier.leaf_hash(data[index])
        assert verifier.verify_inclusion(index, size, leaf, rfc.path(index, data), root)
    for old_size in range(1, size + 1):
        proof = rfc.proof(old_size, data)
        assert verifier.verify_consistency(old_size, size, rfc.mth(data[:old_size]), root, proof)


@pytest.mark.parametrize(
    ("old_size", "new_size", "roots", "proof", "ok"),
    [
        # The edge conventions of the reference implementation (transparency-dev/merkle).
        (0, 0, (b"don't care 1", b"don't care 2"), [], False),
        (1, 1, (b"don't care 1", b"don't care 2"), [], False),
        (0, 0, (b"don't care 1", b"don't care 1"), [], True),
        (0, 1, (b"don't care 1", b"don't care 2"), [], True),
        (1, 1, (b"don't care 2", b"don't care 2"), [], True),
        (1, 0, (b"don't care 1", b"don't care 2"), [], False),
        (2, 1, (b"don't care 1", b"don't care 2"), [], False),
        (1, 2, (b"don't care 1", b"don't care 2"), [], False),
        (0, 0, (verifier.EMPTY_ROOT, b"don't care 2"), [], False),
        (0, 0, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), [verifier.EMPTY_ROOT], False),
        (0, 1, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), [verifier.EMPTY_ROOT], False),
        (1, 1, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), [verifier.EMPTY_ROOT], False),
        (-1, 1, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), [], False),
        ("1", 2, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), [SOME_HASH], False),
        (1, 2, (verifier.EMPTY_ROOT, verifier.EMPTY_ROOT), ["not bytes" * 4], False),
    ],
)
def test_consistency_edge_cases(old_size, new_size, roots, proof, ok):
    assert verifier.verify_consistency(old_size, new_size, *roots, proof) is ok


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1), (-1, 1)])
def test_inclusion_in_an_impossible_position_fails(index, size):
    for leaf, root in [(SOME_HASH, b""), (b"", verifier.EMPTY_ROOT), (SOME_HASH, SOME_HASH)]:
        if (index, size) == (0, 1) and leaf == root:
            continue  # a one-leaf tree's root is its leaf: that one holds
        assert not verifier.verify_inclusion(index, size, leaf, [], root)


def test_a_one_leaf_tree_proves_its_leaf_with_an_empty_path():
    leaf = verifier.leaf_hash(b"data")
    assert verifier.verify_inclusion(0, 1, leaf, [], leaf)
    assert not verifier.verify_inclusion(0, 1, b"", [], leaf)
    assert not verifier.verify_inclusion(0, 1, leaf, [], b"")
    with pytest.raises(ValueError, match="outside"):
        verifier.root_from_inclusion(1, 1, leaf, [])
    with pytest.raises(ValueError, match="longer"):
        verifier.root_from_inclusion(0, 1, leaf, [leaf])


# ---------------------------------------------------------------- signed heads


def test_head_message_is_pinned():
    root = bytes(range(32))
    assert verifier.head_message(3, root, TIMESTAMP) == (
        b"veil-trail-head/v1\n3\n"
        b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
        b"2026-03-01T12:00:00Z\n"
    )


def test_a_signed_head_verifies_with_its_key_and_no_other(key, other_key):
    head = _head(key, 8, rfc.CT_ROOTS[8])
    assert verifier.verify_head(head)
    assert verifier.verify_head(head, _public(key))
    assert not verifier.verify_head(head, _public(other_key))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 7),
        ("root", rfc.CT_ROOTS[7].hex()),
        ("timestamp", "2026-03-01T12:00:01Z"),
        ("signature", "flip"),
        ("public_key", "other"),
        ("format", "veil-trail-head/v2"),
    ],
)
def test_a_changed_head_fails(key, other_key, field, value):
    head = _head(key, 8, rfc.CT_ROOTS[8])
    if value == "flip":
        value = _flip_hex(head[field], 5)
    elif value == "other":
        value = _public(other_key).hex()
    head[field] = value
    assert not verifier.verify_head(head)
    assert not verifier.verify_head(head, _public(key))


def test_a_head_signed_by_a_forger_passes_only_the_integrity_check(key, other_key):
    forged = _head(other_key, 8, SOME_HASH)  # re-signed with the forger's own key
    assert verifier.verify_head(forged)  # intact, as far as its own key can tell
    assert not verifier.verify_head(forged, _public(key))  # not from the trusted key


@pytest.mark.parametrize(
    "change",
    [
        {"size": True},
        {"size": -1},
        {"size": "8"},
        {"size": 8.0},
        {"root": "00" * 31},
        {"root": "zz" * 32},
        {"root": " 0" * 32},
        {"root": None},
        {"timestamp": "2026-03-01T12:00:00"},  # no zone: not UTC
        {"timestamp": "2026-03-01T12:00:00+01:00"},
        {"timestamp": "yesterday"},
        {"timestamp": "2026-03-01T12:00:00Z\n"},
        {"timestamp": 1767225600},
        {"public_key": "00" * 33},
        {"signature": "00" * 63},
        {"signature": None},
        {"format": None},
    ],
)
def test_a_malformed_head_is_false_and_never_raises(key, change):
    head = _head(key, 8, rfc.CT_ROOTS[8]) | change
    assert not verifier.verify_head(head)
    assert verifier.check_head(head)  # a reason for a person


@pytest.mark.parametrize("head", [None, [], "head", 3, {}])
def test_a_head_that_is_not_an_object_is_false(head):
    assert not verifier.verify_head(head)


def test_an_empty_tree_head_must_carry_the_empty_root(key):
    assert verifier.verify_head(_head(key, 0, verifier.EMPTY_ROOT))
    assert not verifier.verify_head(_head(key, 0, SOME_HASH))


@pytest.mark.parametrize("public_key", [b"", b"\x00" * 31, "00" * 32, 42])
def test_a_malformed_trusted_key_is_false(key, public_key):
    assert not verifier.verify_head(_head(key, 8, rfc.CT_ROOTS[8]), public_key)


# ---------------------------------------------------------------- proof documents


def test_a_proof_document_verifies_for_every_entry(key):
    for size in (1, 2, 11, 16):
        for index in range(size):
            document = _document(key, size, index)
            assert verifier.verify_inclusion_proof(document, _public(key)), (size, index)
            assert verifier.verify_inclusion_proof(document), (size, index)


def _flip_proof(document: dict) -> None:
    document["proof"][1] = _flip_hex(document["proof"][1], 10)


def _reorder_proof(document: dict) -> None:
    document["proof"][:2] = document["proof"][1::-1]


def _resign(document: dict, forger: Ed25519PrivateKey) -> None:
    head = document["head"]
    document["head"] = _head(forger, head["size"], bytes.fromhex(head["root"]))


TAMPERINGS = {
    "body": lambda d, _: d["entry"].update(body=d["entry"]["body"].replace("read", "wrote")),
    "body whitespace": lambda d, _: d["entry"].update(body=d["entry"]["body"] + " "),
    "index + 1": lambda d, _: d["entry"].update(index=d["entry"]["index"] + 1),
    "index - 1": lambda d, _: d["entry"].update(index=d["entry"]["index"] - 1),
    "proof bit": lambda d, _: _flip_proof(d),
    "proof truncated": lambda d, _: d["proof"].pop(),
    "proof extended": lambda d, _: d["proof"].append(d["head"]["root"]),
    "proof reordered": lambda d, _: _reorder_proof(d),
    "head size": lambda d, _: d["head"].update(size=d["head"]["size"] + 1),
    "head root": lambda d, _: d["head"].update(root=_flip_hex(d["head"]["root"])),
    "signature": lambda d, _: d["head"].update(signature=_flip_hex(d["head"]["signature"], 70)),
    "timestamp": lambda d, _: d["head"].update(timestamp="2026-03-02T12:00:00Z"),
    "other key": lambda d, other: d["head"].update(public_key=_public(other).hex()),
    "re-signed by a forger": _resign,
}


def _tamper(document: dict, what: str, other_key: Ed25519PrivateKey) -> None:
    TAMPERINGS[what](document, other_key)


@pytest.mark.parametrize("what", TAMPERINGS)
def test_a_tampered_document_fails_against_the_trusted_key(key, other_key, what):
    document = _document(key)
    _tamper(document, what, other_key)
    assert not verifier.verify_inclusion_proof(document, _public(key))
    if what != "re-signed by a forger":  # intact under the forger's own key, by design
        assert not verifier.verify_inclusion_proof(document)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("entry"),
        lambda d: d.pop("head"),
        lambda d: d.pop("proof"),
        lambda d: d.update(format="veil-trail-proof/v0"),
        lambda d: d.update(entry=[4, "body"]),
        lambda d: d.update(proof="".join(d["proof"])),
        lambda d: d.update(head=None),
        lambda d: d["entry"].update(index=True),
        lambda d: d["entry"].update(index="4"),
        lambda d: d["entry"].update(index=4.0),
        lambda d: d["entry"].update(index=-1),
        lambda d: d["entry"].update(index=10**30),
        lambda d: d["entry"].update(body=None),
        lambda d: d["entry"].update(body=d["entry"]["body"].encode()),
        lambda d: d["entry"].update(body="\ud800"),  # a lone surrogate has no UTF-8
        lambda d: d["proof"].append(None),
        lambda d: d["proof"].append("0" * 63),
        lambda d: d["proof"].append("0x" + "0" * 62),
        lambda d: d["head"].update(size=None),
    ],
)
def test_a_malformed_document_is_false_and_never_raises(key, change):
    document = _document(key)
    change(document)
    assert not verifier.verify_inclusion_proof(document, _public(key))
    assert verifier.check_inclusion_proof(document)


@pytest.mark.parametrize("document", [None, [], "{}", 1, {}])
def test_a_document_that_is_not_an_object_is_false(document):
    assert not verifier.verify_inclusion_proof(document)


def test_only_the_body_is_evidence(key):
    # Keys beside index and body are not covered by the proof; they change nothing.
    document = _document(key)
    document["entry"]["actor"] = "mallory"
    assert verifier.verify_inclusion_proof(document, _public(key))


# ---------------------------------------------------------------- standalone


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_the_verifier_imports_only_the_standard_library_and_cryptography():
    imported = _imported_modules(VERIFIER)
    assert imported  # the walk sees the imports at all
    for module, level in imported:
        top = module.split(".")[0]
        assert level == 0, f"relative import of {module!r}"
        assert top != "veil", f"imports {module}"
        assert top in sys.stdlib_module_names or top == "cryptography", f"imports {module}"


# Runs a copied verifier.py as an auditor would, on a machine without Veil: -I ignores the
# environment and the working directory, and since Veil is installed in this environment,
# the import of any veil module is made to fail too.
_WITHOUT_VEIL = (
    "import runpy, sys\n"
    "sys.modules['veil'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _run(tmp_path: Path, document: object, *args: str) -> subprocess.CompletedProcess[str]:
    standalone = tmp_path / "auditor" / "verifier.py"
    standalone.parent.mkdir(exist_ok=True)
    shutil.copy(VERIFIER, standalone)
    proof = tmp_path / "auditor" / "proof.json"
    proof.write_text(json.dumps(document), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_VEIL, str(standalone), str(proof), *args],
        cwd=standalone.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_copied_verifier_accepts_a_good_proof(tmp_path, key):
    result = _run(tmp_path, _document(key), "--public-key", _public(key).hex())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: entry 5 (leaf index 4) is in the trail of 11 entries")
    # The plain command of the module docstring works the same.
    plain = subprocess.run(
        [sys.executable, "-I", "verifier.py", "proof.json"],
        cwd=tmp_path / "auditor",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "integrity only" in plain.stdout


@pytest.mark.parametrize("what", ["body", "proof bit", "signature", "other key"])
def test_the_copied_verifier_refuses_a_tampered_proof(tmp_path, key, other_key, what):
    document = _document(key)
    _tamper(document, what, other_key)
    result = _run(tmp_path, document, "--public-key", _public(key).hex())
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("FAILED: ")
    assert "Traceback" not in result.stderr


def test_the_copied_verifier_refuses_a_proof_signed_by_another_key(tmp_path, key, other_key):
    result = _run(tmp_path, _document(key), "--public-key", _public(other_key).hex())
    assert result.returncode == 1
    assert "another public key" in result.stdout


def test_main_reports_unreadable_input_as_failed(tmp_path, capsys, key):
    assert verifier.main([str(tmp_path / "missing.json")]) == 1
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert verifier.main([str(tmp_path / "bad.json")]) == 1
    (tmp_path / "good.json").write_text(json.dumps(_document(key)), encoding="utf-8")
    assert verifier.main([str(tmp_path / "good.json"), "--public-key", "xyz"]) == 1
    assert verifier.main([str(tmp_path / "good.json"), "--public-key", _public(key).hex()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["FAILED", "FAILED", "FAILED", "OK"]
