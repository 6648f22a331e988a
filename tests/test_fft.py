"""The ``fft`` algorithm against torch (F.conv2d, torch.nn.grad, autograd) and the oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import make_spec
from convforge.algorithms import REGISTRY, fft, reference
from helpers import (
    ALGO_FACTOR,
    ALGORITHM_CASES,
    assert_close,
    check_gradcheck,
    check_layouts,
    check_padding_mode,
)

NAME = "fft"
FACTOR = ALGO_FACTOR.get(NAME, 1.0)

CASES = ALGORITHM_CASES
# inputs large against the kernel: these take the overlap-save tile path
TILED = {
    "image-9x7": ((1, 1, 300, 260), (1, 1, 9, 7), {"padding": (4, 3)}),
    "groups-strided-dilated": ((2, 4, 200, 190), (6, 2, 5, 3),
                               {"stride": (2, 3), "dilation": (1, 2), "groups": 2}),
    "depthwise-rows": ((1, 2, 37, 700), (2, 1, 3, 5), {"groups": 2, "padding": 1}),
}
DTYPES = [torch.float32, torch.float64]


def _check_against_torch(xs, ws, kw, dtype, device="cpu"):
    x = torch.randn(xs, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(ws, dtype=dtype, device=device, requires_grad=True)
    y = convforge.conv2d(x, w, algorithm=NAME, **kw)
    g = torch.randn_like(y)
    y.backward(g)
    xt, wt = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ye = F.conv2d(xt, wt, **kw)
    ye.backward(g)
    assert_close(y, ye, factor=FACTOR, msg="forward")
    assert_close(x.grad, xt.grad, factor=FACTOR, msg="grad input")
    assert_close(w.grad, wt.grad, factor=FACTOR, msg="grad weight")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_and_autograd_match_torch(case, dtype):
    _check_against_torch(*CASES[case], dtype)


@pytest.mark.parametrize("case", list(TILED))
def test_overlap_save_tiles_match_torch(case):
    xs, ws, kw = TILED[case]
    spec = make_spec("conv2d", xs, ws, **kw)
    kh = spec.dilation[0] * (spec.kh - 1) + 1
    kwd = spec.dilation[1] * (spec.kw - 1) + 1
    _, _, th, tw = fft._grid(spec.padded_h, spec.padded_w, kh, kwd)
    assert th * tw > 1, "this case must exercise the tiled path"
    _check_against_torch(xs, ws, kw, torch.float64)


@pytest.mark.parametrize("xs, ws, kw", [
    ((5, 2, 11, 13), (4, 2, 3, 5), {"padding": 1}),                  # odd batch, untiled
    ((1, 1, 300, 390), (1, 1, 9, 9), {"padding": 4}),                # odd tile columns
    ((2, 4, 333, 250), (4, 1, 7, 7), {"groups": 4, "stride": 2}),   # depthwise, tiled
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_paired_complex_transforms_match_torch(xs, ws, kw, dtype, monkeypatch):
    """Real data goes two signals per complex FFT; every pairing shape matches torch."""
    calls = []
    paired = fft._corr_paired
    monkeypatch.setattr(fft, "_corr_paired", lambda *a: calls.append(1) or paired(*a))
    _check_against_torch(xs, ws, kw, dtype)
    assert len(calls) == 2                                        # forward and grad_input


@pytest.mark.parametrize("xs, ws, kw", [
    ((1, 1, 300, 290), (1, 1, 9, 7), {"stride": (2, 3), "padding": 4}),      # tiled
    ((3, 2, 20, 21), (4, 2, 5, 3), {"stride": 2}),                            # odd batch
    ((2, 4, 40, 41), (4, 1, 7, 7), {"stride": (3, 2), "dilation": (1, 2), "groups": 4}),
    ((1, 2, 8, 8), (2, 2, 3, 3), {"stride": 4}),                              # stride > k
    ((2, 3, 64, 70), (6, 3, 1, 1), {"stride": 2}),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_stride_is_folded_into_the_spectrum(xs, ws, kw, dtype, monkeypatch):
    """The inverse transform runs on L/s points per axis, and the result matches torch."""
    sizes = []
    ifft2 = torch.fft.ifft2
    monkeypatch.setattr(torch.fft, "ifft2", lambda t, *a, **k: sizes.append(t.shape[-2:])
                        or ifft2(t, *a, **k))
    x, w = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype)
    y = convforge.conv2d(x, w, algorithm=NAME, **kw)
    assert_close(y, F.conv2d(x, w, **kw), factor=FACTOR)
    spec = make_spec("conv2d", xs, ws, **kw)
    kh = spec.dilation[0] * (spec.kh - 1) + 1
    kwd = spec.dilation[1] * (spec.kw - 1) + 1
    lh = fft._axis_plan(spec.padded_h, kh, spec.stride[0])[0]
    lw = fft._axis_plan(spec.padded_w, kwd, spec.stride[1])[0]
    assert sizes == [(lh // spec.stride[0], lw // spec.stride[1])]


@pytest.mark.parametrize("case", list(CASES))
def test_module_functions_match_torch_nn_grad(case):
    xs, ws, kw = CASES[case]
    spec = make_spec("conv2d", xs, ws, **kw)
    top, bottom, left, right = spec.padding
    x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64)
    xp = F.pad(x, (left, right, top, bottom))                    # the padded input
    args = {"stride": spec.stride, "dilation": spec.dilation, "groups": spec.groups}
    y = fft.forward(xp, w, spec)
    assert_close(y, F.conv2d(xp, w, **args), msg="forward")
    g = torch.randn_like(y)
    assert_close(fft.grad_input(g, w, spec, xp.shape),
                 torch.nn.grad.conv2d_input(xp.shape, w, g, **args), msg="grad_input")
    assert_close(fft.grad_weight(xp, g, spec, w.shape),
                 torch.nn.grad.conv2d_weight(xp, w.shape, g, **args), msg="grad_weight")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
def test_padding_modes(mode):
    check_padding_mode(NAME, mode)


def test_unbatched_noncontiguous_and_channels_last():
    check_layouts(NAME, FACTOR)


def test_float32_error_against_float64_reference():
    # float32 transforms: the error is relative to the output's scale, ~1e-6 (documented)
    x = torch.randn(2, 3, 64, 70)
    w = torch.randn(4, 3, 15, 15)
    spec = make_spec("conv2d", x.shape, w.shape)
    exact = reference.forward(x.double(), w.double(), spec)
    rel = ((fft.forward(x, w, spec).double() - exact).abs().max() / exact.abs().max()).item()
    assert rel < 1e-5
    rel64 = ((fft.forward(x.double(), w.double(), spec) - exact).abs().max()
             / exact.abs().max()).item()
    assert rel64 < 1e-12


def test_gradcheck_and_gradgradcheck():
    check_gradcheck(NAME, fast_mode=True)


def test_next_fast_len_is_the_smallest_7_smooth_length():
    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 600):
        m = fft.next_fast_len(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))
    with pytest.raises(ValueError, match="next_fast_len: n must be positive"):
        fft.next_fast_len(0)


def test_supports_and_cost():
    spec = make_spec("conv2d", (1, 2, 64, 64), (2, 2, 31, 31))
    for device in ("cpu", "cuda"):
        assert fft.supports(spec, torch.float32, torch.device(device)) is None
    assert "float32 and float64" in fft.supports(spec, torch.complex64, torch.device("cpu"))
    with pytest.raises(ValueError, match="does not support"):
        convforge.conv2d(torch.randn(1, 1, 5, 5, dtype=torch.complex64),
                         torch.randn(1, 1, 3, 3, dtype=torch.complex64), algorithm=NAME)
    small = make_spec("conv2d", (1, 1, 64, 64), (1, 1, 3, 3))
    assert 0 < fft.cost(small, torch.float32, "cpu") < fft.cost(spec, torch.float32, "cpu")
    assert REGISTRY[NAME].auto


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["everything", "depthwise", "stride3-nonsquare"])
def test_cuda_matches_torch(case):
    _check_against_torch(*CASES[case], torch.float32, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tiled_matches_torch():
    _check_against_torch(*TILED["groups-strided-dilated"], torch.float64, device="cuda")
