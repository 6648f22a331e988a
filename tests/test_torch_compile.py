"""torch.compile(fullgraph=True) on models with convforge layers: one graph, outputs and
gradients equal to eager torch's; convforge's extras (padding modes, strided same)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import convforge
import convforge.nn as cnn


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, groups=8, padding=1, padding_mode="reflect"), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1, stride=2), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))


def test_compiled_model_matches_torch_forward_and_backward():
    model = _model().double()
    ours = cnn.convert(copy.deepcopy(model))
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y, ref = compiled(x), model(xr)
    torch.testing.assert_close(y, ref)
    y.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    for p, q in zip(ours.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_inductor_fullgraph_and_convforge_extras():
    """Strided "same" and symmetric padding (not in torch) inside an inductor graph."""
    layer = cnn.Conv2d(3, 4, 3, stride=2, padding="same", padding_mode="symmetric")
    x = torch.randn(2, 3, 11, 10)

    def f(inp):
        return torch.relu(layer(inp)) + convforge.conv2d(inp, layer.weight, stride=2,
                                                         padding="same")

    compiled = torch.compile(f, fullgraph=True)
    eager = f(x)
    torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-5)
    # the eager result itself against torch: symmetric = numpy's, strided same = TF's
    ref = F.conv2d(F.pad(x, (0, 1, 1, 1)), layer.weight, stride=2)   # TF: 11 -> 6, 10 -> 5
    torch.testing.assert_close(eager - torch.relu(layer(x)), ref, rtol=1e-5, atol=1e-5)


def test_compile_raises_convforge_errors():
    layer = cnn.Conv2d(6, 4, 3)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    try:
        compiled(torch.randn(1, 5, 8, 8))
    except Exception as exc:                       # dynamo wraps what the trace raised
        assert "channels" in str(exc)
    else:
        raise AssertionError("a wrong channel count must be an error")


def test_compiled_transposed_convolution():
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                      groups=2).double()
    ours = cnn.convert(copy.deepcopy(theirs))
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    y, ref = compiled(x), theirs(x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0],
                               torch.autograd.grad(ref, x, g)[0])
