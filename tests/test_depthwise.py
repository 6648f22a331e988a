"""The Numba ``depthwise`` algorithm against torch (F.conv2d, torch.nn.grad, autograd)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import make_spec
from convforge.algorithms import REGISTRY
from helpers import (
    ALGORITHM_CASES,
    assert_close,
    check_gradcheck,
    check_layouts,
    check_padding_mode,
)

NAME = "depthwise"
dw = importlib.import_module("convforge.algorithms.depthwise")

# (input shape, weight shape, kwargs): every path of the flat runs
CASES = {
    **{k: v for k, v in ALGORITHM_CASES.items() if v[1][1] == 1 and v[2].get("groups", 1)
       == v[0][1]},
    "mobilenet-3x3": ((3, 16, 12, 12), (16, 1, 3, 3), {"padding": 1, "groups": 16}),
    "mobilenet-s2": ((2, 8, 13, 12), (8, 1, 3, 3), {"padding": 1, "stride": 2, "groups": 8}),
    "convnext-7x7": ((2, 6, 9, 9), (6, 1, 7, 7), {"padding": 3, "groups": 6}),
    "tiny-stacked": ((9, 4, 4, 4), (4, 1, 3, 3), {"padding": 1, "groups": 4}),
    "large-plane": ((1, 2, 70, 75), (2, 1, 5, 3), {"padding": (2, 1), "groups": 2}),
    "s3-dil2": ((2, 3, 17, 16), (3, 1, 3, 3), {"stride": 3, "dilation": 2, "padding": 2,
                                                "groups": 3}),
    "s2x1-nonsquare": ((2, 3, 11, 9), (3, 1, 4, 2), {"stride": (2, 1), "groups": 3}),
    "multiplier-3": ((2, 2, 9, 8), (6, 1, 3, 3), {"padding": 1, "stride": 2, "groups": 2}),
    "asym-s2": ((2, 4, 10, 11), (4, 1, 4, 3), {"padding": ((1, 2), (0, 2)), "stride": 2,
                                                "groups": 4}),
    "pad>kernel": ((1, 2, 5, 6), (2, 1, 3, 3), {"padding": (4, 5), "groups": 2}),
    "single-channel-image": ((1, 1, 40, 50), (1, 1, 5, 5), {"padding": 2}),
}
DTYPES = [torch.float32, torch.float64]


def _torch(x, w, b, kw):
    """F.conv2d, with per-side padding applied by F.pad first."""
    padding = kw.get("padding", 0)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b,
                        **{k: v for k, v in kw.items() if k != "padding"})
    return F.conv2d(x, w, b, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_conv2d_and_autograd_match_torch(case, dtype):
    xs, ws, kw = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(xs, dtype=dtype, requires_grad=True)
    w = torch.randn(ws, dtype=dtype, requires_grad=True)
    b = torch.randn(ws[0], dtype=dtype, requires_grad=True)
    y = convforge.conv2d(x, w, b, algorithm=NAME, **kw)
    xt, wt, bt = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ref = _torch(xt, wt, bt, kw)
    assert_close(y, ref, dtype, msg=case)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    for a, e, name in ((x, xt, "input"), (w, wt, "weight"), (b, bt, "bias")):
        assert_close(a.grad, e.grad, dtype, msg=f"{case} grad {name}")


@pytest.mark.parametrize("case", ["mobilenet-s2", "s3-dil2", "multiplier-3", "pad>kernel"])
def test_module_functions_match_torch_nn_grad(case):
    """The three passes called directly, with the padding fused (unpadded input)."""
    xs, ws, kw = CASES[case]
    spec = make_spec("conv2d", xs, ws, **kw)
    x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64)
    g = torch.randn(spec.output_shape, dtype=torch.float64)
    args = (spec.stride, (spec.padding[0], spec.padding[2]), spec.dilation, spec.groups)
    if spec.padding[0] == spec.padding[1] and spec.padding[2] == spec.padding[3]:
        assert_close(dw.forward(x, w, spec), F.conv2d(x, w, None, *args))
        assert_close(dw.grad_input(g, w, spec, xs), torch.nn.grad.conv2d_input(xs, w, g, *args))
        assert_close(dw.grad_weight(x, g, spec, ws), torch.nn.grad.conv2d_weight(x, ws, g, *args))


@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
def test_padding_modes(mode):
    """A padded input (non-zero modes are padded before the algorithm) on the depthwise
    path: the helper's case is dense, so check a depthwise one here."""
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    from helpers import torch_pad

    y = convforge.conv2d(x, w, padding=((1, 1), (2, 1)), padding_mode=mode, groups=3,
                         algorithm=NAME)
    xt = x.detach().clone().requires_grad_()
    ref = F.conv2d(torch_pad(xt, (1, 1, 2, 1), mode), w.detach(), groups=3)
    assert_close(y, ref)
    y.sum().backward()
    ref.sum().backward()
    assert_close(x.grad, xt.grad)


def test_layouts_and_gradcheck_on_a_depthwise_layer():
    w = torch.randn(3, 1, 3, 3)
    base = torch.randn(2, 3, 20, 22)
    for x in (base[0], base[:, :, ::2, 1::2], base.to(memory_format=torch.channels_last),
              base.permute(0, 1, 3, 2)):
        assert_close(convforge.conv2d(x, w, padding=1, groups=3, algorithm=NAME),
                     F.conv2d(x, w, padding=1, groups=3))
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    wg = torch.randn(4, 1, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        return convforge.conv2d(a, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=4,
                                algorithm=NAME)
    assert torch.autograd.gradcheck(f, (x, wg))
    assert torch.autograd.gradgradcheck(f, (x, wg))


def test_asked_for_a_dense_layer_it_says_why_not():
    """The shared helpers' layers have two input channels per group."""
    for check in (check_layouts, check_gradcheck, lambda name: check_padding_mode(name, "zeros")):
        with pytest.raises(ValueError, match="does not support this configuration: depthwise"):
            check(NAME)


def test_inf_and_nan_propagate_as_in_torch():
    """The flat weight-gradient dot products must not let 0 * inf enter (a zero tail of a
    gradient row meets an input column that only the dropped outputs read)."""
    x = torch.randn(3, 2, 8, 9, dtype=torch.float64)
    x[0, 1, 3, 0] = float("inf")
    x[1, 0, 5, 8] = float("nan")
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    g = torch.randn(3, 2, 8, 9, dtype=torch.float64)
    ref = torch.nn.grad.conv2d_weight(x, w.shape, g, 1, 1, 1, 2)
    ours = convforge.conv2d_weight(x, w.shape, g, padding=1, groups=2, algorithm=NAME)
    assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert_close(ours[finite], ref[finite])
    y = convforge.conv2d(x, w, padding=1, groups=2, algorithm=NAME)
    yr = F.conv2d(x, w, padding=1, groups=2)
    assert torch.equal(y.isnan(), yr.isnan())


def test_supports_is_honest():
    cpu = torch.device("cpu")
    algo = REGISTRY[NAME]
    dense = make_spec("conv2d", (1, 4, 8, 8), (4, 2, 3, 3), groups=2)
    assert "depthwise layers only" in algo.supports(dense, torch.float32, cpu)
    spec = make_spec("conv2d", (1, 4, 8, 8), (8, 1, 3, 3), groups=4)
    assert algo.supports(spec, torch.float32, cpu) is None
    assert "float32 and float64" in algo.supports(spec, torch.complex64, cpu)
    assert "CPU" in algo.supports(spec, torch.float32, torch.device("meta"))


def test_cost_is_positive_and_grows_with_work():
    small = make_spec("conv2d", (1, 8, 16, 16), (8, 1, 3, 3), padding=1, groups=8)
    big = make_spec("conv2d", (8, 8, 16, 16), (8, 1, 7, 7), padding=3, groups=8)
    c = REGISTRY[NAME].cost
    assert 0 < c(small, torch.float32, "cpu") < c(big, torch.float32, "cpu")
