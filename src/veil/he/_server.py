"""The CKKS server: it evaluates a compiled program on ciphertexts, with only a public context.

See :mod:`veil.he._ckks` for the two layouts it evaluates and for its threat
model (an honest-but-curious server; re-randomisation and noise flooding
against a client that deviates from the protocol are opt-in, and live in
:mod:`veil.he._harden`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._ckks import Context, check_layout, pack, unpack
from veil.he._harden import ResponseHardener
from veil.he._layout import LayerShape, layer_shapes, vector_rotations
from veil.he._plan import HEPlan
from veil.he._program import HEProgram
from veil.he._seal import galois_element, load_object, save_object
from veil.he._steps import Affine, Square

__all__ = ["HEServer"]

FloatArray = npt.NDArray[np.float64]


# ----------------------------------------------------------------------------- server


class HEServer:
    """The model owner's side: evaluates a program on ciphertexts, with no secret key.

    Args:
        program: The compiled, calibrated program (the model's weights).
        public_context: The client's :meth:`HEClient.public_context` bytes.
        workers: Processes for the batched layout (default: one per CPU, at
            most 8); the vector layout runs in this process.
        rerandomize: Add a fresh encryption of zero under the client's public
            key to every response ciphertext, so its components are no longer
            a deterministic function of the request and the weights. Needs a
            context with a public key. Off by default.
        flood_sigma: Before re-randomising, add fresh Gaussian noise of this
            standard deviation (in the outputs' units, drawn from
            ``os.urandom``) to the real and the imaginary part of every slot,
            independently (every copy of the vector layout too; the client's
            median over the copies then shrinks it by about their square
            root). It masks the CKKS error, which carries information about
            the weights, when it is much larger than that error
            (:func:`error_bound`); every output then carries that much added
            error. The response declares it, so the client's check of the
            copies allows for it. Implies ``rerandomize``. Off (``None``) by
            default.
            Both assume the client's public key was honestly generated: a
            client that crafts its public key can undo the re-randomisation
            (see ``docs/he.md``).
    """

    def __init__(
        self,
        program: HEProgram,
        public_context: bytes,
        *,
        workers: int | None = None,
        rerandomize: bool = False,
        flood_sigma: float | None = None,
    ) -> None:
        if flood_sigma is not None and not (math.isfinite(flood_sigma) and flood_sigma > 0):
            raise InvalidInputError(
                "flood_sigma must be a positive finite number",
                expected="a standard deviation in the outputs' units, such as 1e-3, or None",
                got=repr(flood_sigma),
                fix="pass a value much larger than error_bound(program, plan) (--flood-sigma)",
            )
        meta, sections = unpack(public_context, "context")
        self.plan = HEPlan.from_dict(meta["plan"])
        self.key_id = str(meta["key_id"])
        self.program = program
        if (self.plan.input_dim, self.plan.output_dim, self.plan.depth) != (
            program.input_dim,
            program.output_dim,
            program.depth,
        ):
            raise InvalidInputError(
                "the public context was planned for another model",
                expected=f"{program.input_dim} inputs, {program.output_dim} outputs, depth "
                f"{program.depth}",
                got=f"{self.plan.input_dim} inputs, {self.plan.output_dim} outputs, depth "
                f"{self.plan.depth}",
                fix="publish this model's plan (`veil he compile --plan-out`) and make keys for it",
            )
        self._ctx = Context(self.plan)
        has_public = meta.get("public_key") is True and len(sections) > 1
        keys = sections[:-1] if has_public else sections
        self._relin = load_object("RelinKeys", self._ctx.context, keys[0])
        self._galois = (
            load_object("GaloisKeys", self._ctx.context, keys[1]) if len(keys) > 1 else None
        )
        self.flood_sigma = flood_sigma
        self.rerandomize = rerandomize or flood_sigma is not None
        self._hardener: ResponseHardener | None = None
        if self.rerandomize:
            self._hardener = ResponseHardener(
                self._ctx, self.plan, sections[-1] if has_public else None, flood_sigma
            )
        if "vector" in self.plan.layouts:
            self._check_rotation_keys()
        self.context_bytes = len(public_context)
        self.workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
        self._vector_plain: list[Any] | None = None
        self.timings: dict[str, float] = {}

    def _check_rotation_keys(self) -> None:
        """Every rotation the vector layout needs must have its key: checked, not trusted."""
        steps, needed = vector_rotations(self.program.steps, self.program.input_dim)
        if needed > self._ctx.slots:
            raise InvalidInputError(
                "the public context's ring is too small for the vector layout",
                expected=f"at least {needed} slots",
                got=f"{self._ctx.slots} slots",
                fix="make keys for this model's plan (`veil he compile --plan-out`)",
            )
        degree = self.plan.poly_modulus_degree
        missing = [
            step
            for step in steps
            if self._galois is None or not self._galois.has_key(galois_element(step, degree))
        ]
        if missing:
            raise InvalidInputError(
                "the public context lacks rotation keys the vector layout needs",
                expected=f"Galois keys for the rotations {list(steps)}",
                got=f"none for {missing}",
                fix="make keys for this model's plan (`veil he keygen --plan`), or send "
                "batched requests with keys made for the batch layout only",
            )

    # -- the vector layout --------------------------------------------------

    def _prepare_vector(self) -> list[Any]:
        """Encode every diagonal and bias once, at the level and scale it will meet."""
        if self._vector_plain is not None:
            return self._vector_plain
        if self._galois is None:
            raise InvalidInputError(
                "the public context has no rotation keys",
                expected="keys made for the vector layout",
                got="a batch-only context",
                fix="send a batched request, or make keys with the vector layout",
            )
        ctx = self._ctx
        prepared: list[Any] = []
        for level, (step, shape) in enumerate(
            zip(
                self.program.steps,
                layer_shapes(self.program.steps, self.program.input_dim),
                strict=True,
            )
        ):
            if shape is None:
                prepared.append(None)
                continue
            assert isinstance(step, Affine)  # noqa: S101 - shapes mirror steps
            rows, period = shape.rows, shape.period
            weight = np.zeros((rows, period))
            weight[: step.weight.shape[0], : step.weight.shape[1]] = step.weight
            j = np.arange(period)
            drop = ctx.dropped_prime(level)
            groups = []
            for g in range(shape.giant):
                row: list[Any] = []
                for b in range(shape.baby):
                    k = g * shape.baby + b
                    diagonal = weight[j % rows, (j + k) % period]
                    if not np.any(diagonal):
                        row.append(None)
                        continue
                    full = np.tile(diagonal, ctx.slots // period)
                    # pre-rotate by -gB so that one giant rotation serves the whole group
                    full = np.roll(full, g * shape.baby)
                    row.append(ctx.encode(full, level, drop))
                groups.append(row)
            bias = np.zeros(rows)
            bias[: step.bias.shape[0]] = step.bias
            prepared.append((shape, groups, np.tile(bias, ctx.slots // rows)))
        self._vector_plain = prepared
        return prepared

    def _rotate(self, ciphertext: Any, step: int) -> Any:
        out = self._ctx.ciphertext()
        try:
            self._ctx.evaluator.rotate_vector(ciphertext, step, self._galois, out)
        except (ValueError, RuntimeError) as exc:  # checked up front; SEAL's word as a backstop
            raise InvalidInputError(
                "the public context lacks a rotation key",
                expected=f"a Galois key for a rotation by {step}",
                got=str(exc),
                fix="make keys for this model's plan (`veil he keygen --plan`)",
            ) from exc
        return out

    def _vector_affine(
        self,
        ciphertext: Any,
        shape: LayerShape,
        groups: list[list[Any]],
        bias: FloatArray,
        level: int,
    ) -> Any:
        evaluator = self._ctx.evaluator
        rotated = [ciphertext]
        for _ in range(1, shape.baby):
            rotated.append(self._rotate(rotated[-1], 1))
        result = None
        for row in reversed(groups):  # Horner over the giant steps
            if result is not None:
                result = self._rotate(result, shape.baby)
            total = self._dot_plain(rotated, row)
            if total is not None:
                evaluator.rescale_to_next_inplace(total)
                result = self._accumulate(result, total)
        if result is None:
            raise InvalidInputError("an affine step has only zero weights", got="W = 0")
        for fold in shape.folds:
            evaluator.add_inplace(result, self._rotate(result, fold))
        evaluator.add_plain_inplace(result, self._ctx.encode(bias, level + 1, result.scale))
        return result

    def _accumulate(self, total: Any, term: Any) -> Any:
        if total is None:
            return term
        self._ctx.evaluator.add_inplace(total, term)
        return total

    def _dot_plain(self, ciphertexts: Sequence[Any], plains: Sequence[Any]) -> Any:
        """``sum_i c_i * p_i`` over the non-zero plaintexts (None when all are zero)."""
        total = None
        for ciphertext, plain in zip(ciphertexts, plains, strict=False):
            if plain is None:
                continue
            product = self._ctx.ciphertext()
            self._ctx.evaluator.multiply_plain(ciphertext, plain, product)
            total = self._accumulate(total, product)
        return total

    def _square(self, ciphertext: Any) -> Any:
        evaluator = self._ctx.evaluator
        out = self._ctx.ciphertext()
        evaluator.square(ciphertext, out)
        evaluator.relinearize_inplace(out, self._relin)
        evaluator.rescale_to_next_inplace(out)
        return out

    def _infer_vector(self, sections: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        prepared = self._prepare_vector()
        ciphertext = load_object("Ciphertext", self._ctx.context, sections[0])
        self._check_fresh(ciphertext)
        period = 0
        for level, item in enumerate(prepared):
            if item is None:
                ciphertext = self._square(ciphertext)
            else:
                shape, groups, bias = item
                ciphertext = self._vector_affine(ciphertext, shape, groups, bias, level)
                period = shape.rows
        return [save_object(ciphertext)], {"period": period}

    def _check_fresh(self, ciphertext: Any) -> None:
        if ciphertext.parms_id() != self._ctx.levels[0] or ciphertext.size() != 2:  # noqa: PLR2004
            raise InvalidInputError(
                "the request's ciphertext is not a fresh encryption",
                expected="ciphertexts at the top level of the plan",
                got=f"a ciphertext of size {ciphertext.size()} at another level",
            )
        if not math.isclose(ciphertext.scale, self.plan.scale, rel_tol=1e-9):
            raise InvalidInputError(
                "the request's scale does not match the plan",
                expected=f"scale 2^{self.plan.scale_bits}",
                got=f"scale {ciphertext.scale:.6g}",
            )

    # -- the batch layout ---------------------------------------------------

    def _splittable(self) -> bool:
        """One hidden layer (affine, square, affine): its units can be shared out."""
        return [type(step) for step in self.program.steps] == [Affine, Square, Affine]

    def _infer_group(self, sections: list[bytes], part: tuple[int, int] = (0, 1)) -> list[bytes]:
        """One group of inputs; with ``part = (p, P)`` only the p-th of P slices of the hidden
        units (one-hidden-layer programs), giving partial outputs the caller adds up.
        """
        ctx = self._ctx
        values = [load_object("Ciphertext", ctx.context, section) for section in sections]
        for ciphertext in values:
            self._check_fresh(ciphertext)
        index, parts = part
        for level, step in enumerate(self.program.steps):
            if not isinstance(step, Affine):
                if any(ciphertext is None for ciphertext in values):
                    raise InvalidInputError(
                        "a hidden unit has only zero weights",
                        expected="a program from compile_model (which folds dead units away)",
                        got="a zero weight row",
                    )
                values = [self._square(ciphertext) for ciphertext in values]
                continue
            weight, bias = step.weight, step.bias
            if parts > 1 and level == 0:  # this slice of the hidden units
                rows = np.array_split(np.arange(weight.shape[0]), parts)[index]
                weight, bias = weight[rows], bias[rows]
            elif parts > 1:  # partial sums over this slice; the bias is added once
                rows = np.array_split(np.arange(weight.shape[1]), parts)[index]
                weight, bias = weight[:, rows], bias * (index == 0)
            values = self._scalar_affine(values, weight, bias, level, allow_empty=parts > 1)
        return [b"" if ciphertext is None else save_object(ciphertext) for ciphertext in values]

    def _scalar_affine(
        self,
        values: list[Any],
        weight: FloatArray,
        bias: FloatArray,
        level: int,
        *,
        allow_empty: bool,
    ) -> list[Any]:
        ctx = self._ctx
        drop = ctx.dropped_prime(level)
        outputs: list[Any] = []
        for row, offset in zip(weight, bias, strict=True):
            plains = [None if w == 0.0 else ctx.encode(float(w), level, drop) for w in row]
            total = self._dot_plain(values, plains)
            if total is None:
                if allow_empty:
                    outputs.append(None)
                    continue
                raise InvalidInputError("an output has only zero weights", got="a zero row")
            ctx.evaluator.rescale_to_next_inplace(total)
            if offset != 0.0:
                ctx.evaluator.add_plain_inplace(
                    total, ctx.encode(float(offset), level + 1, total.scale)
                )
            outputs.append(total)
        return outputs

    def _combine(self, partials: list[list[bytes]]) -> list[bytes]:
        """Add the partial outputs of the slices of one group."""
        combined = []
        for pieces in zip(*partials, strict=True):
            total = None
            for piece in pieces:
                if piece:
                    total = self._accumulate(
                        total, load_object("Ciphertext", self._ctx.context, piece)
                    )
            if total is None:
                raise InvalidInputError("an output has only zero weights", got="a zero row")
            combined.append(save_object(total))
        return combined

    def _run_groups(
        self, chunks: list[list[bytes]], progress: Callable[[int, int], None] | None
    ) -> list[bytes]:
        """Every group, in worker processes; one-hidden-layer programs are also split by
        hidden units when the groups alone would leave a worker idle."""
        workers = self.workers
        parts = workers if self._splittable() and len(chunks) % workers and workers > 1 else 1
        tasks = [(group, (p, parts)) for group in range(len(chunks)) for p in range(parts)]
        results: list[list[bytes]] = []
        if workers == 1 or len(tasks) == 1:
            for done, (group, part) in enumerate(tasks, start=1):
                results.append(self._infer_group(chunks[group], part))
                if progress is not None:
                    progress(done, len(tasks))
        else:
            # the forked workers inherit the server and the request: tasks are only indices
            _WORKER["server"] = self
            _WORKER["chunks"] = chunks
            forked = multiprocessing.get_context("fork")
            try:
                with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=forked) as pool:
                    for done, result in enumerate(pool.map(_worker_group, tasks), start=1):
                        results.append(result)
                        if progress is not None:
                            progress(done, len(tasks))
            finally:
                _WORKER.clear()
        out_sections: list[bytes] = []
        for group in range(len(chunks)):
            pieces = results[group * parts : (group + 1) * parts]
            out_sections.extend(pieces[0] if parts == 1 else self._combine(pieces))
        return out_sections

    def infer(self, request: bytes, *, progress: Callable[[int, int], None] | None = None) -> bytes:
        """Evaluate the program on an encrypted request; the response stays encrypted."""
        meta, sections = unpack(request, "request")
        if meta.get("key_id") != self.key_id:
            raise InvalidInputError(
                "the request was encrypted for other keys",
                expected=f"key id {self.key_id[:12]}... (this server's public context)",
                got=f"key id {str(meta.get('key_id'))[:12]}...",
                fix="send the public context that belongs to the client's secret key",
            )
        layout = str(meta.get("layout"))
        check_layout(layout, self.plan)
        count = int(meta.get("count", 0))
        if count < 1:
            raise InvalidInputError(
                "the request holds no inputs", expected="a count of at least 1", got=str(count)
            )
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if layout == "vector":
            if len(sections) != 1:
                raise InvalidInputError(
                    "a vector request holds one ciphertext", got=f"{len(sections)}"
                )
            out_sections, extra = self._infer_vector(sections)
        else:
            width = self.plan.input_dim
            groups = math.ceil(count / self._ctx.slots)
            if len(sections) != groups * width:
                raise InvalidInputError(
                    "the batched request has the wrong number of ciphertexts",
                    expected=f"{groups * width} ({groups} groups of {width} features)",
                    got=str(len(sections)),
                )
            chunks = [sections[g * width : (g + 1) * width] for g in range(groups)]
            out_sections = self._run_groups(chunks, progress)
        if self._hardener is not None:
            out_sections = self._hardener.harden_all(out_sections)
            if self.flood_sigma is not None:
                extra["flood_sigma"] = self.flood_sigma
        self.timings["infer_s"] = time.perf_counter() - started
        header = {"key_id": self.key_id, "layout": layout, "count": count, **extra}
        return pack("response", header, out_sections)


_WORKER: dict[str, Any] = {}


def _worker_group(task: tuple[int, tuple[int, int]]) -> list[bytes]:
    group, part = task
    server: HEServer = _WORKER["server"]
    return server._infer_group(_WORKER["chunks"][group], part)  # noqa: SLF001 - the forked copy
