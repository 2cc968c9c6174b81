"""The exception tree: stable codes, exit codes, documented, message shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import veil.errors as errors_module
from veil.errors import (
    BudgetExceededError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    PermissionDeniedError,
    SchemaError,
    VeilError,
    require,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
RESERVED_EXIT_CODES = {0, 1, 2, 130}


def all_error_classes() -> list[type[VeilError]]:
    found: list[type[VeilError]] = [VeilError]
    stack = [VeilError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__ == "veil.errors":
                found.append(sub)
                stack.append(sub)
    return found


def test_codes_and_exit_codes_are_unique_and_not_reserved():
    classes = [c for c in all_error_classes() if c is not VeilError]
    codes = [c.code for c in classes]
    exits = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes), codes
    assert len(set(exits)) == len(exits), exits
    assert not RESERVED_EXIT_CODES & set(exits)
    assert all(re.fullmatch(r"[a-z_]+", code) for code in codes)


def test_every_error_is_public_documented_and_drawn_in_the_tree():
    documented = DOCS.read_text(encoding="utf-8")
    tree = errors_module.__doc__ or ""
    for cls in all_error_classes():
        assert cls.__name__ in errors_module.__all__
        assert cls.__name__ in tree, f"{cls.__name__} missing from the tree in errors.py"
        row = re.search(rf"^\| `{cls.code}` \| (\d+) \| `{cls.__name__}`", documented, re.MULTILINE)
        assert row is not None, f"{cls.code} ({cls.__name__}) is not listed in docs/errors.md"
        assert int(row.group(1)) == cls.exit_code, (
            f"docs/errors.md has a wrong exit code for {cls.code}"
        )


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidInputError, ValueError),
        (SchemaError, ValueError),
        (NotFoundError, LookupError),
        (BudgetExceededError, PermissionError),
        (PermissionDeniedError, PermissionError),
        (MissingDependencyError, ImportError),
    ],
)
def test_errors_derive_from_the_builtin_a_caller_would_catch(cls, builtin):
    assert issubclass(cls, builtin)
    assert issubclass(cls, VeilError)


def test_message_says_expected_got_and_fix_in_one_paragraph():
    error = InvalidInputError(
        "epsilon must be positive", expected="a number > 0", got="-1.0", fix="pass --epsilon 1.0"
    )
    text = str(error)
    assert text == (
        "epsilon must be positive. Expected a number > 0. Got -1.0. Fix: pass --epsilon 1.0."
    )
    assert "\n" not in text
    assert error.to_dict() == {
        "code": "invalid_input",
        "message": "epsilon must be positive",
        "expected": "a number > 0",
        "got": "-1.0",
        "fix": "pass --epsilon 1.0",
        "details": {},
    }


def test_require_returns_the_module_when_installed():
    import json

    assert require("json", extra="core", purpose="Reading JSON") is json


def test_require_names_the_exact_pip_install():
    with pytest.raises(MissingDependencyError) as caught:
        require("veil_no_such_module_xyz", extra="train", purpose="DP-SGD training")
    assert "pip install 'veil[train]'" in str(caught.value)
    assert caught.value.details == {"module": "veil_no_such_module_xyz", "extra": "train"}
    assert isinstance(caught.value, ImportError)
