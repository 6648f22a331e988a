"""The parity matrix: every algorithm x configuration x dtype against torch.

Forward against ``F.conv2d`` (after torch's own ``F.pad``, or NumPy-style flips for
'symmetric'), backward against torch's autograd of that same expression. A combination
is skipped only when the algorithm's own ``supports`` says no.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import convforge as cf
from convforge.algorithms import REGISTRY
from convforge.spec import make_spec
from helpers import ALGO_FACTOR, assert_close, tf_same_padding, torch_pad

# name: (input shape, weight shape, kwargs)
CONFIGS = {
    "1x1": ((2, 4, 6, 5), (3, 4, 1, 1), {}),
    "3x3": ((2, 3, 7, 6), (4, 3, 3, 3), {"padding": 1}),
    "even_2x2": ((2, 2, 6, 7), (3, 2, 2, 2), {}),
    "nonsquare_3x5": ((1, 2, 8, 9), (2, 2, 3, 5), {"padding": (1, 2)}),
    "stride2": ((2, 3, 9, 8), (4, 3, 3, 3), {"stride": 2, "padding": 1}),
    "stride3_nonsquare": ((1, 2, 11, 10), (3, 2, 3, 2), {"stride": (3, 2)}),
    "dilation2": ((2, 2, 9, 9), (3, 2, 3, 3), {"dilation": 2, "padding": 2}),
    "groups2": ((2, 4, 7, 7), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 4, 8, 8), (4, 1, 3, 3), {"groups": 4, "padding": 1}),
    "depthwise_mult2": ((1, 3, 7, 7), (6, 1, 5, 5), {"groups": 3, "padding": 2}),
    "asymmetric_pad": ((2, 2, 6, 7), (3, 2, 3, 3), {"padding": ((0, 2), (1, 0))}),
    "same_even": ((1, 2, 7, 6), (2, 2, 4, 2), {"padding": "same"}),
    "same_stride2": ((2, 2, 9, 8), (3, 2, 3, 3), {"padding": "same", "stride": 2}),
    "same_stride3_dil": ((1, 2, 10, 11), (2, 2, 3, 2), {"padding": "same", "stride": 3,
                                                        "dilation": 2}),
    "valid": ((1, 3, 6, 6), (2, 3, 3, 3), {"padding": "valid"}),
    "reflect": ((2, 2, 6, 7), (3, 2, 3, 3), {"padding": 1, "padding_mode": "reflect"}),
    "replicate": ((1, 2, 6, 5), (2, 2, 3, 3), {"padding": (2, 1), "padding_mode": "replicate"}),
    "circular": ((1, 2, 5, 6), (2, 2, 3, 3), {"padding": 2, "padding_mode": "circular"}),
    "symmetric": ((2, 2, 6, 6), (3, 2, 3, 3), {"padding": ((1, 2), (2, 0)),
                                               "padding_mode": "symmetric"}),
    "batch1_big_kernel": ((1, 1, 12, 12), (1, 1, 7, 7), {"padding": 3}),
    "unbatched": ((3, 6, 6), (2, 3, 3, 3), {"padding": 1}),
}
LAYOUTS = ["contiguous", "noncontiguous", "channels_last"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _per_side(x_shape, w_shape, kw):
    """Per-side padding from the kwargs, computed here independently of convforge."""
    padding = kw.get("padding", 0)
    stride = kw.get("stride", 1)
    dilation = kw.get("dilation", 1)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        top, bottom = tf_same_padding(x_shape[-2], w_shape[2], s[0], d[0])
        left, right = tf_same_padding(x_shape[-1], w_shape[3], s[1], d[1])
        return (top, bottom, left, right)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        return padding[0] + padding[1]
    p = padding if isinstance(padding, tuple) else (padding, padding)
    return (p[0], p[0], p[1], p[1])


def torch_conv(x, w, b, kw):
    """The reference: torch's padding followed by torch's valid convolution."""
    pads = _per_side(x.shape, w.shape, kw)
    batched = x.dim() == 4
    xb = x if batched else x.unsqueeze(0)
    xp = torch_pad(xb, pads, kw.get("padding_mode", "zeros"))
    y = F.conv2d(xp, w, b, kw.get("stride", 1), 0, kw.get("dilation", 1), kw.get("groups", 1))
    return y if batched else y.squeeze(0)


def _layout(t, layout):
    if layout == "noncontiguous":
        return torch.stack([t, t], -1)[..., 0]    # every other element: a strided view
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _cases():
    for algo in REGISTRY:
        for name in CONFIGS:
            for dtype in DTYPES:
                for layout in LAYOUTS:
                    if layout != "contiguous" and dtype != torch.float32:
                        continue  # layouts are checked in float32 only
                    yield pytest.param(algo, name, dtype, layout,
                                       id=f"{algo}-{name}-{str(dtype)[6:]}-{layout}")


@pytest.mark.parametrize("algo,name,dtype,layout", list(_cases()))
def test_parity_with_torch(algo, name, dtype, layout):
    x_shape, w_shape, kw = CONFIGS[name]
    compute = torch.float32 if dtype == torch.bfloat16 else dtype
    spec = make_spec("conv2d", x_shape, w_shape, **kw)
    reason = REGISTRY[algo].supports(spec, compute, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"{algo} does not support {name}: {reason}")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64)
    b = torch.randn(w_shape[0], generator=gen, dtype=torch.float64)
    x, w, b = (_layout(t.to(dtype), layout).requires_grad_() for t in (x, w, b))
    if layout == "noncontiguous" or (layout == "channels_last" and x.dim() == 4
                                     and x.shape[1] > 1):
        assert not x.is_contiguous()

    y = cf.conv2d(x, w, b, algorithm=algo, **kw)
    assert y.dtype == dtype
    # reference in float64 from the same (rounded) inputs
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    yr = torch_conv(xr, wr, br, kw)
    factor = ALGO_FACTOR.get(algo, 1.0)
    assert_close(y, yr, dtype, factor, f"{algo}/{name} forward")

    g = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g.to(dtype))
    rx, rw, rb = torch.autograd.grad(yr, (xr, wr, br), g)
    scale = max(1.0, g.abs().max().item())
    # gradients sum over more terms: widen by the reduction length in low precision
    gfactor = factor * (4.0 if dtype != torch.float64 else 1.0) * scale
    assert_close(gx, rx, dtype, gfactor, f"{algo}/{name} grad_input")
    assert_close(gw, rw, dtype, gfactor * (x.shape[0] if x.dim() == 4 else 1),
                 f"{algo}/{name} grad_weight")
    assert_close(gb, rb, dtype, gfactor, f"{algo}/{name} grad_bias")


TRANSPOSE_CONFIGS = {
    "basic": ((2, 3, 5, 4), (3, 2, 3, 3), {}),
    "stride2_pad_outpad": ((1, 4, 4, 5), (4, 3, 3, 3), {"stride": 2, "padding": 1,
                                                        "output_padding": 1}),
    "groups_dilation": ((2, 4, 4, 4), (4, 1, 2, 3), {"groups": 2, "dilation": (2, 1),
                                                     "stride": (1, 2)}),
    "outpad_lt_dilation": ((1, 2, 3, 3), (2, 2, 3, 3), {"dilation": 3, "output_padding": 2}),
    "unbatched": ((3, 4, 4), (3, 2, 2, 2), {"stride": 3}),
}


@pytest.mark.parametrize("algo", list(REGISTRY))
@pytest.mark.parametrize("name", list(TRANSPOSE_CONFIGS))
def test_conv_transpose_parity(algo, name):
    x_shape, w_shape, kw = TRANSPOSE_CONFIGS[name]
    from convforge.spec import make_transpose_spec
    ts = make_transpose_spec("conv_transpose2d", x_shape, w_shape, **kw)
    reason = REGISTRY[algo].supports(ts.conv, torch.float64, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"{algo} does not support {name}: {reason}")
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[1] * kw.get("groups", 1), dtype=torch.float64, requires_grad=True)
    y = cf.conv_transpose2d(x, w, b, algorithm=algo, **kw)
    yr = F.conv_transpose2d(x, w, b, **kw)
    assert_close(y, yr, torch.float64, msg=f"{algo}/{name} forward")
    g = torch.randn_like(yr)
    for ours, ref in zip(torch.autograd.grad(y, (x, w, b), g),
                         torch.autograd.grad(yr, (x, w, b), g)):
        assert_close(ours, ref, torch.float64, msg=f"{algo}/{name} backward")


@pytest.mark.parametrize("algo", list(REGISTRY))
def test_gradient_helpers_match_torch_nn_grad(algo):
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64)
    kw = {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2}
    spec = make_spec("conv2d", x.shape, w.shape, **kw)
    if REGISTRY[algo].supports(spec, torch.float64, torch.device("cpu")) is not None:
        pytest.skip("not supported")
    g = torch.randn(F.conv2d(x, w, **kw).shape, dtype=torch.float64)
    assert_close(cf.conv2d_input(x.shape, w, g, algorithm=algo, **kw),
                 torch.nn.grad.conv2d_input(x.shape, w, g, **kw), msg="conv2d_input")
    assert_close(cf.conv2d_weight(x, w.shape, g, algorithm=algo, **kw),
                 torch.nn.grad.conv2d_weight(x, w.shape, g, **kw), msg="conv2d_weight")


def test_matrix_size():
    """The parity matrix is as large as advertised (guards against silent shrinking)."""
    assert len(list(_cases())) >= len(REGISTRY) * len(CONFIGS) * 5
