"""What encrypted inference serves, on disk: compiled CKKS programs and clients' public contexts.

**Programs.** An operator serves a program by putting what ``veil he compile``
writes in ``<home>/he/<name>/``::

    veil he compile model.npz --calibrate sample.npy -o .veil/he/digits/program.veilhe

(``compile`` writes ``program.plan.json`` beside it), or from Python with
:func:`install_program`. An optional ``serve.json`` in that folder sets how
responses are hardened and charged: ``{"flood_sigma": 0.05, "charge":
"capacity"}``. Without it, responses are re-randomised under the client's
public key and flooded with Gaussian noise of ``1e-3`` times the plan's output
magnitude (see :mod:`veil.he._harden`, and ``docs/he.md`` for what that hides
and what it does not); ``"flood_sigma": null`` re-randomises only.

**Charging.** A CKKS request's ciphertexts can carry more inputs than its
header declares, and the server cannot see how many slots are filled: a batch
group holds ``N/2`` inputs and a vector ciphertext ``N/2P`` copies (``P`` the
input width rounded up to a power of two), each of which a deviating client
may fill with a different input and read back. So by default a request is
charged, in the key's count budget, every input it *can* carry
(``"charge": "capacity"``); ``"declared"`` charges the header's count, which
bounds only an honest client. Batch requests therefore need a
``queries_per_key`` above ``N/2`` in the serving policy.

**Contexts.** A client's public context (keys to evaluate under, never the
secret key) is checked against the program's plan, then stored at
``<home>/serve/he-contexts/<name>/<id>.ctx`` (mode 0600) with a JSON record
of who uploaded it (the service key id) and when it expires. The id is 128
random bits. A key keeps at most ``per_key`` contexts per program: a new one
replaces the oldest. Contexts are shared by every worker of the service
through the disk; a lock file serialises uploads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil._io import write_bytes_atomic, write_json_atomic
from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.he import HEPlan, HEProgram, HEServer, error_bound
from veil.he.wire import MAGIC, TAIL, load_object, next_pow2, unpack

__all__ = [
    "CONTEXT_ID",
    "NAME",
    "ContextStore",
    "ProgramShelf",
    "ServedProgram",
    "check_context",
    "install_program",
]

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
CONTEXT_ID = r"^[0-9a-f]{32}$"
_PROGRAM = "program.veilhe"
_PLAN = "program.plan.json"
_SERVE = "serve.json"
_DEFAULT_FLOOD = 1e-3  # times the plan's output magnitude
_CHARGES = ("capacity", "declared")
_KEEP_SERVERS = 8  # checked contexts kept loaded per worker


def _default_flood(plan: HEPlan) -> float:
    return _DEFAULT_FLOOD * plan.magnitude


@dataclass(frozen=True)
class ServedProgram:
    """A compiled program, the plan its clients make keys for, and how it is served."""

    name: str
    program: HEProgram
    plan: HEPlan
    flood_sigma: float | None
    charge: str
    stamp: str  # changes when any of the program's files does

    def bounds(self) -> dict[str, float]:
        """:func:`error_bound` per layout, before flooding."""
        return {
            layout: error_bound(self.program, self.plan, layout=layout)
            for layout in self.plan.layouts
        }

    def max_error(self) -> dict[str, float]:
        """What a client may expect ``|decrypted - plaintext|`` to stay under, flooding included.

        The flooding noise is Gaussian; ``TAIL`` (6) standard deviations are
        exceeded with probability 2e-9 per output.
        """
        flood = TAIL * (self.flood_sigma or 0.0)
        return {layout: bound + flood for layout, bound in self.bounds().items()}

    def capacity(self, layout: str) -> int:
        """Inputs one ciphertext (vector) or one group of ciphertexts (batch) can carry."""
        slots = self.plan.slots
        return slots // next_pow2(self.plan.input_dim) if layout == "vector" else slots


def install_program(
    home: Path,
    name: str,
    program: HEProgram,
    *,
    layouts: tuple[str, ...] = ("vector", "batch"),
    flood_sigma: float | str | None = "default",
    charge: str = "capacity",
) -> Path:
    """Serve ``program`` as ``name``: write it, its plan and ``serve.json`` under ``<home>/he/``.

    ``flood_sigma``: ``"default"`` (``1e-3`` times the plan's magnitude), a
    positive number (the noise's standard deviation in the outputs' units), or
    ``None`` to re-randomise responses without flooding them.

    Returns:
        The program's folder.

    Raises:
        InvalidInputError: A bad name, charge or sigma, or an uncalibrated program.
    """
    _check_name(name)
    plan = program.plan(layouts=layouts)
    settings: dict[str, Any] = {"charge": charge}
    if flood_sigma != "default":
        settings["flood_sigma"] = flood_sigma
    _settings(plan, settings, where="install_program")
    folder = home / "he" / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_bytes_atomic(folder / _PROGRAM, program.to_bytes())
    write_json_atomic(folder / _PLAN, plan.to_dict())
    write_json_atomic(folder / _SERVE, settings)
    return folder


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME, name):
        raise InvalidInputError(
            "invalid name for a served HE program",
            expected="1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            got=repr(name),
        )


def _settings(plan: HEPlan, raw: Any, *, where: str) -> tuple[float | None, str]:
    """``serve.json``'s ``(flood_sigma, charge)``, checked."""
    if not isinstance(raw, dict) or set(raw) - {"flood_sigma", "charge"}:
        raise InvalidInputError(
            f"{where}: unreadable serving settings",
            expected='{"flood_sigma": number or null, "charge": "capacity" or "declared"}',
            got=repr(raw)[:200],
        )
    charge = raw.get("charge", "capacity")
    if charge not in _CHARGES:
        raise InvalidInputError(
            f"{where}: unknown charge", expected="'capacity' or 'declared'", got=repr(charge)
        )
    sigma = raw.get("flood_sigma", _default_flood(plan))
    limit = plan.magnitude / TAIL
    if sigma is not None and (
        isinstance(sigma, bool)
        or not isinstance(sigma, int | float)
        or not (math.isfinite(sigma) and 0 < sigma <= limit)
    ):
        raise InvalidInputError(
            f"{where}: flood_sigma out of range",
            expected=f"null, or a number in (0, {limit:.4g}] (the plan's magnitude / {TAIL:g})",
            got=repr(sigma),
            fix="choose a sigma far above error_bound(program, plan) and far below the outputs",
        )
    return (None if sigma is None else float(sigma)), str(charge)


class ProgramShelf:
    """The programs under ``<home>/he/``, read once and again when their files change."""

    def __init__(self, home: Path) -> None:
        self.root = home / "he"
        self._lock = threading.Lock()
        self._loaded: dict[str, ServedProgram] = {}

    def names(self) -> list[str]:
        """Every served program's name, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if re.fullmatch(NAME, entry.name) and (entry / _PROGRAM).is_file()
        )

    def get(self, name: str) -> ServedProgram:
        """The program served as ``name``.

        Raises:
            NotFoundError: No such program.
            InvalidInputError: Its files are unreadable or disagree with each other.
        """
        folder = self.root / name
        if not re.fullmatch(NAME, name) or not (folder / _PROGRAM).is_file():
            raise NotFoundError(
                f"no encrypted-inference program named {name!r}",
                expected=f"one of {self.names()}",
                got=repr(name),
                fix="GET /v1/he/models lists them; an operator adds one under <home>/he/<name>/",
            )
        stamp = ":".join(
            str(path.stat().st_mtime_ns) if path.is_file() else "-"
            for path in (folder / _PROGRAM, folder / _PLAN, folder / _SERVE)
        )
        with self._lock:
            known = self._loaded.get(name)
        if known is not None and known.stamp == stamp:
            return known
        served = self._load(name, folder, stamp)
        with self._lock:
            self._loaded[name] = served
        return served

    def _load(self, name: str, folder: Path, stamp: str) -> ServedProgram:
        program = HEProgram.from_bytes((folder / _PROGRAM).read_bytes())
        if not (folder / _PLAN).is_file():
            raise InvalidInputError(
                f"the program {name!r} has no plan",
                expected=f"{folder / _PLAN} (what `veil he compile` writes beside the program)",
                got="no file",
                fix="compile it again with -o <home>/he/<name>/program.veilhe",
            )
        try:
            plan = HEPlan.from_dict(json.loads((folder / _PLAN).read_text(encoding="utf-8")))
            raw = (
                json.loads((folder / _SERVE).read_text(encoding="utf-8"))
                if (folder / _SERVE).is_file()
                else {}
            )
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"the program {name!r} has an unreadable JSON file", got=str(exc)
            ) from exc
        if plan != program.plan(layouts=plan.layouts):
            raise InvalidInputError(
                f"the plan of {name!r} is not its program's",
                expected="the plan `veil he compile` wrote with this program",
                got="a plan with other parameters",
                fix="compile the program again (it writes both files)",
            )
        sigma, charge = _settings(plan, raw, where=str(folder / _SERVE))
        return ServedProgram(name, program, plan, sigma, charge, stamp)


# ----------------------------------------------------------------------------- contexts


def check_context(served: ServedProgram, data: bytes) -> tuple[str, HEServer]:
    """The CKKS key id of a client's public context and a server for it, or a refusal.

    Refused: anything but a public context (a secret key above all),
    parameters other than the program's plan, a context without a public key
    (responses are re-randomised under it), sections beyond the relinearisation,
    Galois and public keys, and Galois keys other than those the plan names.
    SEAL validates every key against the parameters as it loads them.

    Raises:
        InvalidInputError: Any of the above.
    """
    kind = _kind(data)
    if kind == "secret":
        raise InvalidInputError(
            "the upload is a secret key, not a public context",
            expected="public.ctx from `veil he keygen` (HEClient.public_context())",
            got="a Veil HE secret key file (it was not stored)",
            fix="never send secret.key to anyone; treat this key as exposed: make new keys "
            "for the plan and upload their public.ctx",
        )
    meta, sections = unpack(data, "context")
    try:
        plan = HEPlan.from_dict(meta["plan"])
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(
            "the public context names no plan", expected="a context from `veil he keygen`"
        ) from exc
    if plan != served.plan:
        mine, theirs = served.plan.to_dict(), plan.to_dict()
        differ = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise InvalidInputError(
            f"the public context was made for other parameters than {served.name!r}",
            expected=", ".join(f"{k}={mine[k]}" for k in differ),
            got=", ".join(f"{k}={theirs.get(k)}" for k in differ),
            fix=f"make keys for the plan GET /v1/he/models lists for {served.name!r}",
        )
    wanted = 2 + (1 if plan.galois_steps else 0)
    if meta.get("public_key") is not True or len(sections) != wanted:
        raise InvalidInputError(
            "the public context does not hold exactly the keys the program needs",
            expected=f"{wanted} sections: relinearisation"
            + (", Galois" if plan.galois_steps else "")
            + " and public keys",
            got=f"{len(sections)} sections, public key flagged: {meta.get('public_key') is True}",
            fix="export the context with this version of Veil (HEClient.public_context())",
        )
    key_id = meta.get("key_id")
    if not isinstance(key_id, str) or not re.fullmatch(CONTEXT_ID, key_id):
        raise InvalidInputError(
            "the public context has no valid key id", expected="32 hex digits", got=repr(key_id)
        )
    server = HEServer(
        served.program, data, workers=1, rerandomize=True, flood_sigma=served.flood_sigma
    )
    if plan.galois_steps:
        galois = load_object("GaloisKeys", server._ctx.context, sections[1])  # noqa: SLF001 - its SEAL context
        if galois.size() != len(plan.galois_steps):
            raise InvalidInputError(
                "the public context holds Galois keys the program does not need",
                expected=f"{len(plan.galois_steps)} keys, for the rotations {list(plan.galois_steps)}",
                got=f"{galois.size()} keys",
                fix="make keys for the plan only (HEClient.generate(plan)), not all rotations",
            )
    return key_id, server


def _kind(data: bytes) -> str | None:
    prefix = len(MAGIC) + 4
    if len(data) < prefix or not data.startswith(MAGIC):
        return None
    length = int.from_bytes(data[len(MAGIC) : prefix], "big")
    try:
        kind = json.loads(data[prefix : prefix + length]).get("kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


class ContextStore:
    """Public contexts uploaded by service keys, on disk, with an expiry and a per-key cap.

    Args:
        root: ``<home>/serve/he-contexts``.
        ttl: Seconds a context is kept after its upload.
        per_key: Contexts one service key keeps per program; the oldest goes first.
    """

    def __init__(self, root: Path, *, ttl: float, per_key: int) -> None:
        if not (math.isfinite(ttl) and ttl > 0) or per_key < 1:
            raise InvalidInputError(
                "invalid context limits",
                expected="ttl > 0 seconds and per_key >= 1",
                got=f"ttl={ttl}, per_key={per_key}",
            )
        self.root = root
        self.ttl = ttl
        self.per_key = per_key
        self._servers: OrderedDict[tuple[str, str], HEServer] = OrderedDict()
        self._lock = threading.Lock()

    def put(
        self, served: ServedProgram, key_id: str, he_key_id: str, data: bytes, server: HEServer
    ) -> tuple[dict[str, Any], list[str]]:
        """Store a checked context; its record and the ids of the contexts it replaced."""
        folder = self.root / served.name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = time.time()
        record = {
            "context": secrets.token_hex(16),
            "program": served.name,
            "key_id": key_id,
            "he_key_id": he_key_id,
            "plan_sha256": _plan_digest(served.plan),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": now,
            "expires": now + self.ttl,
        }
        with _locked(folder / ".lock"):
            records = self._sweep(folder, now)
            mine = sorted((r for r in records if r["key_id"] == key_id), key=lambda r: r["created"])
            evicted = [r["context"] for r in mine[: max(0, len(mine) - self.per_key + 1)]]
            for old in evicted:
                self._remove(folder, old)
            write_bytes_atomic(folder / f"{record['context']}.ctx", data)
            write_json_atomic(folder / f"{record['context']}.json", record)
        self._keep(served, str(record["context"]), server)
        return record, evicted

    def find(self, served: ServedProgram, context: str) -> dict[str, Any] | None:
        """The record of ``context`` if it exists and has not expired (expired ones are removed)."""
        path = self.root / served.name / f"{context}.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if float(record.get("expires", 0)) <= time.time():
            self._remove(self.root / served.name, context)
            return None
        return record

    def server(self, served: ServedProgram, record: dict[str, Any]) -> HEServer:
        """An :class:`HEServer` for a stored context (kept loaded for the next request)."""
        context = str(record["context"])
        if record.get("plan_sha256") != _plan_digest(served.plan):
            raise ConflictError(
                f"the program {served.name!r} was recompiled after this context was uploaded",
                expected="a context made for the program's current plan",
                got=f"context {context} for an earlier plan",
                fix="make keys for the plan GET /v1/he/models lists now and upload their context",
            )
        with self._lock:
            known = self._servers.get((served.stamp, context))
            if known is not None:
                self._servers.move_to_end((served.stamp, context))
                return known
        try:
            data = (self.root / served.name / f"{context}.ctx").read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError("the context was removed", got=context) from exc
        _, server = check_context(served, data)
        self._keep(served, context, server)
        return server

    def remove(self, served: ServedProgram, context: str) -> None:
        """Delete a context (its owner asked)."""
        with _locked(self.root / served.name / ".lock"):
            self._remove(self.root / served.name, context)

    def _keep(self, served: ServedProgram, context: str, server: HEServer) -> None:
        with self._lock:
            self._servers[(served.stamp, context)] = server
            self._servers.move_to_end((served.stamp, context))
            while len(self._servers) > _KEEP_SERVERS:
                self._servers.popitem(last=False)

    def _sweep(self, folder: Path, now: float) -> list[dict[str, Any]]:
        """Live records; expired contexts and orphaned files (a crash mid-upload) are removed."""
        live = []
        for path in folder.glob("*.json"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                record = None
            if record is None or float(record.get("expires", 0)) <= now:
                self._remove(folder, path.stem)
            else:
                live.append(record)
        for path in folder.glob("*.ctx"):
            if not (folder / f"{path.stem}.json").exists():
                path.unlink(missing_ok=True)
        for path in folder.glob(".*.tmp"):  # uploads write under the lock: none is in progress
            path.unlink(missing_ok=True)
        return live

    def _remove(self, folder: Path, context: str) -> None:
        (folder / f"{context}.json").unlink(missing_ok=True)
        (folder / f"{context}.ctx").unlink(missing_ok=True)
        with self._lock:
            for key in [k for k in self._servers if k[1] == context]:
                del self._servers[key]


def _plan_digest(plan: HEPlan) -> str:
    return hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (every worker process of the service)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)
