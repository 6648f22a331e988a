"""dtypes, layouts, NumPy, complex, empty batches, NaN/Inf: behaviour as in torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convforge as cf
from convforge.spec import ConvShapeError
from helpers import assert_close


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computes_in_float32_and_returns_its_dtype(dtype):
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    y = cf.conv2d(x.to(dtype), w.to(dtype), padding=1)
    assert y.dtype == dtype
    ref = F.conv2d(x.to(dtype).float(), w.to(dtype).float(), padding=1).to(dtype)
    assert_close(y, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_matches_torch(dtype):
    x = torch.randn(2, 4, 7, 6, dtype=dtype)
    w = torch.randn(6, 2, 3, 2, dtype=dtype)
    b = torch.randn(6, dtype=dtype)
    kw = {"stride": (2, 1), "padding": 1, "groups": 2}
    assert_close(cf.conv2d(x, w, b, **kw), F.conv2d(x, w, b, **kw), dtype)


def test_numpy_in_numpy_out():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    y = cf.conv2d(x, w, padding="same", padding_mode="symmetric")
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (1, 3, 6, 6)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="symmetric")
    ref = F.conv2d(torch.from_numpy(xp), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    yt = cf.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)))
    assert isinstance(yt, np.ndarray)


def test_empty_batch_behaves_as_torch():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = cf.conv2d(x, w, padding=1)
    assert y.shape == F.conv2d(x, w, padding=1).shape == (0, 4, 8, 8)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def test_nan_and_inf_propagate_as_in_torch():
    x = torch.randn(1, 1, 6, 6)
    x[0, 0, 2, 3] = float("nan")
    x[0, 0, 5, 0] = float("inf")
    w = torch.rand(2, 1, 3, 3) + 0.1
    for algo in ["shift", "im2col", "direct", "reference"]:
        y, ref = cf.conv2d(x, w, padding=1, algorithm=algo), F.conv2d(x, w, padding=1)
        assert torch.equal(y.isnan(), ref.isnan()), algo
        assert torch.equal(y.isinf(), ref.isinf()), algo


def test_channels_last_and_noncontiguous_inputs():
    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 8, 3, 3)
    assert_close(cf.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), torch.float32)
    xt = torch.randn(2, 8, 10, 10).transpose(2, 3)
    assert_close(cf.conv2d(xt, w, stride=2), F.conv2d(xt, w, stride=2), torch.float32)


def test_unbatched_input():
    x, w = torch.randn(3, 7, 7), torch.randn(2, 3, 3, 3)
    assert_close(cf.conv2d(x, w, stride=2), F.conv2d(x, w, stride=2), torch.float32)


def test_auto_never_chooses_the_oracle():
    from convforge.algorithms import REGISTRY
    from convforge.spec import make_spec
    for shape in [(1, 1, 64, 64), (8, 64, 14, 14), (2, 3, 32, 32)]:
        for k in (1, 3, 7):
            spec = make_spec("conv2d", shape, (8, shape[1], k, k))
            for name in cf.choose_plan(spec, grads=(True, True)):
                assert REGISTRY[name].auto and name != "reference"


def test_transposed_convolution_is_the_adjoint():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y = cf.conv2d(x, w, stride=2, padding=1)
    g = torch.randn_like(y)
    lhs = (y * g).sum()
    rhs = (x * cf.conv_transpose2d(g, w, stride=2, padding=1, output_padding=(0, 1))).sum()
    assert torch.allclose(lhs, rhs)


@pytest.mark.parametrize("kw", [
    {}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2, "groups": 2},
    {"padding": "same"}, {"padding": "valid"},
])
def test_conv1d_matches_torch(kw):
    x = torch.randn(2, 4, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // kw.get("groups", 1), 3, dtype=torch.float64, requires_grad=True)
    y, ref = cf.conv1d(x, w, **kw), F.conv1d(x, w, **kw)
    assert_close(y, ref, torch.float64)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv1d_padding_modes_match_torch_pad(mode):
    x, w = torch.randn(1, 2, 9), torch.randn(3, 2, 4)
    ref = F.conv1d(F.pad(x, (2, 1), mode=mode), w)
    assert_close(cf.conv1d(x, w, padding=(2, 1), padding_mode=mode), ref, torch.float32)


def test_conv1d_errors_name_conv1d():
    with pytest.raises(ValueError, match=r"conv1d: input must be 2D \(C, L\) or 3D"):
        cf.conv1d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 2))
    with pytest.raises(ValueError, match="conv1d: stride must be positive, but got 0"):
        cf.conv1d(torch.randn(1, 1, 4), torch.randn(1, 1, 2), stride=0)
    with pytest.raises(TypeError, match="conv1d: padding must be an int or a 1-tuple"):
        cf.conv1d(torch.randn(1, 1, 4), torch.randn(1, 1, 2), padding=1.5)


@pytest.mark.parametrize("algo", ["shift", "im2col", "direct", "reference"])
def test_inf_in_grad_output_propagates_as_in_torch(algo):
    """Spatial-domain algorithms keep IEEE semantics in both gradients (transform-domain
    ones, fft and winograd, mix every value into every output by design)."""
    x, w = torch.randn(1, 2, 7, 7), torch.randn(3, 2, 3, 3)
    g = torch.randn(1, 3, 5, 5)
    g[0, 1, 0, 0], g[0, 2, 3, 4] = float("inf"), float("-inf")
    pairs = [(cf.conv2d_weight(x, w.shape, g, algorithm=algo),
              torch.nn.grad.conv2d_weight(x, w.shape, g)),
             (cf.conv2d_input(x.shape, w, g, algorithm=algo),
              torch.nn.grad.conv2d_input(x.shape, w, g))]
    for ours, ref in pairs:
        assert torch.equal(ours.isnan(), ref.isnan())
        assert torch.equal(ours.isinf(), ref.isinf())


def test_transpose_zero_sized_output():
    """torch itself is inconsistent here: its grouped float32 kernel returns an empty
    output where its other kernels raise ("Output size is too small"); convforge raises for
    every dtype and grouping, and allows 0x0 only for an empty batch, as torch does."""
    x, w = torch.randn(1, 2, 1, 1), torch.randn(2, 1, 2, 2)
    kw = {"groups": 2, "padding": 2, "dilation": 3}
    assert F.conv_transpose2d(x, w, **kw).numel() == 0
    with pytest.raises(RuntimeError):
        F.conv_transpose2d(x.double(), w.double(), **kw)
    for dtype in (torch.float32, torch.float64):
        with pytest.raises(ConvShapeError, match="must be positive"):
            cf.conv_transpose2d(x.to(dtype), w.to(dtype), **kw)
    empty = torch.randn(0, 2, 1, 1)
    assert cf.conv_transpose2d(empty, w, **kw).shape == F.conv_transpose2d(empty, w, **kw).shape
