"""Per-example gradient clipping in one backward pass ("book-keeping").

Why written here rather than taken from Opacus: Opacus 1.6 either
materialises every per-example gradient (its hooks: 20 s/epoch for a
784-128-10 MLP on MNIST here, 65x the non-private step) or runs two backward
passes (ghost clipping: 2.4x). DP-SGD only needs each example's gradient
*norm* and the *sum of clipped* gradients, and both follow from what one
backward pass already computes: each trainable layer's input ``a`` and the
gradient ``g`` of the loss with respect to its output (Bu et al. 2023,
"Differentially private optimization on large model at small cost").

* Norms. A linear layer's per-example weight gradient is ``g_i^T a_i``. For a
  single position its norm is ``|g_i| |a_i|``; over ``T`` positions (sequences,
  convolution patches from ``unfold``) it is either computed from the
  ``T x T`` Gram matrices, ``<a_i a_i^T, g_i g_i^T>`` (ghost norm, Li et al.
  2022), or from the materialised ``p x d`` gradient, whichever costs less
  (Bu et al.'s mixed ghost clipping). Other layers with parameters
  (GroupNorm, LayerNorm, Embedding, ...) use Opacus's per-sample gradient
  functions, which are cheap for them.
* Clipped sum. With ``c_i = min(1, C / |grad_i|)`` the clipped sum of a
  linear layer is ``(c * g)^T a``: the same matrix product the non-private
  backward does, so clipping costs about one backward pass.

The gradients ``g`` come from ``torch.autograd.grad`` with respect to the
layers' outputs only, so the backward pass never forms the (unclipped)
parameter gradients it would throw away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn
from torch.nn.grad import conv2d_weight

from veil.errors import InvalidInputError

__all__ = ["PerSampleClipper", "naive_per_sample_gradients", "validate_model"]

_EPS = 1e-6  # added to the norm before dividing, as Opacus does
# Most per-example convolution-gradient values held at once (256 MB of float32); above it the
# ghost norm over unfolded patches is used instead.
_MATERIALISE_LIMIT = 1 << 26


@dataclass
class _Record:
    inputs: torch.Tensor
    output: torch.Tensor
    version: int


def _opacus_samplers() -> dict[type[nn.Module], Callable[..., dict[nn.Parameter, torch.Tensor]]]:
    from opacus.grad_sample import GradSampleModule  # noqa: PLC0415 - heavy import

    return dict(GradSampleModule.GRAD_SAMPLERS)


def validate_model(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train, naming each layer and its replacement."""
    from opacus.validators import ModuleValidator  # noqa: PLC0415 - heavy import

    problems = []
    for error in ModuleValidator.validate(model, strict=False):
        text = str(error).split(". ")[0]
        problems.append(text)
    batchnorm = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)  # noqa: SLF001 - the base of all BatchNorms
    ]
    if problems or batchnorm:
        raise InvalidInputError(
            "this model has layers that DP-SGD cannot train",
            expected="layers whose output for one example does not depend on other examples",
            got="; ".join(problems)
            + (f" (BatchNorm layers: {', '.join(batchnorm)})" if batchnorm else ""),
            fix="replace BatchNorm with GroupNorm (opacus.validators.ModuleValidator.fix(model) "
            "does it), and in-batch statistics with per-example ones",
        )


class PerSampleClipper:
    """Clipped per-example gradient sums of ``model``, one backward pass per batch.

    Args:
        model: The model; every trainable parameter must belong to a
            ``Linear``, ``Conv2d`` or a layer Opacus has a per-sample
            gradient for.
        max_grad_norm: The clipping bound ``C`` on each example's gradient
            (all parameters together).

    Use :meth:`accumulate` on each physical batch, then :meth:`take` to read
    the sum of clipped gradients accumulated so far (and reset it).
    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        validate_model(model)
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        samplers = _opacus_samplers()
        self._layers: list[tuple[str, nn.Module, str]] = []
        covered: set[int] = set()
        for name, module in model.named_modules():
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not params:
                continue
            if type(module) is nn.Linear:
                kind = "linear"
            elif type(module) is nn.Conv2d and _fast_conv(module):
                kind = "conv2d"
            elif type(module) in samplers:
                kind = "opacus"
            else:
                raise InvalidInputError(
                    f"layer '{name}' ({type(module).__name__}) has trainable parameters Veil "
                    "cannot clip per example",
                    expected="Linear, Conv1d/2d/3d, Embedding, LayerNorm, GroupNorm, "
                    "InstanceNorm, RMSNorm",
                    got=type(module).__name__,
                    fix="build the model from these layers, or freeze this one "
                    "(requires_grad=False)",
                )
            shared = [p for p in params if id(p) in covered]
            if shared:
                # Each layer's share of a tied parameter would be clipped apart and summed:
                # one example could then move it by up to sqrt(k) C.
                raise InvalidInputError(
                    f"layer '{name}' shares a parameter with another layer (tied weights)",
                    expected="every trainable parameter owned by one layer",
                    got=f"a parameter of '{name}' also belongs to an earlier layer",
                    fix="untie the weights (or freeze the shared parameter)",
                )
            self._layers.append((name, module, kind))
            covered.update(id(p) for p in params)
        missing = [
            n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered
        ]
        if missing:
            raise InvalidInputError(
                "some trainable parameters belong to no layer Veil can clip",
                expected="parameters owned by supported layers",
                got=", ".join(missing[:5]),
                fix="wrap free parameters in a supported layer, or freeze them",
            )
        self._samplers = samplers
        self._records: dict[nn.Module, _Record] = {}
        self._active = False
        self._names = {id(m): n for n, m, _ in self._layers}
        self._hooks = [m.register_forward_hook(self._capture) for _, m, _ in self._layers]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._sums: list[torch.Tensor | None] = [None] * len(self.params)
        self._index = {id(p): i for i, p in enumerate(self.params)}

    def close(self) -> None:
        """Remove the hooks from the model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _capture(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not self._active or not torch.is_grad_enabled():
            return
        if module in self._records:
            raise InvalidInputError(
                f"layer '{self._names[id(module)]}' ran twice in one forward pass",
                expected="each trainable layer used once per example",
                got="a shared (tied) layer",
                fix="untie the weights, or train without per-example clipping",
            )
        self._records[module] = _Record(inputs[0].detach(), output, output._version)  # noqa: SLF001 - PyTorch's in-place counter has no public name

    # ------------------------------------------------------------------ public
    def accumulate(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add the clipped gradients of one physical batch to the running sums.

        Args:
            inputs: A batch of examples (batch dimension first).
            targets: Their targets.
            loss_fn: Per-example loss (``reduction="none"``).

        Returns:
            The per-example losses, the model outputs (detached) and the
            per-example gradient norms before clipping.
        """
        self._records.clear()
        self._active = True
        try:
            output = self.model(inputs)
            losses = loss_fn(output, targets)
            if losses.shape != (inputs.shape[0],):
                raise InvalidInputError(
                    "the loss must give one value per example",
                    expected=f"shape ({inputs.shape[0]},) (reduction='none')",
                    got=f"shape {tuple(losses.shape)}",
                )
            records = [
                (name, module, kind, self._records.get(module))
                for name, module, kind in self._layers
            ]
            used = [
                (n, m, k, r) for n, m, k, r in records if r is not None and r.output.requires_grad
            ]
            for name, _, _, rec in used:
                if rec.output._version != rec.version:  # noqa: SLF001 - as above
                    raise InvalidInputError(
                        f"the output of layer '{name}' is modified in place",
                        expected="layers whose outputs are not overwritten",
                        got="an in-place operation after the layer (such as ReLU(inplace=True))",
                        fix="use inplace=False",
                    )
            grads = torch.autograd.grad(
                losses.sum(), [r.output for *_, r in used], allow_unused=True
            )
        finally:
            self._active = False
            self._records.clear()
        batch = inputs.shape[0]
        squared = torch.zeros(batch, dtype=torch.float32, device=inputs.device)
        prepared = []
        for (name, module, kind, rec), grad in zip(used, grads, strict=True):
            if grad is None:  # allow_unused: a layer that did not reach the loss
                continue  # type: ignore[unreachable]
            if rec.inputs.shape[0] != batch or grad.shape[0] != batch:
                # Norms are taken per index of dimension 0: anything else would mix examples.
                raise InvalidInputError(
                    f"layer '{name}' does not see the batch on its first dimension",
                    expected=f"inputs and outputs of shape ({batch}, ...) (batch first)",
                    got=f"input {tuple(rec.inputs.shape)}, output {tuple(grad.shape)}",
                    fix="keep the batch dimension first in every layer (batch_first=True)",
                )
            item = _prepare(kind, module, rec.inputs, grad, self._samplers)
            squared += item.squared_norms()
            prepared.append(item)
        norms = squared.sqrt()
        scale = (self.max_grad_norm / (norms + _EPS)).clamp(max=1.0)
        for item in prepared:
            for param, clipped in item.clipped_sums(scale):
                i = self._index[id(param)]
                current = self._sums[i]
                self._sums[i] = clipped if current is None else current.add_(clipped)
        return losses.detach(), output.detach(), norms

    def verify(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        """Check the one-pass norms against one backward pass per example, on a few examples.

        Shapes cannot tell every layer that mixes examples, or that holds the batch
        on another dimension of the same size, from one that does not; this check
        can. It runs in eval mode (no dropout), releases nothing, and leaves the
        running sums untouched.
        """
        was_training = self.model.training
        self.model.eval()
        saved = self._sums
        self._sums = [None] * len(self.params)
        try:
            _, _, norms = self.accumulate(inputs, targets, loss_fn)
            naive = naive_per_sample_gradients(self.model, inputs, targets, loss_fn)
        finally:
            self._sums = saved
            self.model.train(was_training)
        expected = torch.stack([global_norm_tensor(grads) for grads in naive]).to(norms)
        if not torch.allclose(norms, expected, rtol=1e-3, atol=1e-6):
            raise InvalidInputError(
                "this model's per-example gradients do not match one backward pass per example",
                expected="layers that treat every example on its own, with the batch first",
                got="a layer that mixes examples or holds the batch on another dimension",
                fix="keep the batch dimension first in every layer and compute each example's "
                "output from that example alone",
            )

    def take(self) -> list[torch.Tensor]:
        """The accumulated sums of clipped gradients (one per trainable parameter); resets them."""
        sums = [
            torch.zeros_like(p) if s is None else s
            for p, s in zip(self.params, self._sums, strict=True)
        ]
        self._sums = [None] * len(self.params)
        return sums


def _fast_conv(module: nn.Conv2d) -> bool:
    return (
        module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class _Prepared(Protocol):
    """One layer's activations and output gradients, arranged for norms and sums."""

    def squared_norms(self) -> torch.Tensor: ...

    def clipped_sums(self, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


class _LinearLike:
    """``a`` of shape (B, T, d) and ``g`` of shape (B, T, p): a linear map applied at T positions.

    ``a`` and ``g`` may be transposed views (convolution patches): every product
    below is a (batched) matrix product on strides, so nothing is copied.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor, g: torch.Tensor
    ) -> None:
        self.weight, self.bias, self.a, self.g = weight, bias, a, g
        self._per_example: torch.Tensor | None = None

    def squared_norms(self) -> torch.Tensor:
        a, g = self.a, self.g
        _, positions, d = a.shape
        p = g.shape[2]
        if positions == 1:
            weight = a.square().sum((1, 2)) * g.square().sum((1, 2))
        elif positions * (d + p) < d * p:  # ghost norm from the T x T Gram matrices
            weight = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
        else:  # materialise the per-example gradients (kept for the clipped sum)
            self._per_example = torch.bmm(g.transpose(1, 2), a)
            weight = _row_sq(self._per_example.reshape(a.shape[0], -1))
        out = weight.float()
        if self.bias is not None and self.bias.requires_grad:
            out = out + g.sum(1).square().sum(1).float()
        return out

    def clipped_sums(self, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        scale = scale.to(self.g.dtype)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.weight.requires_grad:
            batch, positions, d = self.a.shape
            if self._per_example is not None:
                summed = (scale @ self._per_example.reshape(batch, -1)).view(-1, d)
            elif positions == 1:
                summed = (self.g[:, 0, :] * scale[:, None]).T @ self.a[:, 0, :]
            else:
                summed = torch.bmm((self.g * scale[:, None, None]).transpose(1, 2), self.a).sum(0)
            out.append((self.weight, summed.view_as(self.weight)))
        if self.bias is not None and self.bias.requires_grad:
            out.append((self.bias, scale @ self.g.sum(1)))
        return out


def _row_sq(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row of a (B, n) tensor, without a squared temporary."""
    norms: torch.Tensor = torch.linalg.vector_norm(x, dim=1)
    return norms.float().square()


class _PerExampleConv:
    """A convolution's per-example weight gradients, from one grouped convolution.

    With the batch folded into the channels (``groups = B``), PyTorch's own
    weight-gradient kernel computes every example's gradient at once: 1.7x
    faster here than ``unfold`` followed by a batched product, and no patch
    matrix in memory. Used while the ``B x |W|`` result fits the limit.
    """

    def __init__(self, module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> None:
        batch, c_in = a.shape[:2]
        c_out = g.shape[1]
        self.weight, self.bias = module.weight, module.bias
        self.per_example = conv2d_weight(
            a.reshape(1, batch * c_in, *a.shape[2:]),
            (batch * c_out, c_in, *module.kernel_size),
            g.reshape(1, batch * c_out, *g.shape[2:]),
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=batch,
        ).view(batch, -1)
        self.bias_per_example = g.sum((2, 3)) if module.bias is not None else None

    def squared_norms(self) -> torch.Tensor:
        out = _row_sq(self.per_example)
        if self.bias_per_example is not None and self.bias is not None and self.bias.requires_grad:
            out = out + _row_sq(self.bias_per_example)
        return out

    def clipped_sums(self, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        scale = scale.to(self.per_example.dtype)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.weight.requires_grad:
            out.append((self.weight, (scale @ self.per_example).view_as(self.weight)))
        if self.bias_per_example is not None and self.bias is not None and self.bias.requires_grad:
            out.append((self.bias, scale @ self.bias_per_example))
        return out


class _OpacusLayer:
    def __init__(self, grads: dict[nn.Parameter, torch.Tensor]) -> None:
        self.grads = grads

    def squared_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for grad in self.grads.values():
            part = grad.reshape(grad.shape[0], -1).square().sum(1).float()
            total = part if total is None else total + part
        assert total is not None  # noqa: S101 - a layer with parameters gives at least one
        return total

    def clipped_sums(self, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (param, torch.einsum("b,b...->...", scale.to(grad.dtype), grad))
            for param, grad in self.grads.items()
        ]


def _prepare(
    kind: str,
    module: nn.Module,
    a: torch.Tensor,
    g: torch.Tensor,
    samplers: dict[type[nn.Module], Callable[..., dict[nn.Parameter, torch.Tensor]]],
) -> _Prepared:
    batch = a.shape[0]
    if kind == "linear":
        assert isinstance(module, nn.Linear)  # noqa: S101 - chosen by type above
        return _LinearLike(
            module.weight,
            module.bias,
            a.reshape(batch, -1, a.shape[-1]),
            g.reshape(batch, -1, g.shape[-1]),
        )
    if kind == "conv2d":
        assert isinstance(module, nn.Conv2d)  # noqa: S101 - chosen by type above
        if batch * module.weight.numel() <= _MATERIALISE_LIMIT:
            return _PerExampleConv(module, a, g)
        patches = F.unfold(
            a,
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,  # type: ignore[arg-type]
            stride=module.stride,
        )  # (B, d_in * k * k, T)
        return _LinearLike(
            module.weight,
            module.bias,
            patches.transpose(1, 2),
            g.reshape(batch, g.shape[1], -1).transpose(1, 2),
        )
    grads = samplers[type(module)](module, [a], g)
    return _OpacusLayer({p: gs for p, gs in grads.items() if p.requires_grad})


def naive_per_sample_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> list[list[torch.Tensor]]:
    """Each example's gradient by its own backward pass: the slow oracle the tests compare against."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(inputs.shape[0]):
        loss = loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]).sum()
        out.append([g.detach() for g in torch.autograd.grad(loss, params)])
    return out


def global_norm_tensor(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of a list of tensors taken together, as a 0-d tensor."""
    return torch.sqrt(
        sum((t.double().square().sum() for t in tensors), torch.zeros((), dtype=torch.float64))
    )


def global_norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of a list of tensors taken together."""
    return math.sqrt(sum(float(t.square().sum()) for t in tensors))
