"""Models as the gateway serves them: loaded once, checked inputs, probabilities and shard votes.

:class:`ModelCache` loads a model from the workspace's
:class:`~veil.train.ModelRegistry` the first time it is asked for (one load per
model even when many requests ask at once) and keeps it. Each ``get`` compares
a stamp of the model's folder (its inode and modification time, and those of
a SISA ensemble's ``shards/`` folder, where unlearning swaps retrained shards
and rewrites ``state.json``): a model retrained after an erasure is served
from the next request on, and a removed model is a 404, never a stale answer.

:class:`ServedModel` turns requests into the model's inputs:

* ``records`` (``[{column: value}]``) for tabular models, encoded exactly as
  training encoded rows (:class:`~veil.train.FeatureEncoder`: declared bounds
  and categories only). Every encoded column must be present and no other
  (an identifier or the label sent along is refused, not silently dropped);
  a numeric value must be a number, clamped to its declared bounds as in
  training (JSON's NaN is a missing value and an infinity is clamped, as the
  encoder reads them); a category must be one of the declared categories
  (training encoded an undeclared one as all zeros; here a typo is an error);
  ``null`` is a missing value, encoded as training encoded one (the midpoint,
  or no category). Errors name the record and the column, never the value.
* ``inputs`` (``[[float]]``): vectors already in the model's input space
  (width ``model.width``, each feature in [-1, 1] as the encoder makes them),
  clamped to [-1, 1] as the encoder clamps: an attacker gains nothing from
  points the model never saw the like of.

``proba`` runs the network under :func:`torch.inference_mode`;
``shard_votes`` gives a SISA ensemble's per-shard labels for private answers.
``reference(n)`` is a sample of encoded training rows for the monitor, read
through the operator's catalogue as a mechanism's data use (recorded on the
trail with the purpose ``serve: monitor reference``) and kept.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from veil._random import SecureRandom
from veil.access import Access
from veil.data import Catalog, DataUse
from veil.errors import ConflictError, InvalidInputError, VeilError
from veil.serve._policy import ServePolicy
from veil.train import ModelRegistry, PrivacyCard
from veil.workspace import Workspace

# PyTorch and the training package load with the first model, not with the worker: a worker
# that answers queries and encrypted requests only never imports them.
if TYPE_CHECKING:
    import torch

    from veil.train import FeatureEncoder

__all__ = ["REFERENCE_PURPOSE", "ModelCache", "ServedModel"]

REFERENCE_PURPOSE = "serve: monitor reference"
_SHARDS = "shards"  # a SISA ensemble's shard folder (the registry's documented layout)
_SHOWN = 10  # names quoted in one message
_FLOAT_MAX = sys.float_info.max  # a Python float: compared with a big int exactly
_NUMBER = (int, float, type(None))  # exact types: JSON's numbers and null (a bool is not a number)

Float32 = npt.NDArray[np.float32]


def _names(names: Sequence[str]) -> str:
    shown = [repr(str(n)[:64]) for n in names[:_SHOWN]]
    more = len(names) - _SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


@dataclass
class ServedModel:
    """One loaded model: its card, classes, input encoding and network."""

    name: str
    card: PrivacyCard
    meta: Mapping[str, Any]
    net: torch.nn.Module
    catalog: Catalog | None = None
    monitor_fitted: bool | None = None  # the monitor has this model's reference (None: not tried)
    _reference: Float32 | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        from veil.train import FeatureEncoder  # noqa: PLC0415 - with the first model (torch)

        self.classes: tuple[str, ...] = tuple(str(c) for c in self.meta["classes"])
        raw = self.meta.get("encoder")
        self.encoder: FeatureEncoder | None = FeatureEncoder.from_dict(raw) if raw else None
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in self.meta["spec"]["input_shape"])
        self.width = math.prod(self.input_shape)
        self.sisa = bool(self.meta.get("sisa"))
        enc = self.encoder
        if enc is not None:
            self._columns = set(enc.order)
            self._lookups = {
                c: {v: i for i, v in enumerate(cs)} for c, cs in enc.categorical.items()
            }
            # Where each column lands in the encoded row (numeric: one slot; categorical: one-hot).
            positions: dict[str, int] = {}
            at = 0
            for column in enc.order:
                positions[column] = at
                at += 1 if column in enc.numeric else len(enc.categorical[column])
            self._numeric = [c for c in enc.order if c in enc.numeric]
            self._positions = np.array([positions[c] for c in self._numeric], dtype=np.int64)
            self._lo = np.array([enc.numeric[c][0] for c in self._numeric], dtype=np.float64)
            self._hi = np.array([enc.numeric[c][1] for c in self._numeric], dtype=np.float64)
            self._offsets = {c: positions[c] for c in enc.order if c in enc.categorical}

    @property
    def dataset(self) -> str:
        """The dataset the model was trained on (its scope for keys limited to one dataset)."""
        return self.card.dataset

    def describe(self) -> dict[str, Any]:
        """What a client needs to call the model: classes and the inputs it accepts."""
        inputs: dict[str, Any] = {"width": self.width, "shape": list(self.input_shape)}
        if self.encoder is not None:
            enc = self.encoder
            inputs["columns"] = [
                {"name": c, "kind": "numeric", "bounds": list(enc.numeric[c])}
                if c in enc.numeric
                else {"name": c, "kind": "categorical", "categories": list(enc.categorical[c])}
                for c in enc.order
            ]
        return {"classes": list(self.classes), "inputs": inputs, "sisa": self.sisa}

    # ------------------------------------------------------------ inputs
    def encode(self, records: Sequence[Mapping[str, Any]]) -> Float32:
        """``records`` as model inputs, encoded as training encoded rows (see the module)."""
        enc = self.encoder
        if enc is None:
            raise InvalidInputError(
                f"model '{self.name}' takes no records",
                expected=f'"inputs": vectors of {self.width} values in [-1, 1]',
                got='"records"',
                fix=f"send the {'x'.join(map(str, self.input_shape))} inputs scaled to [-1, 1] as inputs",
            )
        out = np.zeros((len(records), enc.width), dtype=np.float32)
        for row, record in enumerate(records):
            if record.keys() != self._columns:
                self._refuse_columns(row, record)
        if self._numeric:
            self._encode_numeric(records, out)
        for column, offset in self._offsets.items():
            for row, record in enumerate(records):
                slot = self._category(row, column, record[column])
                if slot >= 0:
                    out[row, offset + slot] = 1.0
        return out

    def _encode_numeric(self, records: Sequence[Mapping[str, Any]], out: Float32) -> None:
        cells = [[record[c] for c in self._numeric] for record in records]
        if not all(type(v) in _NUMBER for values in cells for v in values):
            for row, values in enumerate(cells):  # find the first bad cell, to name it
                for column, value in zip(self._numeric, values, strict=True):
                    if type(value) not in _NUMBER:
                        raise self._bad(row, column, "a number or null", type(value).__name__)
        # None and NaN are missing (0, the midpoint); values beyond the bounds, infinities
        # included, are clamped: the encoder's rule for training rows.
        try:
            raw = np.array(cells, dtype=np.float64)
        except OverflowError:  # a JSON integer beyond float64 (1e308): name the first one
            for row, values in enumerate(cells):
                for column, value in zip(self._numeric, values, strict=True):
                    if type(value) is int and abs(value) > _FLOAT_MAX:
                        raise self._bad(
                            row, column, "a number within float range", "a larger integer"
                        ) from None
            raise
        lo, hi = self._lo, self._hi
        scaled = 2.0 * (np.clip(raw, lo, hi) - lo) / (hi - lo) - 1.0
        out[:, self._positions] = np.nan_to_num(scaled, nan=0.0)

    def _refuse_columns(self, row: int, record: Mapping[str, Any]) -> None:
        order = self.encoder.order if self.encoder else ()
        missing = [c for c in order if c not in record]
        extra = [c for c in record if c not in self._columns]
        raise InvalidInputError(
            f"record {row} does not have the model's columns",
            expected=f"exactly the {len(order)} columns of GET /v1/models/{self.name}",
            got=(f"no {_names(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unknown {_names(extra)}" if extra else ""),
            fix="send each encoded column once, and no identifier or label",
            details={"record": row},
        )

    def _category(self, row: int, column: str, value: Any) -> int:
        """The one-hot slot of ``value`` in ``column`` (-1: missing, all zeros)."""
        lookup = self._lookups[column]
        if value is None:
            return -1
        index = lookup.get(value) if isinstance(value, str) else None
        if index is None and type(value) is int:
            index = lookup.get(str(value))
        if index is None:
            enc = self.encoder
            assert enc is not None  # noqa: S101 - encode() checked it
            got = "a value outside them" if isinstance(value, str | int) else type(value).__name__
            raise self._bad(row, column, f"one of {_names(enc.categorical[column])} or null", got)
        return index

    @staticmethod
    def _bad(row: int, column: str, expected: str, got: str) -> InvalidInputError:
        return InvalidInputError(
            f"record {row}, column '{column}' has a value the model cannot take",
            expected=expected,
            got=got,
            fix="see the column's bounds or categories in GET /v1/models/NAME",
            details={"record": row, "column": column},
        )

    def inputs(self, rows: Sequence[Sequence[float]]) -> Float32:
        """Raw input vectors of width :attr:`width`, checked finite and clamped to [-1, 1]."""
        try:
            arr = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # ragged rows, or an int beyond float64
            arr = np.zeros((0, 0))
            ragged = True
        else:
            ragged = False
        if ragged or arr.ndim != 2 or arr.shape[1] != self.width:  # noqa: PLR2004
            raise InvalidInputError(
                f"model '{self.name}' takes vectors of {self.width} values",
                expected=f"inputs: a list of lists of {self.width} numbers",
                got="rows of different lengths or numbers beyond float range"
                if ragged
                else f"an array of shape {arr.shape}",
                fix="send records instead" if self.encoder else "flatten each input",
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(
                "inputs must be finite", expected="numbers in [-1, 1]", got="NaN or infinity"
            )
        return np.clip(arr, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------ outputs
    def _tensor(self, x: Float32) -> torch.Tensor:
        import torch  # noqa: PLC0415 - loaded with the model; a lookup in sys.modules here

        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(
            len(x), *self.input_shape
        )

    def proba(self, x: Float32) -> npt.NDArray[np.float64]:
        """Class probabilities of encoded inputs (a SISA ensemble: the mean of its shards')."""
        import torch  # noqa: PLC0415 - loaded with the model; a lookup in sys.modules here

        with torch.inference_mode():
            out = torch.softmax(self.net(self._tensor(x)), dim=1).double().numpy()
        result: npt.NDArray[np.float64] = out
        return result

    def require_sisa(self) -> None:
        """Nothing for a SISA ensemble; else the refusal of a ``private_label`` answer.

        Raises:
            ConflictError: The model is not a SISA ensemble (it has no shard votes).
        """
        from veil.train import SisaEnsemble  # noqa: PLC0415 - loaded with the model

        if not isinstance(self.net, SisaEnsemble):
            raise ConflictError(
                f"model '{self.name}' is not a SISA ensemble",
                expected="a model trained with `veil train --shards` for private_label answers",
                got=self.card.architecture,
                fix="serve it with output label, top_k or probabilities, or train a SISA ensemble",
            )

    def shard_votes(self, x: Float32) -> npt.NDArray[np.int64]:
        """Each shard's label for each input, shape (shards, records): the private answer's votes."""
        import torch  # noqa: PLC0415 - loaded with the model; a lookup in sys.modules here

        from veil.train import SisaEnsemble  # noqa: PLC0415 - loaded with the model

        self.require_sisa()
        assert isinstance(self.net, SisaEnsemble)  # noqa: S101 - require_sisa checked it
        members = self.net.members
        tensor = self._tensor(x)
        with torch.inference_mode():
            votes = torch.stack([m(tensor).argmax(dim=1) for m in members])
        result: npt.NDArray[np.int64] = votes.numpy().astype(np.int64)
        return result

    def reference(self, n: int = 2000) -> Float32:
        """Up to ``n`` encoded training rows for the monitor (read once, recorded, kept)."""
        with self._lock:
            if self._reference is None or len(self._reference) < n:
                self._reference = self._read_reference(n)
            return self._reference[:n]

    def _read_reference(self, n: int) -> Float32:
        if self.catalog is None:
            raise ConflictError(
                "no catalogue to read the monitor's reference rows through",
                expected="a ModelCache built with the operator's Access",
                got="none",
            )
        from veil.train import dataset_tensors  # noqa: PLC0415 - loaded with the model

        data = dataset_tensors(
            self.catalog,
            self.dataset,
            label=self.meta.get("label"),
            encoder=self.encoder,
            use=DataUse.MECHANISM,
            purpose=REFERENCE_PURPOSE,
        )
        rows = data.inputs.reshape(len(data.inputs), -1).numpy()
        pick = SecureRandom().permutation(len(rows))[:n]
        sample: Float32 = rows[np.sort(pick)].astype(np.float32)
        return sample


class ModelCache:
    """The workspace's models, each loaded once and reloaded when its folder changes.

    Args:
        workspace: Where the models live (``<home>/models``).
        operator: The service's own :class:`~veil.access.Access`, through whose
            catalogue the monitor's reference rows are read (``None``: no reference).
        torch_threads: PyTorch's intra-op threads for this process (``None``: leave
            them). The service already runs requests in parallel (FastAPI's thread
            pool, uvicorn's workers); torch's own threads on top contend for the same
            cores: ``proba`` of 100 digits rows took 7.8-30 ms with torch's default of
            two threads and 0.3 ms with one, on this 2-core machine under load.
    """

    def __init__(
        self, workspace: Workspace, operator: Access | None = None, *, torch_threads: int | None = 1
    ) -> None:
        self._torch_threads = torch_threads
        self._torch_ready = False
        self.registry = ModelRegistry.for_workspace(workspace)
        self._catalog = (
            None
            if operator is None
            else Catalog(operator.store, workspace.settings, access=operator, workspace=workspace)
        )
        self._models: dict[str, tuple[tuple[int, ...], ServedModel]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _stamp(self, name: str) -> tuple[int, ...]:
        path = self.registry.path(name)  # NotFoundError for an unknown or removed model
        stamp: list[int] = []
        for folder in (path, path / _SHARDS):
            try:
                info = folder.stat()
            except FileNotFoundError:
                continue
            stamp += [info.st_ino, info.st_mtime_ns]
        return tuple(stamp)

    def _known(self, name: str, stamp: tuple[int, ...]) -> ServedModel | None:
        known = self._models.get(name)
        return known[1] if known is not None and known[0] == stamp else None

    def loaded(self, name: str) -> ServedModel | None:
        """The model ``name`` if it is loaded and unchanged on disk, else ``None`` (no load)."""
        try:
            return self._known(name, self._stamp(name))
        except VeilError:
            return None

    def get(self, name: str) -> ServedModel:
        """The model ``name``, loaded on first use and whenever it changed on disk.

        Raises:
            NotFoundError: No model of that name (or an invalid name).
        """
        stamp = self._stamp(name)
        known = self._known(name, stamp)
        if known is not None:
            return known
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            known = self._known(name, stamp)
            if known is not None:
                return known
            self._load_torch()
            saved = self.registry.load(name)
            model = ServedModel(
                name=name, card=saved.card, meta=saved.meta, net=saved.model, catalog=self._catalog
            )
            self._models[name] = (stamp, model)
            return model

    def _load_torch(self) -> None:
        if self._torch_ready:
            return
        import torch  # noqa: PLC0415 - only a process that serves models needs PyTorch

        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)  # process-wide: one serving process
        self._torch_ready = True

    def prepare(self) -> None:
        """Import PyTorch at start-up when the workspace holds a model (2-4 s of a worker's start).

        The first prediction then does not wait for it; a gateway over a workspace
        without models (queries, encrypted requests) never loads PyTorch. A model
        trained after start-up brings it with its first load.
        """
        if self.registry.list():
            self._load_torch()

    def cards(self) -> list[PrivacyCard]:
        """Every model's privacy card (read from disk: the list is always current)."""
        return self.registry.list()

    def check_private(self, policy: ServePolicy) -> None:
        """Refuse to start when ``policy`` asks ``private_label`` answers of a model that is not SISA.

        Every model in the workspace is checked against every layer (a
        ``defaults`` of ``private_label`` covers them all); a model trained later
        is refused per request instead (409).

        Raises:
            ConflictError: Naming the first such model.
        """
        for card in self.registry.list():
            if policy.serves_private(card.model) and not self.registry.meta(card.model).get("sisa"):
                raise ConflictError(
                    f"the serving policy asks private_label answers of '{card.model}', which "
                    "is not a SISA ensemble",
                    expected="private_label only for models trained with --shards",
                    got=card.architecture,
                    fix=f"serve '{card.model}' with output label, top_k or probabilities "
                    f"(models: {{{card.model}: {{output: label}}}} in {policy.source})",
                )
