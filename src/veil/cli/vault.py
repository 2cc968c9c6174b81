"""``veil vault``: encrypt files at rest, decrypt them, rotate the master key, show the vault.

Encrypting, decrypting and rotating need ``keys.use`` on the workspace (owners),
checked before the secret is asked for; each is recorded on the trail
(``vault.encrypt`` / ``vault.decrypt`` / ``vault.rotate``: the object's id and
name, the paths, the vault key's id, never key material), and a failure after
the check (a wrong passphrase, a tampered file) is recorded as failed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from veil.cli._acting import failure_recorded, workspace_access
from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.access import Access
    from veil.vault import MasterKey

__all__ = ["app"]

# veil.vault loads inside each command, so that `veil --help` stays fast.
app = typer.Typer(
    help="Encrypt files at rest (AES-256-GCM envelope encryption), rotate the master key.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
PassphraseEnv = Annotated[
    str | None,
    typer.Option(
        "--passphrase-env",
        metavar="VAR",
        help="Read the passphrase from environment variable VAR (default: VEIL_VAULT_KEY, "
        "then VEIL_VAULT_PASSPHRASE, then a hidden prompt).",
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Name bound into the object (default: the sealed file's name)."),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]
_SUFFIX = ".veil"


def _from_variable(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise InvalidInputError(
            f"environment variable {variable} is not set",
            expected=f"{variable} to hold the secret",
            got="unset or empty",
            fix=f"export {variable}, or name another variable",
        )
    return value


def _prompt(label: str, *, confirm: bool) -> MasterKey:
    from veil.vault import MasterKey  # noqa: PLC0415

    if not sys.stdin.isatty():
        raise InvalidInputError(
            "no vault secret given",
            expected="--passphrase-env VAR, VEIL_VAULT_PASSPHRASE or VEIL_VAULT_KEY, or a terminal to prompt on",
            got="none of them (and standard input is not a terminal)",
            fix="export VEIL_VAULT_PASSPHRASE, or pass --passphrase-env VAR",
        )
    return MasterKey.from_passphrase(
        typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    )


def _master(passphrase_env: str | None, *, confirm: bool) -> MasterKey:
    """The secret that opens the vault, from the first source that has one."""
    from veil.vault import MasterKey  # noqa: PLC0415

    if passphrase_env:
        return MasterKey.from_passphrase(_from_variable(passphrase_env))
    if os.environ.get("VEIL_VAULT_KEY") or os.environ.get("VEIL_VAULT_PASSPHRASE"):
        return MasterKey.from_env()
    return _prompt("Vault passphrase", confirm=confirm)


def _new_master(passphrase_env: str | None, key_env: str | None) -> MasterKey:
    from veil.vault import MasterKey, decode_raw_key  # noqa: PLC0415

    if passphrase_env and key_env:
        raise InvalidInputError(
            "two new secrets given",
            expected="one of --new-passphrase-env and --new-key-env",
            got="both",
            fix="choose a passphrase or a raw key",
        )
    if passphrase_env:
        return MasterKey.from_passphrase(_from_variable(passphrase_env))
    if key_env:
        return MasterKey.from_key(decode_raw_key(_from_variable(key_env), source=key_env))
    return _prompt("New vault passphrase", confirm=True)


def _report(
    action: str, source: Path, output: Path, record: dict[str, Any], key_id: str, seconds: float
) -> dict[str, Any]:
    return {
        "action": action,
        "source": str(source),
        "output": str(output.absolute()),
        "object": record,
        "key_id": key_id,
        "seconds": round(seconds, 3),
    }


def _record(access: Access, action: str, payload: dict[str, Any]) -> None:
    """Put an encryption or decryption on the trail: ids, name, paths and size, no key material."""
    sealed = payload["object"]
    access.record(
        action,
        links={"object_id": sealed["object_id"], "key_id": payload["key_id"]},
        details={
            "name": sealed["name"],
            "kind": sealed["kind"],
            "source": str(Path(payload["source"]).absolute()),
            "output": payload["output"],
            "size": sealed["size"],
        },
    )


def _say(payload: dict[str, Any], verb: str) -> None:
    size = payload["object"]["size"]
    out.print(
        f"{verb} {payload['source']} -> {payload['output']} ({size:,} bytes, name "
        f"{payload['object']['name']!r}, vault key {payload['key_id']}) in {payload['seconds']:.2f} s",
        markup=False,
        soft_wrap=True,
    )


@app.command()
def encrypt(
    source: Annotated[Path, typer.Argument(help="File to encrypt (left as it is).")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Sealed file to write (default: SOURCE.veil)."),
    ] = None,
    name: NameOption = None,
    force: ForceOption = False,
    passphrase_env: PassphraseEnv = None,
    as_json: JsonOption = False,
) -> None:
    """Encrypt a file under a fresh data key; the first use creates the workspace's vault."""
    from veil.access import Permission  # noqa: PLC0415
    from veil.vault import Vault  # noqa: PLC0415

    workspace = Workspace.locate()
    target = output or source.with_name(source.name + _SUFFIX)
    paths = {"source": str(source.absolute()), "output": str(target.absolute())}
    with workspace_access(workspace) as access:
        access.require(Permission.KEYS_USE, action="vault.encrypt")
        with failure_recorded(access, "vault.encrypt", details=paths):
            master = _master(passphrase_env, confirm=not Vault.inspect(workspace).exists)
            vault = Vault.open(master, workspace, create=True)
            started = time.perf_counter()
            with progress_bar() as progress:
                record = vault.encrypt_file(
                    source, target, name=name, overwrite=force, progress=progress
                )
        payload = _report(
            "encrypt", source, target, record.to_dict(), vault.key_id, time.perf_counter() - started
        )
        _record(access, "vault.encrypt", payload)
    if as_json:
        print_json(payload)
    else:
        _say(payload, "encrypted")


@app.command()
def decrypt(
    source: Annotated[Path, typer.Argument(help="Sealed file (written by veil vault encrypt).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Plaintext file to write (default: SOURCE without .veil)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Name the file was sealed under (default: that of --sealed-path)."
        ),
    ] = None,
    sealed_path: Annotated[
        Path | None,
        typer.Option(
            "--sealed-path",
            metavar="PATH",
            help="Path the file was sealed at, if it was moved or renamed on purpose since "
            "(default: SOURCE; a sealed file found anywhere else is refused).",
        ),
    ] = None,
    force: ForceOption = False,
    passphrase_env: PassphraseEnv = None,
    as_json: JsonOption = False,
) -> None:
    """Decrypt a sealed file; the output appears only once every chunk has verified."""
    from veil.access import Permission  # noqa: PLC0415
    from veil.vault import Vault  # noqa: PLC0415

    if output is None:
        if not source.name.endswith(_SUFFIX) or source.name == _SUFFIX:
            raise InvalidInputError(
                "veil vault decrypt needs -o OUTPUT for a file not named *.veil",
                expected="SOURCE ending in .veil, or -o OUTPUT",
                got=str(source),
                fix=f"for example: veil vault decrypt {source} -o {source.name}.plain",
            )
        output = source.with_name(source.name.removesuffix(_SUFFIX))
    workspace = Workspace.locate()
    paths = {"source": str(source.absolute()), "output": str(output.absolute())}
    with workspace_access(workspace) as access:
        access.require(Permission.KEYS_USE, action="vault.decrypt")
        with failure_recorded(access, "vault.decrypt", details=paths):
            vault = Vault.open(_master(passphrase_env, confirm=False), workspace)
            started = time.perf_counter()
            with progress_bar() as progress:
                record = vault.decrypt_file(
                    source,
                    output,
                    name=name,
                    sealed_path=sealed_path,
                    overwrite=force,
                    progress=progress,
                )
        payload = _report(
            "decrypt", source, output, record.to_dict(), vault.key_id, time.perf_counter() - started
        )
        _record(access, "vault.decrypt", payload)
    if as_json:
        print_json(payload)
    else:
        _say(payload, "decrypted")


@app.command()
def rotate(
    passphrase_env: PassphraseEnv = None,
    new_passphrase_env: Annotated[
        str | None,
        typer.Option(
            "--new-passphrase-env", metavar="VAR", help="Read the new passphrase from VAR."
        ),
    ] = None,
    new_key_env: Annotated[
        str | None,
        typer.Option(
            "--new-key-env",
            metavar="VAR",
            help="Read a new raw key (64 hex digits or base64) from VAR instead.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-wrap every data key under a new master key; no file is re-encrypted."""
    from veil.access import Permission  # noqa: PLC0415
    from veil.vault import Vault  # noqa: PLC0415

    workspace = Workspace.locate()
    with workspace_access(workspace) as access:
        access.require(Permission.KEYS_USE, action="vault.rotate")
        with failure_recorded(access, "vault.rotate"):
            vault = Vault.open(_master(passphrase_env, confirm=False), workspace)
            new = _new_master(new_passphrase_env, new_key_env)
            old_key = vault.key_id
            started = time.perf_counter()
            status = vault.rotate(new)
        payload = {
            "action": "rotate",
            "old_key_id": old_key,
            "key_id": status.key_id,
            "kdf": status.kdf,
            "objects": len(status.objects),
            "rotated": status.rotated,
            "seconds": round(time.perf_counter() - started, 3),
        }
        access.record(
            "vault.rotate",
            links={"key_id": status.key_id, "old_key_id": old_key},
            details={"objects": len(status.objects), "kdf": _kdf_text(status.kdf)},
        )
    if as_json:
        print_json(payload)
        return
    out.print(
        f"rotated the vault key {old_key} -> {status.key_id}: {len(status.objects)} data key(s) "
        "re-wrapped, no file re-encrypted. Only the new secret opens the vault now; old copies "
        "of .veil/vault/vault.json in backups still open with the old one.",
        markup=False,
        soft_wrap=True,
    )


def _kdf_text(kdf: dict[str, Any] | None) -> str:
    if not kdf:
        return "-"
    if kdf.get("name") == "scrypt":
        return f"scrypt (n={kdf.get('n')}, r={kdf.get('r')}, p={kdf.get('p')})"
    return "raw key (VEIL_VAULT_KEY)"


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show the vault: key id, key derivation, created and rotated times, sealed objects."""
    from veil.access import Permission  # noqa: PLC0415
    from veil.vault import Vault  # noqa: PLC0415

    workspace = Workspace.locate()
    with workspace_access(workspace) as access:
        # access.read, not keys.use: the status lists key ids, the key derivation and sealed
        # objects' names and paths, never a key, like `veil keys list`; auditors (who review
        # what is kept and by which key) hold it, and using a key is what keys.use guards.
        access.require(Permission.ACCESS_READ, action="vault.status")
    payload = Vault.inspect(workspace).to_dict()
    if as_json:
        print_json(payload)
        return
    if not payload["exists"]:
        out.print(
            f"no vault in {payload['path']} yet: `veil vault encrypt FILE` creates it.",
            markup=False,
            soft_wrap=True,
        )
        return
    out.print(
        f"vault {payload['path']}\n"
        f"  key id    {payload['key_id']}\n"
        f"  kdf       {_kdf_text(payload['kdf'])}\n"
        f"  created   {payload['created']}\n"
        f"  rotated   {payload['rotated'] or 'never'} ({payload['rotations']} rotation(s))",
        markup=False,
        soft_wrap=True,
    )
    if not payload["objects"]:
        out.print("no sealed objects yet.")
        return
    table = Table("name", "kind", "bytes", "sealed", "path", title="sealed objects")
    for item in payload["objects"]:
        where = item["path"] or "-"
        if item["present"] is False:
            where += " (missing)"
        table.add_row(
            escape(item["name"]),
            item["kind"],
            f"{item['size']:,}",
            item["sealed_at"],
            escape(where),
        )
    out.print(table)
