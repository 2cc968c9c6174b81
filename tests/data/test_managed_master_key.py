"""A catalogue given its master key in memory needs none in the environment (the demo's case)."""

from __future__ import annotations

import secrets

import pytest


def test_a_master_key_given_to_the_catalogue_seals_and_opens(
    store, managed_home, monkeypatch: pytest.MonkeyPatch
):
    from veil.access import Access, Principal
    from veil.data import Catalog
    from veil.errors import InvalidInputError, NotFoundError
    from veil.vault import MasterKey

    monkeypatch.delenv("VEIL_VAULT_KEY", raising=False)
    monkeypatch.delenv("VEIL_VAULT_PASSPHRASE", raising=False)
    key = MasterKey.from_key(secrets.token_bytes(32))
    owner = Access(store, Principal("alice"))
    catalog = Catalog(store, access=owner, workspace=managed_home, master_key=key)
    info = catalog.add("sklearn:iris", name="iris", managed=True)
    assert info.managed and info.version == 1
    assert len(catalog.load_frame("iris")) == 150
    # Without the key (none given, none in the environment) the sealed version stays shut.
    with pytest.raises(NotFoundError, match="master key"):
        Catalog(store, access=owner, workspace=managed_home).load_frame("iris")
    # Another key is not the vault's: refused, not decrypted.
    other = MasterKey.from_key(secrets.token_bytes(32))
    with pytest.raises(InvalidInputError):
        Catalog(store, access=owner, workspace=managed_home, master_key=other).load_frame("iris")
