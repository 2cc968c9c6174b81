"""Oracle tests of one-backward per-example clipping: norms and clipped sums against a naive loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from veil.errors import InvalidInputError
from veil.train import PerSampleClipper
from veil.train._clip import naive_per_sample_gradients

TOL = 1e-4  # float32 round-off on sums of a few hundred terms (relative)


def _loss(output, target):
    return F.cross_entropy(output, target, reduction="none")


class _Tokens(nn.Module):
    """Embedding -> LayerNorm -> Linear over a sequence: the 3-D (T > 1) linear path."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.mix(self.norm(self.embed(x)))).mean(1))


def _models():
    conv = nn.Sequential(
        # With conv_path="unfold": T=49 > d*p/(d+p), materialised from patches; otherwise
        # every convolution goes through the grouped weight-gradient kernel.
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.GroupNorm(2, 4),  # Opacus's per-sample gradient function
        nn.Conv2d(4, 32, 3, stride=2, bias=False),  # T=9 small against d=36, p=32: ghost norm
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(32 * 3 * 3, 12),
        nn.Tanh(),
        nn.Linear(12, 3),
    )
    return {
        "mlp": (nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3)), (10,), False),
        "conv": (conv, (1, 14, 14), False),
        "tokens-ghost": (_Tokens(64), (4,), True),  # T=4, d=p=64: ghost norm
        "tokens-materialised": (_Tokens(4), (30,), True),  # T=30, d=p=4: materialised
    }


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("max_grad_norm", [1e-3, 1.0, 1e6])
@pytest.mark.parametrize("conv_path", ["grouped", "unfold"])
def test_norms_and_clipped_sums_match_a_naive_loop(
    name, max_grad_norm, conv_path, seed, monkeypatch
):
    if conv_path == "unfold":  # force the ghost / unfold path for every convolution
        monkeypatch.setattr("veil.train._clip._MATERIALISE_LIMIT", 0)
    torch.manual_seed(seed)
    model, shape, tokens = _models()[name]
    batch = 9
    x = torch.randint(0, 20, (batch, *shape)) if tokens else torch.randn(batch, *shape)
    y = torch.randint(0, 3, (batch,))
    clipper = PerSampleClipper(model, max_grad_norm)
    _, _, norms = clipper.accumulate(x, y, _loss)
    sums = clipper.take()
    clipper.close()

    naive = naive_per_sample_gradients(model, x, y, _loss)
    expected_norms = torch.stack(
        [torch.sqrt(sum(g.square().sum() for g in grads)) for grads in naive]
    )
    assert torch.allclose(norms, expected_norms, rtol=TOL, atol=1e-6), (norms, expected_norms)
    scale = (max_grad_norm / (expected_norms + 1e-6)).clamp(max=1.0)
    for index, summed in enumerate(sums):
        expected = sum(scale[i] * naive[i][index] for i in range(batch))
        assert torch.allclose(
            summed, expected, rtol=TOL, atol=1e-6 * max(1.0, float(expected.abs().max()))
        )
    # Clipping holds: every clipped example's gradient has norm <= C.
    assert float((expected_norms * scale).max()) <= max_grad_norm * (1 + 1e-5)


def test_chunks_accumulate_to_the_whole_batch(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(20, 6), torch.randint(0, 2, (20,))
    clipper = PerSampleClipper(model, 0.5)
    clipper.accumulate(x, y, _loss)
    whole = clipper.take()
    for chunk in torch.arange(20).split(7):
        clipper.accumulate(x[chunk], y[chunk], _loss)
    pieces = clipper.take()
    for a, b in zip(whole, pieces, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


# Opacus's own hooks warn that the first layer's input needs no gradient; harmless here.
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_agrees_with_opacus_per_sample_gradients(seed):
    from opacus import GradSampleModule

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 4, (5,))
    clipper = PerSampleClipper(model, 1.0)
    _, _, norms = clipper.accumulate(x, y, _loss)
    clipper.close()
    wrapped = GradSampleModule(model, loss_reduction="sum")
    _loss(wrapped(x), y).sum().backward()
    opacus_norms = torch.cat([p.grad_sample.reshape(5, -1) for p in model.parameters()], 1).norm(
        dim=1
    )
    wrapped._close()
    assert torch.allclose(norms, opacus_norms, rtol=TOL)


def test_batchnorm_is_refused_with_the_replacement():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )
    with pytest.raises(InvalidInputError, match="GroupNorm") as info:
        PerSampleClipper(model, 1.0)
    assert "BatchNorm" in str(info.value)


def test_layers_it_cannot_clip_are_named():
    class Free(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.scale

    with pytest.raises(InvalidInputError, match="'1' \\(Free\\)"):
        PerSampleClipper(nn.Sequential(nn.Linear(3, 3), Free()), 1.0)


def test_tied_layers_and_in_place_outputs_are_refused():
    layer = nn.Linear(4, 4)
    tied = nn.Sequential(layer, nn.Tanh(), layer)
    clipper = PerSampleClipper(tied, 1.0)
    with pytest.raises(InvalidInputError, match="ran twice"):
        clipper.accumulate(torch.randn(3, 4), torch.randint(0, 4, (3,)), _loss)
    in_place = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    clipper = PerSampleClipper(in_place, 1.0)
    with pytest.raises(InvalidInputError, match="inplace=False"):
        clipper.accumulate(torch.randn(3, 4), torch.randint(0, 2, (3,)), _loss)


def test_a_loss_that_is_not_per_example_is_refused():
    clipper = PerSampleClipper(nn.Linear(3, 2), 1.0)
    with pytest.raises(InvalidInputError, match="reduction='none'"):
        clipper.accumulate(torch.randn(4, 3), torch.randint(0, 2, (4,)), F.cross_entropy)


def test_hooks_are_inactive_outside_accumulate_and_removed_by_close():
    model = nn.Sequential(nn.Linear(3, 2))
    clipper = PerSampleClipper(model, 1.0)
    model(torch.randn(2, 3)).sum().backward()  # plain use of the model is untouched
    clipper.close()
    assert not model[0]._forward_hooks


def test_weights_tied_across_layers_are_refused():
    """Each layer's share would be clipped apart: one example could move the weight by sqrt(2) C."""
    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    second.weight = first.weight
    with pytest.raises(InvalidInputError, match="tied weights"):
        PerSampleClipper(nn.Sequential(first, nn.Tanh(), second), 1.0)


def test_layers_that_do_not_see_the_batch_first_are_refused():
    class SequenceFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Linear(4, 2)

        def forward(self, x):  # x: (B, T, 4) -> a Linear on (T, B, 4)
            return self.mix(x.transpose(0, 1)).mean(0)

    clipper = PerSampleClipper(SequenceFirst(), 1.0)
    with pytest.raises(InvalidInputError, match="first dimension"):
        clipper.accumulate(torch.randn(3, 5, 4), torch.randint(0, 2, (3,)), _loss)
    # B == T: the shapes agree and would hide the mixing; the one-off check against a
    # backward pass per example (run by train() before any step) catches it.
    with pytest.raises(InvalidInputError, match="do not match one backward pass"):
        clipper.verify(torch.randn(3, 3, 4), torch.randint(0, 2, (3,)), _loss)


def test_verify_accepts_a_sound_model_and_leaves_the_sums_alone(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 2))
    clipper = PerSampleClipper(model, 1.0)
    x, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    clipper.accumulate(x, y, _loss)
    clipper.verify(x[:3], y[:3], _loss)  # eval mode inside: dropout does not trip it
    assert model.training
    assert all(s is not None for s in clipper._sums)
