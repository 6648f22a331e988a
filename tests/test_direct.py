"""The Numba ``direct`` algorithm against torch (F.conv2d, torch.nn.grad, autograd)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import make_spec
from convforge.algorithms import REGISTRY, direct
from helpers import (
    ALGORITHM_CASES,
    assert_close,
    check_gradcheck,
    check_layouts,
    check_padding_mode,
    tf_same_padding,
)

NAME = "direct"

CASES = ALGORITHM_CASES
# zero padding fused into the loops: long rows (>= 256 outputs) take the copy-free kernels
# (in place for stride 1 and (kW - 1) dW <= 4, padded blocks in cache otherwise)
PADDED = {
    "asym-long": ((1, 2, 5, 300), (3, 2, 3, 4), {"padding": ((2, 0), (1, 3))}),
    "asym-short": ((2, 2, 7, 9), (3, 2, 3, 3), {"padding": ((0, 2), (3, 1))}),
    "same-s2": ((2, 2, 11, 13), (3, 2, 4, 3), {"padding": "same", "stride": 2}),
    "same-s3-long": ((1, 2, 7, 520), (2, 2, 5, 5), {"padding": "same", "stride": 3}),
    "dil2-long": ((1, 2, 9, 270), (2, 2, 3, 3), {"padding": 2, "dilation": 2}),
    "groups-long": ((1, 4, 6, 261), (6, 2, 3, 2), {"padding": (1, 2), "groups": 2}),
    "depthwise-long": ((2, 3, 8, 300), (3, 1, 5, 5), {"padding": 2, "groups": 3}),
    "even-long": ((1, 1, 6, 257), (2, 1, 2, 4), {"padding": ((1, 0), (2, 1))}),
    "pad>kernel": ((1, 2, 5, 6), (2, 2, 3, 3), {"padding": (4, 5)}),
    "pad>kernel-long": ((1, 1, 4, 256), (1, 1, 3, 3), {"padding": (5, 6)}),
    "narrower-than-kernel": ((1, 1, 3, 2), (1, 1, 5, 7), {"padding": (2, 4)}),
    "7x7-long": ((1, 2, 9, 300), (2, 2, 7, 7), {"padding": ((3, 1), (4, 2))}),
    "same-d3-long": ((1, 1, 10, 300), (1, 1, 3, 3), {"padding": "same", "dilation": 3}),
    # long rows, in place: pairs of output rows share input rows (dH = 1), odd row counts
    "row-pairs-long": ((2, 1, 11, 270), (3, 1, 5, 5), {"padding": ((2, 1), (2, 2))}),
    "row-pairs-groups": ((1, 4, 9, 259), (4, 2, 5, 3), {"padding": ((3, 0), (1, 1)),
                                                       "groups": 2}),
}
# short rows, stride 1: each task pads its block of every channel itself (no NumPy pad)
FLAT = {
    "lenet": ((3, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}),
    "c1-odd-outputs": ((1, 1, 13, 11), (5, 1, 3, 5), {"padding": ((2, 0), (1, 3))}),
    "depthwise-7x7-odd": ((2, 5, 15, 13), (5, 1, 7, 7), {"padding": 3, "groups": 5}),
    "depthwise-x2": ((1, 3, 9, 10), (6, 1, 3, 3), {"padding": (1, 2), "groups": 3}),
    "dilated": ((2, 2, 12, 14), (3, 2, 3, 3), {"padding": 2, "dilation": (2, 1)}),
    "block-cap": ((1, 128, 20, 28), (3, 128, 3, 3), {"padding": 1}),
    "pad>kernel": ((1, 2, 5, 6), (3, 2, 2, 2), {"padding": ((4, 0), (0, 5))}),
    "stride2-falls-back": ((2, 3, 15, 17), (4, 3, 3, 3), {"padding": 1, "stride": 2}),
    # enough planes for tasks of several output channels: pairs, then an odd one out
    "channel-pairs": ((32, 1, 12, 10), (5, 1, 3, 3), {"padding": 1}),
    "channel-pairs-groups": ((16, 4, 9, 11), (6, 2, 3, 3), {"padding": (1, 0), "groups": 2}),
}
DTYPES = [torch.float32, torch.float64]


def _torch_conv(x, w, b, kw):
    """F.pad + F.conv2d, with 'same' and per-side padding resolved independently."""
    stride, dilation = kw.get("stride", 1), kw.get("dilation", 1)
    pad = kw.get("padding", 0)
    s2 = stride if isinstance(stride, tuple) else (stride, stride)
    d2 = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    if pad == "same":
        (t, bo), (le, r) = (tf_same_padding(x.shape[-2 + k], w.shape[-2 + k], s2[k], d2[k])
                            for k in range(2))
    elif isinstance(pad, tuple) and isinstance(pad[0], tuple):
        (t, bo), (le, r) = pad
    else:
        p2 = pad if isinstance(pad, tuple) else (pad, pad)
        t, bo, le, r = p2[0], p2[0], p2[1], p2[1]
    return F.conv2d(F.pad(x, (le, r, t, bo)), w, b, stride=s2, dilation=d2,
                    groups=kw.get("groups", 1))


def _torch_grads(x, w, b, kw, g):
    xt, wt, bt = (t.detach().clone().requires_grad_() for t in (x, w, b))
    _torch_conv(xt, wt, bt, kw).backward(g)
    return _torch_conv(x.detach(), w.detach(), b.detach(), kw), xt.grad, wt.grad, bt.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES) + list(PADDED) + list(FLAT))
def test_conv2d_and_autograd_match_torch(case, dtype):
    xs, ws, kw = {**CASES, **PADDED, **FLAT}[case]
    x = torch.randn(xs, dtype=dtype, requires_grad=True)
    w = torch.randn(ws, dtype=dtype, requires_grad=True)
    b = torch.randn(ws[0], dtype=dtype, requires_grad=True)
    y = convforge.conv2d(x, w, b, algorithm=NAME, **kw)
    g = torch.randn_like(_torch_conv(x.detach(), w.detach(), None, kw))
    y.backward(g)
    ye, gxe, gwe, gbe = _torch_grads(x, w, b, kw, g)
    assert_close(y, ye, msg=f"{case} forward")
    assert_close(x.grad, gxe, msg=f"{case} grad input")
    assert_close(w.grad, gwe, msg=f"{case} grad weight")
    assert_close(b.grad, gbe, msg=f"{case} grad bias")


@pytest.mark.parametrize("case", list(CASES) + list(PADDED) + list(FLAT))
def test_module_functions_match_torch_nn_grad(case):
    """The fused interface (unpadded x, spec.padding to apply) and the pre-padded one."""
    xs, ws, kw = {**CASES, **PADDED, **FLAT}[case]
    spec = make_spec("conv2d", xs, ws, **kw)
    top, bottom, left, right = spec.padding
    x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64)
    xp = F.pad(x, (left, right, top, bottom))                    # the padded input
    args = {"stride": spec.stride, "dilation": spec.dilation, "groups": spec.groups}
    ye = F.conv2d(xp, w, **args)
    g = torch.randn_like(ye)
    gxp = torch.nn.grad.conv2d_input(xp.shape, w, g, **args)
    gwe = torch.nn.grad.conv2d_weight(xp, w.shape, g, **args)
    assert direct.FUSED_ZERO_PADDING
    assert_close(direct.forward(x, w, spec), ye, msg="fused forward")
    assert_close(direct.grad_input(g, w, spec, x.shape),
                 gxp[..., top:top + xs[2], left:left + xs[3]], msg="fused grad_input")
    assert_close(direct.grad_weight(x, g, spec, w.shape), gwe, msg="fused grad_weight")
    pspec = spec.after_padding()
    assert_close(direct.forward(xp, w, pspec), ye, msg="forward")
    assert_close(direct.grad_input(g, w, pspec, xp.shape), gxp, msg="grad_input")
    assert_close(direct.grad_weight(xp, g, pspec, w.shape), gwe, msg="grad_weight")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
def test_padding_modes(mode):
    check_padding_mode(NAME, mode)


def test_unbatched_noncontiguous_and_channels_last():
    check_layouts(NAME)


def test_long_rows_and_many_row_blocks():
    # rows wider than one accumulator block, odd sizes: every loop boundary is crossed
    x = torch.randn(1, 1, 67, 2101, dtype=torch.float64)
    for k, kw in ((3, {"padding": 1}), (5, {"stride": 2}), (7, {"dilation": 3})):
        w = torch.randn(1, 1, k, k, dtype=torch.float64, requires_grad=True)
        xr = x.clone().requires_grad_()
        y = convforge.conv2d(xr, w, algorithm=NAME, **kw)
        ye = F.conv2d(x, w.detach(), **kw)
        assert_close(y, ye, msg=f"{k}x{k}")
        g = torch.randn_like(y)
        y.backward(g)
        assert_close(xr.grad, torch.nn.grad.conv2d_input(x.shape, w.detach(), g, **kw))
        assert_close(w.grad, torch.nn.grad.conv2d_weight(x, w.shape, g, **kw))


def test_float32_large_kernel_accuracy_against_float64():
    x = torch.randn(3, 2, 40, 41)
    w = torch.randn(4, 2, 15, 15)
    y = convforge.conv2d(x, w, padding=7, algorithm=NAME)
    ye = F.conv2d(x.double(), w.double(), padding=7)
    assert_close(y, ye.float(), msg="float32 15x15")


def test_gradcheck_and_gradgradcheck():
    check_gradcheck(NAME)


def test_fused_padding_unbatched_channels_last_and_views():
    w = torch.randn(3, 3, 3, 3)
    base = torch.randn(2, 3, 6, 300)
    for x in (base[0], base.to(memory_format=torch.channels_last), base[:, :, 1:, 3:290]):
        y = convforge.conv2d(x, w, padding=((2, 1), (1, 2)), algorithm=NAME)
        xb = x if x.dim() == 4 else x[None]
        ye = F.conv2d(F.pad(xb, (1, 2, 2, 1)), w)
        assert_close(y, ye if x.dim() == 4 else ye[0], msg=str(tuple(x.stride())))


@pytest.mark.parametrize("width", [9, 258])                   # flat runs; copy-free kernel
def test_gradcheck_and_gradgradcheck_with_padding(width):
    x = torch.randn(1, 2, 4, width, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        return convforge.conv2d(a, b, padding=((2, 0), (1, 3)), dilation=(1, 2),
                                algorithm=NAME)

    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))


@pytest.mark.parametrize("stride, padding, output_padding, dilation, width",
                         [(2, 1, 1, 1, 300), (1, 1, 1, 2, 300), (3, 4, 2, 1, 130),
                          (1, 3, 0, 1, 280), (1, 0, 0, 1, 20)])
def test_conv_transpose2d_uses_grad_input_with_padding(stride, padding, output_padding,
                                                       dilation, width):
    x = torch.randn(2, 4, 6, width, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    args = (None, stride, padding, output_padding, 1, dilation)
    assert_close(convforge.conv_transpose2d(x, w, *args, algorithm=NAME),
                 F.conv_transpose2d(x, w, *args))


def test_supports_is_honest():
    spec = make_spec("conv2d", (1, 2, 8, 8), (2, 2, 3, 3))
    assert direct.supports(spec, torch.float32, torch.device("cpu")) is None
    assert direct.supports(spec, torch.float64, torch.device("cpu")) is None
    assert "CPU only" in direct.supports(spec, torch.float32, torch.device("cuda"))
    assert "float32 and float64" in direct.supports(spec, torch.complex64, torch.device("cpu"))
    with pytest.raises(ValueError, match="does not support"):
        convforge.conv2d(torch.randn(1, 1, 5, 5, dtype=torch.complex64),
                         torch.randn(1, 1, 3, 3, dtype=torch.complex64), algorithm=NAME)
    assert REGISTRY[NAME].auto


def test_cost_is_positive_and_grows_with_work():
    small = make_spec("conv2d", (1, 1, 64, 64), (1, 1, 3, 3))
    big = make_spec("conv2d", (1, 1, 512, 512), (1, 1, 7, 7))
    c_small = direct.cost(small, torch.float32, torch.device("cpu"))
    c_big = direct.cost(big, torch.float32, torch.device("cpu"))
    assert 0 < c_small < c_big < 1


def test_honours_torch_thread_count():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x, w = torch.randn(1, 1, 30, 30), torch.randn(1, 1, 3, 3)
        assert_close(convforge.conv2d(x, w, algorithm=NAME), F.conv2d(x, w))
        import numba
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_rows_views_and_batch_one(dtype):
    """Strided, transposed and channels-last views, and one sample, on the flat kernels."""
    base = torch.randn(2, 3, 30, 58, dtype=dtype)
    for x, w, kw in ((base[:1, :1, ::2, 1::2], torch.randn(6, 1, 5, 5, dtype=dtype),
                      {"padding": 2}),
                     (base[:, :, :, :27].transpose(2, 3), torch.randn(3, 1, 7, 7, dtype=dtype),
                      {"padding": 3, "groups": 3}),
                     (base.to(memory_format=torch.channels_last)[:1],
                      torch.randn(4, 3, 3, 3, dtype=dtype), {"padding": (0, 1)})):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = convforge.conv2d(xg, wg, algorithm=NAME, **kw)
        g = torch.randn_like(y)
        y.backward(g)
        assert_close(y, F.conv2d(x, w, **kw), msg=str(tuple(x.shape)))
        assert_close(xg.grad, torch.nn.grad.conv2d_input(x.shape, w, g, **kw))
        assert_close(wg.grad, torch.nn.grad.conv2d_weight(x, w.shape, g, **kw))


def test_short_rows_few_tasks_split_output_channels():
    """One sample, one row block: output channels are split over tasks (singles, no pairs)."""
    spec = make_spec("conv2d", (1, 2, 10, 12), (16, 2, 3, 3), padding=1)
    assert direct._flat_plan(1, 16, 2, 10, 14, 2, 10)[1] == 1      # one channel per task
    assert direct._flat_plan(256, 6, 1, 28, 32, 4, 28) == (28, 6)  # LeNet: 3 pairs a task
    assert direct._flat_plan(32, 5, 1, 12, 12, 2, 12)[1] == 3      # "channel-pairs": 2 + 1
    assert direct._flat_plan(32, 3, 2, 9, 13, 2, 9)[1] == 2        # its grouped variant
    x, w = torch.randn(1, 2, 10, 12), torch.randn(16, 2, 3, 3)
    assert_close(direct.forward(x, w, spec), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("width", [28, 300])                  # flat kernel; long rows
def test_inf_in_input_propagates_as_in_torch(width):
    """The flat weight gradient pads gradient rows with zero tails that meet real input
    columns; blocks with Inf or NaN are summed row by row, so 0 * inf never enters a sum
    (taps that never reach the Inf stay finite, as in torch)."""
    x = torch.randn(2, 1, 9, width)
    x[0, 0, 3, width - 1] = float("inf")                      # the last column: tails
    x[1, 0, 6, 0] = float("inf")                              # the first: wrapped tails
    w = torch.rand(5, 1, 5, 5) + 0.1
    g = torch.rand(2, 5, 9, width) + 0.1
    ours = convforge.conv2d_weight(x, w.shape, g, padding=2, algorithm=NAME)
    ref = torch.nn.grad.conv2d_weight(x, w.shape, g, padding=2)
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours.isinf(), ref.isinf())
    fin = ref.isfinite()
    assert_close(ours[fin], ref[fin], msg="finite entries")
    y = convforge.conv2d(x, w, padding=2, algorithm=NAME)
    ye = F.conv2d(x, w, padding=2)
    assert torch.equal(y.isnan(), ye.isnan()) and torch.equal(y.isinf(), ye.isinf())


def test_inf_and_nan_on_depthwise_short_rows_as_in_torch():
    """Depthwise short rows pair output rows, the unshared input rows with weight 0: a
    block holding Inf or NaN is summed exactly instead (forward and grad_input)."""
    x = torch.randn(2, 3, 11, 13)
    x[0, 1, 4, 6] = float("inf")
    x[1, 2, 0, 12] = float("nan")
    w = torch.rand(3, 1, 3, 3) + 0.1
    y = convforge.conv2d(x, w, padding=1, groups=3, algorithm=NAME)
    ye = F.conv2d(x, w, padding=1, groups=3)
    g = torch.rand_like(ye) + 0.1
    g[0, 0, 5, 5] = float("inf")
    gi = convforge.conv2d_input(x.shape, w, g, padding=1, groups=3, algorithm=NAME)
    gie = torch.nn.grad.conv2d_input(x.shape, w, g, padding=1, groups=3)
    for ours, ref in ((y, ye), (gi, gie)):
        assert torch.equal(ours.isnan(), ref.isnan())
        assert torch.equal(ours.isinf(), ref.isinf())
        fin = ref.isfinite()
        assert_close(ours[fin], ref[fin], msg="finite entries")
