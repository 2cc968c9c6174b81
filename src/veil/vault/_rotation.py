"""Rotation of the master key: every data key re-wrapped, no object re-encrypted.

**Why the DEKs live in the manifest.** Rotation re-wraps every DEK under the
new master key and replaces the manifest in one atomic step: before the
``os.replace`` every object opens with the old key only, after it with the new
key only, and no crash in between can leave an object that neither opens. No
data file is touched, not even its header, so a rotation costs milliseconds
for terabytes, and an in-memory blob sealed with :meth:`Vault.seal` (stored by
its caller wherever it likes) keeps working after a rotation. The price: the
manifest must be backed up with the data, as a LUKS header must.


:func:`rotated_manifest` computes the new manifest in memory; the vault
writes it in one atomic step while it holds the manifest's lock.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag

from veil.errors import InvalidInputError
from veil.vault._format import tampered
from veil.vault._keys import BINDING, Keys, MasterKey, bound_entry, dek_aad, key_entry
from veil.vault._manifest import now, unhex

__all__ = ["refuse_same_secret", "rotated_manifest"]


def refuse_same_secret(
    new_master: MasterKey, current: Mapping[str, Any], keys: Keys, vault_id: bytes
) -> None:
    """Refuse ``new_master`` if it derives the current key (``keys``) under the current salt."""
    kdf = current.get("kdf") or {}
    if (kdf.get("name") == "raw") != (new_master.kind == "raw"):
        return  # a passphrase for a raw-key vault, or the reverse: a new secret
    candidate = Keys.derive(new_master._derive(kdf), vault_id)  # noqa: SLF001
    if hmac.compare_digest(candidate.check_value(vault_id), keys.check_value(vault_id)):
        secret = "passphrase" if new_master.kind == "scrypt" else "key"
        raise InvalidInputError(
            f"the new vault secret is the same {secret} as the current one",
            expected=f"a different {secret} (a rotation to the same secret retires nothing)",
            got=f"the same {secret}",
            fix="supply a new secret (--new-passphrase-env or --new-key-env); to raise "
            "the scrypt cost, rotate to a new passphrase",
        )


def rotated_manifest(
    manifest: dict[str, Any], new_master: MasterKey, keys: Keys, vault_id: bytes
) -> tuple[dict[str, Any], Keys]:
    """``manifest`` with every data key re-wrapped under ``new_master``, and its subkeys.

    ``keys`` are the current subkeys. Entries written before the path binding
    are bound to their recorded path on the way. Nothing is written: a data
    key that does not authenticate raises before the caller changes anything.
    """
    refuse_same_secret(new_master, manifest["key"], keys, vault_id)
    key, new_keys = key_entry(new_master, vault_id)
    rewrapped: dict[str, Any] = {}
    for oid, entry in manifest["objects"].items():
        object_id = unhex(oid, 16, what="object id")
        name = str(entry.get("name"))
        old_aad = dek_aad(vault_id, object_id, name, entry=bound_entry(entry))
        try:
            dek = keys.unwrap_dek(base64.b64decode(str(entry.get("dek")), validate=True), old_aad)
        except (binascii.Error, ValueError, InvalidTag):
            raise tampered(
                f"the data key of {entry.get('name')!r} (object {oid}) in the vault manifest",
                "a wrapped data key that does not authenticate",
                fix="restore .veil/vault/vault.json from a backup; nothing was rotated",
            ) from None
        new_entry = dict(entry)
        new_entry["binding"] = BINDING  # an older entry is bound to its path from now on
        aad = dek_aad(vault_id, object_id, name, entry=new_entry)
        new_entry["dek"] = base64.b64encode(new_keys.wrap_dek(dek, aad)).decode("ascii")
        rewrapped[oid] = new_entry
    rotated = dict(manifest)
    rotated["objects"] = rewrapped
    rotated["key"] = key
    rotated["rotated"] = now()
    rotated["rotations"] = int(manifest.get("rotations", 0)) + 1
    return rotated, new_keys
