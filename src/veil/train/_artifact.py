"""Trained models on disk, each with its privacy card.

A model lives in ``<workspace>/models/<name>/``: ``model.pt`` (the weights,
a plain ``state_dict``), ``model.json`` (how to rebuild it: architecture spec,
feature encoding, classes) and ``privacy_card.json`` (what its training cost
and how: epsilon, delta, accountant, sampling, clipping norm, noise
multiplier, steps, dataset and ledger event). The three files are written to a
temporary folder and moved into place in one rename, so a crash never leaves a
model without its card.

A model trained on a dataset with a privacy unit also holds ``members.tokens``:
the sorted person tokens (:func:`veil.data.person_token`) of its training rows,
one per line, so that erasure can say which models still carry an erased person
without reading the data. A SISA ensemble (:mod:`veil.train._sisa`) keeps its
shards' checkpoints under ``shards/`` instead of ``model.pt``.
"""

from __future__ import annotations

import builtins
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veil._io import (
    atomic_path,
    dumps,
    float_from_json,
    fsync_directory,
    to_jsonable,
    write_text_atomic,
)
from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.workspace import Workspace

if TYPE_CHECKING:  # torch loads when a model's weights are written or read, not before
    from torch import nn

__all__ = ["ModelRegistry", "PrivacyCard", "SavedModel"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: `$` lets "x\n" through
CARD_FILE = "privacy_card.json"
META_FILE = "model.json"
WEIGHTS_FILE = "model.pt"
MEMBERS_FILE = "members.tokens"


@dataclass(frozen=True)
class PrivacyCard:
    """What a model's training cost in privacy, and how it was trained (for an auditor)."""

    model: str
    dataset: str
    dataset_sha256: str
    created_at: str
    private: bool
    epsilon: float
    delta: float
    accountant: str
    epsilon_rdp: float | None
    epsilon_prv: float | None
    neighbouring: str
    sampling: str
    sample_rate: float
    expected_batch_size: int
    max_grad_norm: float | None
    noise_multiplier: float | None
    steps: int
    epochs: int
    examples: int
    secure_rng: bool
    ledger_event_id: int | None
    ledger_seq: int | None
    architecture: str
    test_accuracy: float | None
    test_epsilon: float | None
    test_dataset: str | None
    test_ledger_event_id: int | None
    veil_version: str
    test_majority_rate: float | None = None
    test_no_utility: bool | None = None
    dataset_version: int | None = None
    membership: str | None = None
    sisa: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready values (an infinite epsilon as ``"inf"``)."""
        out: dict[str, Any] = to_jsonable(asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyCard:
        values = dict(data)
        for name in _FLOAT_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = float_from_json(values[name])
        return cls(**{k: values.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows for people."""

        def fmt(v: float | None, spec: str = ".4g") -> str:
            return "-" if v is None else format(v, spec)

        rows = [
            ("model", self.model),
            ("architecture", self.architecture),
            (
                "dataset",
                f"{self.dataset} (sha256 {self.dataset_sha256[:12]}…, {self.examples} examples)",
            ),
            (
                "private",
                "yes"
                if self.private
                else "NOT PRIVATE (baseline: no clipping, no noise; epsilon = inf; do not release)",
            ),
        ]
        if not self.private and self.ledger_event_id:
            rows.append(
                (
                    "ledger event",
                    f"#{self.ledger_event_id} (seq {self.ledger_seq}): non-private, no budget",
                )
            )
        if self.private:
            rows += [
                (
                    "epsilon",
                    f"{self.epsilon:.4g} at delta {self.delta:g} ({self.accountant})",
                ),
                (
                    "cross-checks",
                    f"RDP {fmt(self.epsilon_rdp)}, PRV {fmt(self.epsilon_prv)}",
                ),
                ("guarantee", f"{self.neighbouring}"),
                (
                    "sampling",
                    f"{self.sampling}, rate {self.sample_rate:.4g} (expected batch {self.expected_batch_size})",
                ),
                ("clipping norm", fmt(self.max_grad_norm)),
                ("noise multiplier", fmt(self.noise_multiplier)),
                ("steps", f"{self.steps} ({self.epochs} epochs)"),
                (
                    "noise source",
                    "AES-256-CTR CSPRNG" if self.secure_rng else "SEEDED: not private",
                ),
                (
                    "ledger event",
                    f"#{self.ledger_event_id} (seq {self.ledger_seq})"
                    if self.ledger_event_id
                    else "-",
                ),
            ]
        rows += [
            (
                "test accuracy",
                fmt(self.test_accuracy, ".2%")
                + (
                    f" on {self.test_dataset} (DP count, epsilon {self.test_epsilon:g}, "
                    f"ledger event #{self.test_ledger_event_id})"
                    if self.test_dataset
                    else ""
                ),
            ),
        ]
        if self.test_majority_rate is not None:
            rows.append(
                (
                    "majority-class rate",
                    f"{self.test_majority_rate:.2%} (DP count; always guessing the commonest label)",
                )
            )
        if self.test_no_utility:
            rows.append(
                (
                    "WARNING",
                    (
                        "no utility: test accuracy is not distinguishable from always guessing the "
                        "most common label"
                    ),
                )
            )
        if self.dataset_version is not None:
            rows.append(("dataset version", str(self.dataset_version)))
        if self.membership:
            rows.append(("membership", self.membership))
        if self.sisa:
            rows.append(
                (
                    "SISA ensemble",
                    (
                        f"{self.sisa.get('shards')} shards x {self.sisa.get('slices')} slices, "
                        f"{self.sisa.get('epochs_per_slice')} epochs per slice "
                        "(unlearning retrains only the shards that held an erased person)"
                    ),
                )
            )
            if self.private and self.sisa.get("composition"):
                rows.append(("composition", str(self.sisa["composition"])))
        rows.append(("created", self.created_at))
        return rows


_FLOAT_FIELDS = tuple(f.name for f in fields(PrivacyCard) if "float" in str(f.type))


@dataclass(frozen=True)
class SavedModel:
    """A model read back from the registry."""

    name: str
    model: nn.Module
    meta: dict[str, Any]
    card: PrivacyCard
    path: Path


class ModelRegistry:
    """The models of a workspace (``<workspace>/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> ModelRegistry:
        return cls(workspace.home / "models")

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInputError(
                "invalid model name",
                expected="letters, digits, '.', '_' or '-' (up to 128, starting with a letter or digit)",
                got=repr(name),
                fix="for example --name mnist-dp-eps3",
            )
        return name

    def exists(self, name: str) -> bool:
        return (self.root / self.check_name(name) / CARD_FILE).is_file()

    def refuse_existing(self, name: str) -> None:
        if self.exists(name):
            raise ConflictError(
                f"a model named '{name}' already exists",
                expected="a new model name",
                got=name,
                fix="pick another --name (models are never overwritten: their cards are audit records)",
            )

    def person_key(self) -> bytes:
        """The workspace's person-token key (the registry's folder sits in the workspace home)."""
        from veil.data import person_key  # noqa: PLC0415 - pandas; only when tokens are made

        return person_key(Workspace(self.root.parent))

    def save(
        self,
        name: str,
        model: nn.Module,
        meta: Mapping[str, Any],
        card: PrivacyCard,
        *,
        members: list[str] | None = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write the model whole or not at all.

        ``members``: the sorted person tokens of its training rows (``members.tokens``);
        ``extra(staging)`` writes further files into the folder before the rename
        (a SISA ensemble's shards, which then replace ``model.pt``).
        """
        self.refuse_existing(name)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            # Each file is fsynced before the folder's rename, and the rename before returning.
            if extra is None:
                import torch  # noqa: PLC0415 - heavy; the registry lists and reads cards without it

                with atomic_path(staging / WEIGHTS_FILE, mode=None) as weights:
                    torch.save(model.state_dict(), weights)
            else:
                extra(staging)
            if members is not None:
                write_text_atomic(
                    staging / MEMBERS_FILE, "".join(f"{t}\n" for t in members), mode=None
                )
            # model.json keeps json.dumps's spelling: a bound stored as Infinity reads back as inf.
            write_text_atomic(staging / META_FILE, json.dumps(dict(meta), indent=2), mode=None)
            write_text_atomic(staging / CARD_FILE, dumps(card.to_dict(), indent=2), mode=None)
            target = self.root / name
            staging.replace(target)  # one rename: the model appears whole or not at all
            fsync_directory(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def card(self, name: str) -> PrivacyCard:
        path = self._path(name) / CARD_FILE
        return PrivacyCard.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def list(self) -> list[PrivacyCard]:
        if not self.root.is_dir():
            return []
        return [
            self.card(p.name)
            for p in sorted(self.root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()
        ]

    def load(self, name: str) -> SavedModel:
        from veil.train._models import build_model  # noqa: PLC0415 - avoids an import cycle

        path = self._path(name)
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        model: nn.Module
        if meta.get("sisa"):
            from veil.train._ensemble import load_ensemble  # noqa: PLC0415 - avoids an import cycle

            model = load_ensemble(path, meta)
        else:
            import torch  # noqa: PLC0415 - heavy; the registry lists and reads cards without it

            model = build_model(meta["spec"])
            model.load_state_dict(torch.load(path / WEIGHTS_FILE, weights_only=True))
        model.eval()
        return SavedModel(name=name, model=model, meta=meta, card=self.card(name), path=path)

    def meta(self, name: str) -> dict[str, Any]:
        """``model.json``: how to rebuild the model (spec, encoder, classes, training, SISA)."""
        meta: dict[str, Any] = json.loads(
            (self._path(name) / META_FILE).read_text(encoding="utf-8")
        )
        return meta

    def members(self, name: str) -> builtins.list[str] | None:
        """The sorted person tokens a model was trained on; ``None`` when not tracked."""
        path = self._path(name) / MEMBERS_FILE
        if not path.is_file():
            return None
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]

    def path(self, name: str) -> Path:
        """The folder of model ``name`` (it must exist)."""
        return self._path(name)

    def _path(self, name: str) -> Path:
        path = self.root / self.check_name(name)
        if not (path / CARD_FILE).is_file():
            known = [c.model for c in self.list()]
            raise NotFoundError(
                f"no model named '{name}'",
                expected="a trained model" + (f": {', '.join(known[:10])}" if known else ""),
                got=repr(name),
                fix="see `veil models list`, or train one with `veil train`",
            )
        return path
