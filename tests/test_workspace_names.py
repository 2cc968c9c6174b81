"""Issue 17: names that become paths in the workspace (models, datasets, keys) are matched whole.

``re.match`` with a pattern ending in ``$`` accepts a trailing newline
(``$`` matches before it), so ``"mnist\\n"`` passed as a model name and became
a directory with a newline in its name. Each name check must refuse it.
"""

from __future__ import annotations

import pytest

from veil.data import Catalog
from veil.errors import InvalidInputError
from veil.store import Store
from veil.train import ModelRegistry
from veil.vault import KeyStore
from veil.workspace import Workspace

SNEAKY = ["mnist\n", "mnist\r\n", "\nmnist", "mnist\n\n", "mnist/../x", "", "-mnist"]


@pytest.mark.parametrize("name", SNEAKY)
def test_a_model_name_with_a_trailing_newline_is_refused(name: str, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(InvalidInputError, match="invalid model name"):
        registry.check_name(name)
    with pytest.raises(InvalidInputError, match="invalid model name"):
        registry.exists(name)
    assert not (tmp_path / "models").exists()


def test_good_model_names_still_pass(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    for name in ("mnist", "mnist-dp-eps3", "a.b_c-1", "x" * 128):
        assert registry.check_name(name) == name
    with pytest.raises(InvalidInputError):
        registry.check_name("x" * 129)


@pytest.mark.parametrize("name", SNEAKY)
def test_a_dataset_name_with_a_trailing_newline_is_refused(name: str, tmp_path):
    workspace = Workspace.create(tmp_path / ".veil")
    store = Store.for_workspace(workspace, upgrade=True)
    (tmp_path / "d.csv").write_text("a\n1\n", encoding="utf-8")
    try:
        with pytest.raises(InvalidInputError, match="invalid dataset name"):
            Catalog(store, workspace.settings).add(tmp_path / "d.csv", name=name)
    finally:
        store.dispose()


@pytest.mark.parametrize("name", ["pseudonyms\n", "pseudonyms\r\n", "\npseudonyms"])
def test_a_key_name_with_a_trailing_newline_is_refused(name: str, tmp_path):
    keys = KeyStore.for_workspace(Workspace.create(tmp_path / ".veil"))
    with pytest.raises(InvalidInputError, match="invalid key name"):
        keys.get(name)
    assert keys.names() == []
