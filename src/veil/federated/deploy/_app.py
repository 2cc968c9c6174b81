"""The Flower App a run is submitted as: its ``pyproject.toml`` (components and run config,
written as TOML), the hash of its bundle (FAB), and Veil's published app.

Veil's published app (:func:`write_published_app`) declares Veil's ServerApp and ClientApp
and one run-config key, ``veil-config``: a run's settings travel as that override
(:func:`veil_run_overrides`), so every run of a Veil version has the same bundle, and its
hash (:func:`published_app_hash`) is what data holders approve by default.

Threat model: docs/federated.md#deployment (indexed in docs/security.md): "Approved apps".
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import tempfile
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from veil.errors import ConflictError, InvalidInputError, MissingDependencyError, NotFoundError
from veil.federated.deploy._credentials import NAME, write_secret

__all__ = [
    "APP_MARKER",
    "DEFAULT_CLIENT_APP",
    "DEFAULT_SERVER_APP",
    "PUBLISHED_APP_NAME",
    "RUN_CONFIG_KEY",
    "ConfigValue",
    "app_config",
    "app_hash",
    "published_app_hash",
    "toml_table",
    "toml_value",
    "veil_run_overrides",
    "write_flower_app",
    "write_published_app",
]

ConfigValue = str | int | float | bool

DEFAULT_SERVER_APP = "veil.federated._apps:server_app"
DEFAULT_CLIENT_APP = "veil.federated._apps:client_app"
# Kept as first written: write_flower_app recognises the apps it wrote by this line.
APP_MARKER = "# Written by veil.federated.write_flower_app"
RUN_CONFIG_KEY = "veil-config"  # the published app's one run-config key: the run as JSON
PUBLISHED_APP_NAME = "veil-federated"


def toml_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"run config {key!r} is not a finite number",
                expected="a finite float",
                got=repr(value),
            )
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    raise InvalidInputError(
        f"run config {key!r} has an unsupported type",
        expected="str, int, float or bool (Flower's run config is flat)",
        got=f"{type(value).__name__}: {value!r}",
        fix="flatten nested values into keys such as 'dp-epsilon'",
    )


def toml_table(config: Mapping[str, object]) -> list[str]:
    lines = []
    for key, value in config.items():
        if not isinstance(key, str) or not NAME.fullmatch(key):
            raise InvalidInputError(
                "bad run config key",
                expected="letters, digits, '-' or '_' (for example 'local-epochs')",
                got=repr(key),
            )
        lines.append(f"{key} = {toml_value(key, value)}")
    return lines


def write_flower_app(
    directory: Path,
    run_config: Mapping[str, ConfigValue],
    *,
    serverapp: str = DEFAULT_SERVER_APP,
    clientapp: str = DEFAULT_CLIENT_APP,
    name: str = "veil-federated",
) -> Path:
    """Write a Flower App directory (its ``pyproject.toml``) for ``flwr run``.

    The app declares Veil's ServerApp and ClientApp and no dependencies: Veil must be
    installed wherever the SuperLink and the SuperNodes run (runtime installation is off).
    ``run_config`` becomes ``[tool.flwr.app.config]``, the defaults a run may override.

    Returns:
        The app directory.

    Raises:
        ConflictError: When ``directory`` holds a pyproject.toml not written here.
        InvalidInputError: On keys or values Flower's flat run config cannot hold.
    """
    from veil import __version__  # noqa: PLC0415

    directory = Path(directory).expanduser()
    pyproject = directory / "pyproject.toml"
    if pyproject.exists() and APP_MARKER not in pyproject.read_text("utf-8", errors="replace"):
        raise ConflictError(
            f"{pyproject} exists and was not written by Veil",
            expected="a new directory, or one written by write_flower_app",
            got="another project's pyproject.toml",
            fix="choose an empty directory for the Flower App",
        )
    for ref in (serverapp, clientapp):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", ref):
            raise InvalidInputError(
                "bad app component", expected="'module.path:attribute'", got=repr(ref)
            )
    version = re.sub(r"[^0-9.]", "", __version__.split("+")[0]).strip(".") or "0"
    lines = [
        APP_MARKER,
        "# Veil is installed where the SuperLink and SuperNodes run: nothing to install.",
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f"name = {json.dumps(name)}",
        f'version = "{version}"',
        'description = "A Veil federated run on Flower"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "veil"',
        "",
        "[tool.flwr.app.components]",
        f"serverapp = {json.dumps(serverapp)}",
        f"clientapp = {json.dumps(clientapp)}",
        "",
        "[tool.flwr.app.config]",
        *toml_table(run_config),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    write_secret(pyproject, ("\n".join(lines) + "\n").encode(), private=False)
    return directory


def app_hash(app_dir: Path) -> str:
    """The SHA-256 of the bundle (FAB) that ``flwr run`` builds from ``app_dir``.

    It is the hash a SuperNode sees for a run of that app, and what a data holder approves
    (``start_supernode(approved_apps=...)``, ``veil federate join --approve-app``).
    """
    try:
        from flwr.cli.build import build_fab_from_disk  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - flwr is the federated extra
        raise MissingDependencyError(
            "Flower is not installed",
            expected="the flwr package",
            got=str(exc),
            fix="run: pip install 'veil[federated]'",
            details={"module": "flwr", "extra": "federated"},
        ) from exc
    with warnings.catch_warnings():
        # Flower 1.42's build uses pathspec's deprecated 'gitwildmatch' pattern name.
        warnings.simplefilter("ignore", DeprecationWarning)
        return hashlib.sha256(build_fab_from_disk(Path(app_dir))).hexdigest()


def write_published_app(directory: Path) -> Path:
    """Write Veil's published Flower App: Veil's ServerApp and ClientApp, one config key.

    Its bundle is the same for every run of a Veil version (the run's settings travel as the
    override ``veil-config``, a JSON object, see :func:`veil_run_overrides`), so its hash,
    :func:`published_app_hash`, is what data holders approve by default.
    """
    return write_flower_app(directory, {RUN_CONFIG_KEY: "{}"}, name=PUBLISHED_APP_NAME)


@functools.lru_cache(maxsize=1)
def published_app_hash() -> str:
    """The FAB hash of :func:`write_published_app` for this Veil version."""
    with tempfile.TemporaryDirectory(prefix="veil-published-") as tmp:
        return app_hash(write_published_app(Path(tmp) / "app"))


def veil_run_overrides(run_config: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    """The run-config overrides that carry ``run_config`` to the published app."""
    return {RUN_CONFIG_KEY: json.dumps(dict(run_config), sort_keys=True)}


def app_config(app_dir: Path) -> dict[str, Any]:
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise NotFoundError(
            "not a Flower App directory",
            expected=f"a pyproject.toml at {pyproject}",
            got="nothing there",
            fix="write one with veil.federated.deploy.write_flower_app",
        )
    try:
        config = tomllib.loads(pyproject.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(
            "the Flower App's pyproject.toml is not valid TOML", expected="TOML", got=str(exc)
        ) from exc
    run_config = config.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return dict(run_config) if isinstance(run_config, dict) else {}
