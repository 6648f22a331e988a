"""torch.autocast: convforge's convolutions behave as torch's (inputs cast to the autocast
dtype, output in it, float64 left alone, float32 parameters get float32 gradients), and
the algorithms inside compute in float32 with autocast off."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import convforge
import convforge.nn as cnn

LOW = [torch.bfloat16, torch.float16]


def _close(a, b, dtype):
    assert a.dtype == b.dtype == dtype
    scale = b.float().abs().max().clamp_min(1)
    eps = torch.finfo(dtype).eps
    assert (a.float() - b.float()).abs().max() <= 4 * eps * scale


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct", "fft", "winograd"])
def test_conv2d_under_autocast(dtype, algorithm):
    x = torch.randn(2, 4, 10, 9)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    wt, bt = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        y = convforge.conv2d(x, w, b, padding=1, algorithm=algorithm)
        ref = F.conv2d(x, wt, bt, padding=1)
    _close(y, ref, dtype)
    g = torch.randn(ref.shape)
    y.float().backward(g)
    ref.float().backward(g)
    assert w.grad.dtype == b.grad.dtype == torch.float32
    for ours, theirs in ((w.grad, wt.grad), (b.grad, bt.grad)):
        scale = theirs.abs().max()
        assert (ours - theirs).abs().max() <= 8 * torch.finfo(dtype).eps * scale


@pytest.mark.parametrize("dtype", LOW)
def test_conv1d_and_transpose_under_autocast(dtype):
    x1, w1 = torch.randn(2, 3, 20), torch.randn(5, 3, 4)
    x2, w2 = torch.randn(1, 4, 6, 7), torch.randn(4, 2, 3, 3)
    with torch.autocast("cpu", dtype=dtype):
        _close(convforge.conv1d(x1, w1, padding=2), F.conv1d(x1, w1, padding=2), dtype)
        _close(convforge.conv_transpose2d(x2, w2, stride=2, padding=1),
               F.conv_transpose2d(x2, w2, stride=2, padding=1), dtype)


@pytest.mark.parametrize("dtype", LOW)
def test_converted_model_under_autocast(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 3, groups=4), torch.nn.Flatten())
    ours = cnn.convert(copy.deepcopy(model))
    x = torch.randn(2, 3, 12, 12)
    with torch.autocast("cpu", dtype=dtype):
        y, ref = ours(x), model(x)
    assert y.dtype == ref.dtype == dtype
    scale = ref.float().abs().max()
    assert (y.float() - ref.float()).abs().max() <= 16 * torch.finfo(dtype).eps * scale
    y.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in ours.parameters())


def test_float64_and_disabled_autocast_are_untouched():
    x, w = torch.randn(1, 2, 7, 7, dtype=torch.float64), torch.randn(3, 2, 3, 3,
                                                                    dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = convforge.conv2d(x, w), F.conv2d(x, w)
    assert y.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(y, ref)
    x32, w32 = x.float(), w.float()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert convforge.conv2d(x32, w32).dtype == torch.float32
    layer = cnn.Conv2d(2, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x32).dtype == torch.bfloat16
    assert layer(x32).dtype == torch.float32          # the plan cache keeps both apart


def test_autocast_inside_a_compiled_graph():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.ConvTranspose2d(4, 2, 2, stride=2))
    ours = cnn.convert(copy.deepcopy(model))
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = compiled(x), model(x)
    assert y.dtype == ref.dtype == torch.bfloat16
    scale = ref.float().abs().max()
    assert (y.float() - ref.float()).abs().max() <= 16 * torch.finfo(torch.bfloat16).eps * scale
    assert compiled(x).dtype == torch.float32
