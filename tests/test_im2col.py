"""im2col's layouts and chunking against torch (the parity matrix covers the rest)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convforge import make_spec
from convforge.algorithms import REGISTRY, im2col


def _check(x, w, dtype=torch.float64, **kw):
    spec = make_spec("conv2d", x.shape, w.shape, **kw)
    y = im2col.forward(x, w, spec)
    ref = REGISTRY["reference"]
    torch.testing.assert_close(y, ref.forward(x, w, spec), rtol=1e-10, atol=1e-10)
    gy = torch.randn_like(y)
    torch.testing.assert_close(im2col.grad_input(gy, w, spec, x.shape),
                               ref.grad_input(gy, w, spec, x.shape), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(im2col.grad_weight(x, gy, spec, w.shape),
                               ref.grad_weight(x, gy, spec, w.shape), rtol=1e-10, atol=1e-10)
    return y


@pytest.mark.parametrize("channels_last", [False, True])
def test_stem_uses_channels_last_columns(channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 21, 19, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 3, 7, 7, dtype=torch.float64)
    spec = make_spec("conv2d", x.shape, w.shape, stride=2)
    assert im2col._channels_last_columns(x, spec)
    y = _check(x, w, stride=2)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_channels_last_is_one_gemm(stride):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(5, 6, 1, 1, dtype=torch.float64)
    y = _check(x, w, stride=stride)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _check(x.contiguous(), w, stride=stride)                      # NCHW: batched GEMM


def test_chunked_samples_match(monkeypatch):
    monkeypatch.setattr(im2col, "_CHUNK_BYTES", 1)                # one sample per chunk
    torch.manual_seed(2)
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    _check(x, torch.randn(6, 2, 3, 3, dtype=torch.float64), groups=2, dilation=(1, 2))
    _check(x, torch.randn(6, 4, 3, 3, dtype=torch.float64), stride=(2, 1))


def test_complex_col2im_and_conj_views():
    torch.manual_seed(3)
    x = torch.randn(2, 4, 8, 8, dtype=torch.complex128)
    w = torch.randn(4, 2, 3, 3, dtype=torch.complex128)
    _check(x.conj(), w.conj(), groups=2, stride=2)


def test_float32_matches_torch():
    torch.manual_seed(4)
    x, w = torch.randn(4, 8, 16, 16), torch.randn(16, 8, 3, 3)
    spec = make_spec("conv2d", x.shape, w.shape, stride=2)
    torch.testing.assert_close(im2col.forward(x, w, spec), F.conv2d(x, w, stride=2),
                               rtol=1e-4, atol=1e-4)
