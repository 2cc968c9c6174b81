"""``veil he``: encrypted inference. The client makes keys, encrypts and decrypts; the server infers.

Server side: ``veil he compile`` (a trained model to a program and its public
plan) and ``veil he infer`` (a request to a response, with the public context
only). Client side: ``veil he keygen`` (keys for a plan), ``veil he encrypt`` and
``veil he decrypt``. ``veil he demo`` runs the whole round trip on bundled data.

A model compiled from the workspace's registry (a file under
``.veil/models/NAME/``) needs ``model.read`` on its training set (or the
workspace), checked before it is read, and its load is recorded on the trail
(``model.load``); files elsewhere, and every other command, work on plain files
with nothing to check.

The work is in :mod:`veil.he` (:func:`~veil.he.load_inputs`,
:func:`~veil.he.respond`, :func:`~veil.he.round_trip`...); this module parses,
checks output paths, reads and writes files and prints. It runs to about 500
lines because six commands declare their options here.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.table import Table

from veil._io import write_bytes_atomic
from veil.cli._acting import failure_recorded, find_workspace, workspace_access
from veil.cli._output import err, out, print_json, progress_bar, write_json_atomic
from veil.errors import InvalidInputError, NotFoundError, require
from veil.progress import ProgressEvent

if TYPE_CHECKING:
    from collections.abc import Iterator

    from veil.access import Access
    from veil.he import HEClient, HEProgram, PaillierClient
    from veil.train import PrivacyCard

__all__ = ["app", "render_round_trip"]

# veil.he (and TenSEAL, torch) load inside each command, so `veil --help` stays fast.
app = typer.Typer(
    help="Encrypted inference: CKKS (TenSEAL) for models, Paillier for sums and linear scores.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace existing output files.")]
_SECRET = "secret.key"  # noqa: S105 - a file name, not a secret
_SEALED = "secret.key.veil"
_PUBLIC = "public.ctx"
_SHOWN = 20  # predictions printed before "..."


def _write(path: Path, data: bytes, *, force: bool, owner_only: bool = False) -> None:
    """Write bytes atomically (a complete file or none); refuse to replace one unless ``force``."""
    if path.exists() and not force:
        raise InvalidInputError(
            f"{path} already exists",
            expected="a new output path",
            got="an existing file",
            fix="choose another path, or pass --force",
        )
    write_bytes_atomic(path, data, mode=0o600 if owner_only else 0o644)


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise NotFoundError(f"{what} not found", expected=f"a file at {path}", got="nothing there")
    return path.read_bytes()


def _load_inputs(path: Path, scale: float) -> np.ndarray:
    from veil.he import load_inputs  # noqa: PLC0415

    return load_inputs(path, scale)


def _load_model(
    path: Path,
    input_shape: str | None,
    calibration: np.ndarray,
    *,
    architecture: Path | None,
    trust_pickle: bool,
) -> HEProgram:
    from veil.he import load_model_file  # noqa: PLC0415

    if not path.is_file():
        raise NotFoundError("model not found", expected=f"a file at {path}", got="nothing there")
    if architecture is not None and not architecture.is_file():
        raise NotFoundError(
            "architecture not found", expected=f"a file at {architecture}", got="nothing there"
        )
    shape = None
    if input_shape:
        try:
            shape = tuple(int(part) for part in input_shape.split(","))
        except ValueError as exc:
            raise InvalidInputError(
                "bad --input-shape",
                expected="comma-separated integers, e.g. 1,28,28",
                got=input_shape,
            ) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load_model_file(
                path,
                architecture=architecture,
                input_shape=shape,
                calibration=calibration,
                trust_pickle=trust_pickle,
            )
        finally:
            for warning in caught:  # loud, on stderr, whatever the filters say
                err.print(f"warning: {warning.message}", style="bold yellow", markup=False)


@contextmanager
def _registry_model(path: Path) -> Iterator[tuple[Access, PrivacyCard] | None]:
    """Who acts and the card of the registry model ``path`` belongs to; ``None`` for other files.

    The acting principal needs ``model.read`` on the model's training set,
    checked here, before the model is read (a refusal is on the trail).
    """
    workspace = find_workspace()
    if workspace is None or not path.resolve().is_relative_to(workspace.home.resolve()):
        yield None
        return
    require("torch", extra="train", purpose="compiling a model of the workspace's registry")
    from veil.access import Permission  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415

    registry = ModelRegistry.for_workspace(workspace)
    try:
        relative = path.resolve().relative_to(registry.root.resolve())
    except ValueError:
        relative = None
    name = relative.parts[0] if relative is not None and relative.parts else None
    if name is None or name.startswith(".") or not registry.exists(name):
        yield None
        return
    card = registry.card(name)
    with workspace_access(workspace) as access:
        access.require(
            Permission.MODEL_READ, card.dataset or None, action="model.load", purpose=_PURPOSE
        )
        yield access, card


_PURPOSE = "compile for encrypted inference (veil he compile)"


def _record_load(access: Access, card: PrivacyCard, program: Path) -> None:
    """Put the registry model's load on the trail, linked to its ledger event and data version."""
    access.record(
        "model.load",
        dataset=card.dataset or None,
        purpose=_PURPOSE,
        links={
            "model": card.model,
            "ledger_event": card.ledger_event_id,
            "content_sha256": card.dataset_sha256,
        },
        details={"private": card.private, "epsilon": card.epsilon, "program": str(program)},
    )


@app.command("compile")
def compile_(
    model: Annotated[
        Path,
        typer.Argument(
            help="A .pt state dict (with --arch) or a .npz of a linear model's coefficients."
        ),
    ],
    calibrate: Annotated[
        Path, typer.Option("--calibrate", help="Representative inputs (.npy or .csv).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="The compiled program.")],
    plan_out: Annotated[
        Path | None, typer.Option("--plan-out", help="Where to write the public plan (JSON).")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="Shape of one input, e.g. 1,28,28.")
    ] = None,
    scale: Annotated[float, typer.Option("--scale", help="Divide inputs by this.")] = 1.0,
    arch: Annotated[
        Path | None,
        typer.Option("--arch", help="JSON architecture of a .pt state dict (allow-listed layers)."),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Load a pickled model (.pt module, .joblib): runs its code. Your own files only.",
        ),
    ] = False,
    layouts: Annotated[
        str, typer.Option("--layouts", help="vector (one input), batch (many) or both.")
    ] = "vector,batch",
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Server: compile a trained model for CKKS and publish its parameter plan."""
    chosen = tuple(part.strip() for part in layouts.split(",") if part.strip())
    if not chosen or any(part not in ("vector", "batch") for part in chosen):
        raise InvalidInputError(
            "bad --layouts", expected="'vector', 'batch' or 'vector,batch'", got=layouts
        )
    with _registry_model(model) as registered:
        access = None if registered is None else registered[0]
        with failure_recorded(access, "model.load", purpose=_PURPOSE):
            program = _load_model(
                model,
                input_shape,
                _load_inputs(calibrate, scale),
                architecture=arch,
                trust_pickle=trust_pickle,
            )
        if registered is not None:
            _record_load(*registered, output.absolute())
    plan = program.plan(layouts=chosen)
    _write(output, program.to_bytes(), force=force, owner_only=True)
    target = plan_out or output.with_suffix(".plan.json")
    if target.exists() and not force:
        output.unlink()
        raise InvalidInputError(
            f"{target} already exists",
            expected="a new plan path",
            got="an existing file",
            fix="choose another path, or pass --force",
        )
    write_json_atomic(target, plan.to_dict())
    payload = {
        "program": str(output),
        "plan": str(target),
        "source": program.source,
        "steps": [type(step).__name__ for step in program.steps],
        **plan.to_dict(),
    }
    if as_json:
        print_json(payload)
        return
    out.print(
        f"compiled {program.source}: {' -> '.join(payload['steps'])} (depth {plan.depth})\n"
        f"CKKS N={plan.poly_modulus_degree}, primes {list(plan.coeff_mod_bit_sizes)} = "
        f"{plan.total_coeff_bits} of {plan.max_coeff_bits} bits (128-bit security), "
        f"scale 2^{plan.scale_bits}, rotations {list(plan.galois_steps) or 'none'}\n"
        f"program: {output} (keep it: it holds the weights); plan for clients: {target}",
        markup=False,
    )


def _keys_dir(path: Path) -> tuple[Path, Path]:
    return path / _SECRET, path / _SEALED


def _vault(passphrase_env: str | None, *, create: bool) -> Any:
    from veil.cli.vault import _master  # noqa: PLC0415 - the vault command's secret lookup
    from veil.vault import Vault  # noqa: PLC0415

    # a new vault asks for its passphrase twice: a typo must not seal the only key away
    new = create and not Vault.inspect().exists
    return Vault.open(_master(passphrase_env, confirm=new), create=create)


def _with_vault(
    passphrase_env: str | None, *, create: bool, action: str, name: str, work: Any
) -> Any:
    """``work(vault)`` on the workspace vault, as its acting principal may (keys.use), recorded.

    The vault holds the HE secret key sealed: sealing and unsealing it are key
    uses like ``veil vault encrypt|decrypt``, checked and recorded the same way
    (by the sealed object's name, never the key).
    """
    from veil.access import Permission  # noqa: PLC0415

    workspace = find_workspace()
    if workspace is None:  # Vault.open says that a vault needs a workspace
        return work(_vault(passphrase_env, create=create))
    with workspace_access(workspace) as access:
        access.require(Permission.KEYS_USE, action=action)
        with failure_recorded(access, action, details={"name": name}):
            result = work(_vault(passphrase_env, create=create))
        access.record(action, details={"name": name})
    return result


def _sealed_name(keys: Path) -> str:
    """The name the secret key is sealed under: stable if the directory moves."""
    return f"he-secret-key:{keys.resolve().name}"


def _load_client(keys: Path, passphrase_env: str | None) -> HEClient | PaillierClient:
    from veil.he import client_from_bytes  # noqa: PLC0415

    plain, sealed = _keys_dir(keys)
    if sealed.is_file():
        name = _sealed_name(keys)
        blob = sealed.read_bytes()
        data = _with_vault(
            passphrase_env,
            create=False,
            action="vault.unseal",
            name=name,
            work=lambda vault: vault.unseal(blob, name=name),
        )
    else:
        data = _read(plain, "secret key (`veil he keygen` writes it)")
    return client_from_bytes(data)


@app.command()
def keygen(
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory for the keys.")],
    plan: Annotated[
        Path | None, typer.Option("--plan", help="The server's plan (`veil he compile`).")
    ] = None,
    scheme: Annotated[str, typer.Option("--scheme", help="ckks or paillier.")] = "ckks",
    bits: Annotated[int, typer.Option("--bits", help="Paillier modulus bits.")] = 3072,
    vault: Annotated[
        bool, typer.Option("--vault", help="Seal the secret key in the workspace vault.")
    ] = False,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", metavar="VAR", help="Vault passphrase variable."),
    ] = None,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Client: make a key pair; the secret stays here, public.ctx goes to the server."""
    from veil.he import HEClient, HEPlan, PaillierClient  # noqa: PLC0415

    started = time.perf_counter()
    client: HEClient | PaillierClient
    if scheme == "ckks":
        if plan is None:
            raise InvalidInputError(
                "CKKS keys need the server's plan",
                expected="--plan PLAN.json (written by `veil he compile`)",
                got="no --plan",
            )
        try:
            payload = json.loads(_read(plan, "plan"))
        except json.JSONDecodeError as exc:
            raise InvalidInputError("the plan is not JSON", got=str(exc)) from exc
        client = HEClient.generate(HEPlan.from_dict(payload))
        public = client.public_context()
    elif scheme == "paillier":
        client = PaillierClient.generate(bits)
        public = client.public_bytes()
    else:
        raise InvalidInputError("unknown scheme", expected="ckks or paillier", got=scheme)
    secret = client.to_bytes()
    plain, sealed = _keys_dir(output)
    for path in (plain, sealed, output / _PUBLIC):
        if path.exists() and not force:
            raise InvalidInputError(
                f"{path} already exists",
                expected="an empty key directory",
                got="existing keys",
                fix="choose another directory, or pass --force",
            )
    output.mkdir(parents=True, exist_ok=True)
    if vault:
        name = _sealed_name(output)
        blob = _with_vault(
            passphrase_env,
            create=True,
            action="vault.seal",
            name=name,
            work=lambda vault: vault.seal(secret, name=name),
        )
        _write(sealed, blob, force=True, owner_only=True)
        plain.unlink(missing_ok=True)
    else:
        _write(plain, secret, force=True, owner_only=True)
        sealed.unlink(missing_ok=True)
    _write(output / _PUBLIC, public, force=True)
    result = {
        "scheme": scheme,
        "key_id": client.key_id,
        "secret_key": str(sealed if vault else plain),
        "sealed_in_vault": vault,
        "public_context": str(output / _PUBLIC),
        "public_context_bytes": len(public),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        print_json(result)
        return
    out.print(
        f"{scheme} keys {client.key_id[:12]}: secret in {result['secret_key']} "
        f"({'sealed in the vault' if vault else 'mode 0600'}); send {result['public_context']} "
        f"({len(public) / 1e6:.2f} MB) to the server",
        markup=False,
    )


@app.command()
def encrypt(
    inputs: Annotated[Path, typer.Argument(help="Inputs (.npy, or .csv rows without header).")],
    keys: Annotated[Path, typer.Option("--keys", help="The directory of `veil he keygen`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The encrypted request.")],
    batch: Annotated[
        bool, typer.Option("--batch", help="Pack many inputs (one per slot) instead of one.")
    ] = False,
    scale: Annotated[float, typer.Option("--scale", help="Divide inputs by this.")] = 1.0,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", metavar="VAR", help="Vault passphrase variable."),
    ] = None,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Client: encrypt inputs for the server."""
    from veil.he import HEClient  # noqa: PLC0415

    client = _load_client(keys, passphrase_env)
    values = _load_inputs(inputs, scale)
    if isinstance(client, HEClient):
        request = client.encrypt(values, layout="batch" if batch else "vector")
    else:
        request = client.encrypt(values)
    _write(output, request, force=force)
    result = {
        "request": str(output),
        "bytes": len(request),
        "inputs": int(np.atleast_2d(values).shape[0]),
        "seconds": round(client.timings.get("encrypt_s", 0.0), 3),
    }
    if as_json:
        print_json(result)
        return
    out.print(
        f"encrypted {result['inputs']} input(s) into {output} ({len(request) / 1e6:.2f} MB)",
        markup=False,
    )


@app.command()
def infer(
    request: Annotated[Path, typer.Argument(help="The client's encrypted request.")],
    model: Annotated[Path, typer.Option("--model", help="The compiled program.")],
    context: Annotated[Path, typer.Option("--context", help="The client's public.ctx.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The encrypted response.")],
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Processes for batched requests.")
    ] = None,
    rerandomize: Annotated[
        bool,
        typer.Option(
            "--rerandomize",
            help="CKKS: add a fresh encryption of zero to each response (needs a context "
            "with a public key).",
        ),
    ] = False,
    flood_sigma: Annotated[
        float | None,
        typer.Option(
            "--flood-sigma",
            help="CKKS: add Gaussian noise of this standard deviation to each output, then "
            "re-randomise (masks the CKKS error; see docs/he.md).",
        ),
    ] = None,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Server: evaluate the model on ciphertexts, with no secret key."""
    from veil.he import HEProgram, respond  # noqa: PLC0415

    program = HEProgram.from_bytes(_read(model, "compiled program"))
    public = _read(context, "public context")
    request_bytes = _read(request, "request")
    started = time.perf_counter()
    with progress_bar() as report:

        def tick(done: int, total: int) -> None:
            report(ProgressEvent("encrypted inference", done, total, "groups"))

        response = respond(
            program,
            public,
            request_bytes,
            workers=workers,
            rerandomize=rerandomize,
            flood_sigma=flood_sigma,
            progress=tick,
        )
    seconds = time.perf_counter() - started
    _write(output, response, force=force)
    result = {"response": str(output), "bytes": len(response), "seconds": round(seconds, 3)}
    if as_json:
        print_json(result)
        return
    out.print(
        f"inferred on ciphertexts in {seconds:.2f} s: {output} ({len(response) / 1e6:.2f} MB)",
        markup=False,
    )


@app.command()
def decrypt(
    response: Annotated[Path, typer.Argument(help="The server's encrypted response.")],
    keys: Annotated[Path, typer.Option("--keys", help="The directory of `veil he keygen`.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the outputs as JSON here.")
    ] = None,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", metavar="VAR", help="Vault passphrase variable."),
    ] = None,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Client: decrypt the server's response (only the secret key can)."""
    from veil.he import HEClient  # noqa: PLC0415

    if output is not None and output.exists() and not force:
        raise InvalidInputError(
            f"{output} already exists",
            expected="a new output path",
            got="an existing file",
            fix="choose another path, or pass --force",
        )
    client = _load_client(keys, passphrase_env)
    data = _read(response, "response")
    values = np.atleast_2d(client.decrypt(data))
    result: dict[str, Any] = {"outputs": values.round(6).tolist()}
    if values.shape[1] > 1:
        result["predictions"] = values.argmax(axis=1).tolist()
    if isinstance(client, HEClient) and client.plan.output != "none":
        probabilities = np.atleast_2d(client.predict(data))
        result[client.plan.output] = probabilities.round(6).tolist()
    if output is not None:
        write_json_atomic(output, result, owner_only=True)
    if as_json:
        print_json(result)
        return
    shown = result.get("predictions", [row[0] for row in result["outputs"]])
    out.print(
        f"decrypted {values.shape[0]} result(s): {shown[:_SHOWN]}{' ...' if len(shown) > _SHOWN else ''}",
        markup=False,
    )


# ----------------------------------------------------------------------------- the demo


@app.command()
def demo(as_json: JsonOption = False) -> None:
    """The doctor's round trip on bundled data: keys, encrypt, infer, decrypt (seeded)."""
    from veil.he import round_trip  # noqa: PLC0415

    result = round_trip()
    if as_json:
        print_json(result)
        return
    render_round_trip(result)


def render_round_trip(result: dict[str, Any]) -> None:
    """The round trip as a table, for people."""
    plan = result["plan"]
    table = Table(
        "step", "result", title="Encrypted inference: the doctor's round trip", show_lines=False
    )
    table.add_row("model", result["model"])
    table.add_row(
        "plan",
        f"N={plan['poly_modulus_degree']}, primes {plan['coeff_mod_bit_sizes']} "
        f"({plan['total_coeff_bits']}/{plan['max_coeff_bits']} bits, 128-bit), "
        f"rotations {plan['galois_steps']}",
    )
    times = result["timings"]
    table.add_row(
        "doctor: keys",
        f"{times['keygen_s']:.2f} s; public context {result['public_context_bytes'] / 1e6:.2f} MB (no secret key: {not result['secret_key_in_context']})",
    )
    table.add_row(
        "doctor: encrypt",
        f"{times['encrypt_s'] * 1e3:.0f} ms, request {result['request_bytes'] / 1e3:.0f} KB",
    )
    table.add_row(
        "company: infer",
        f"{times['infer_s'] * 1e3:.0f} ms on the ciphertext, response {result['response_bytes'] / 1e3:.0f} KB",
    )
    table.add_row(
        "doctor: decrypt",
        f"{times['decrypt_s'] * 1e3:.0f} ms: predicts {result['encrypted_prediction']} "
        f"(plaintext {result['plaintext_prediction']}, truth {result['true_label']}); "
        f"error {result['max_error']:.1e} <= bound {result['error_bound']:.1e}",
    )
    if "batch" in result:
        batch = result["batch"]
        table.add_row(
            "batched",
            f"{batch['images']} digits in one request: {batch['encrypted_accuracy']:.1%} encrypted vs "
            f"{batch['plaintext_accuracy']:.1%} plaintext ({batch['agreement']:.1%} agree)",
        )
    paillier = result["paillier"]
    table.add_row(
        "Paillier score", f"{paillier['score']:.6f} (plaintext {paillier['plaintext_score']:.6f})"
    )
    out.print(table)
