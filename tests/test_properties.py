"""Property tests (hypothesis): oracle agreement, adjointness, delta identity, shapes,
and "convforge raises exactly when torch raises"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import convforge as cf
from convforge.algorithms import REGISTRY
from convforge.spec import make_spec, pad_input
from helpers import ALGO_FACTOR, assert_close

MODES = ["zeros", "reflect", "replicate", "circular", "symmetric"]


@st.composite
def configs(draw, max_pad=3):
    """A valid convolution: shapes and every option, the kernel always fits."""
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(MODES))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2), 9))
    if draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
    else:
        padding = tuple(tuple(draw(st.integers(0, max_pad)) for _ in range(2)) for _ in range(2))
    kwargs = {"stride": (sh, sw), "dilation": (dh, dw), "groups": groups, "padding": padding,
              "padding_mode": mode}
    x_shape = (draw(st.integers(1, 2)), groups * cg, h, w)
    w_shape = (groups * og, cg, kh, kw)
    try:
        spec = make_spec("conv2d", x_shape, w_shape, **kwargs)
    except ValueError:
        assume(False)
    return x_shape, w_shape, kwargs, spec


def _supported(spec, dtype=torch.float64):
    return [n for n, a in REGISTRY.items() if a.supports(spec, dtype, torch.device("cpu")) is None]


@given(configs())
def test_every_algorithm_agrees_with_the_oracle(cfg):
    x_shape, w_shape, kwargs, spec = cfg
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64)
    oracle = cf.conv2d(x, w, algorithm="reference", **kwargs)
    assert tuple(oracle.shape) == spec.output_shape
    for name in _supported(spec) + ["auto"]:
        assert_close(cf.conv2d(x, w, algorithm=name, **kwargs), oracle, torch.float64,
                     ALGO_FACTOR.get(name, 1.0), name)
        xf, wf = x.float(), w.float()
        assert_close(cf.conv2d(xf, wf, algorithm=name, **kwargs), oracle, torch.float32,
                     ALGO_FACTOR.get(name, 1.0), f"{name} float32")


@given(configs())
def test_adjointness_of_each_algorithms_own_backward(cfg):
    """<F(x, w), g> = <x, Gi(g, w)> = <w, Gw(x, g)> for each algorithm's own functions."""
    x_shape, w_shape, kwargs, spec = cfg
    w = torch.randn(w_shape, dtype=torch.float64)
    g = torch.randn(spec.output_shape, dtype=torch.float64)
    for name in _supported(spec):
        algo = REGISTRY[name]
        # the input as conv2d hands it over: padded, or unpadded where the algorithm pads
        fused = algo.fused_zero_padding and kwargs["padding_mode"] == "zeros"
        aspec = spec if fused else spec.after_padding()
        x = torch.randn((spec.n, spec.c_in, aspec.h, aspec.w), dtype=torch.float64)
        y = algo.forward(x, w, aspec)
        gx = algo.grad_input(g, w, aspec, x.shape)
        gw = algo.grad_weight(x, g, aspec, w.shape)
        a, b, c = (y * g).sum(), (x * gx).sum(), (w * gw).sum()
        tol = 1e-9 * (1 + abs(a.item())) * ALGO_FACTOR.get(name, 1.0)
        assert abs(a - b) <= tol and abs(a - c) <= tol, (name, a, b, c)


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 2), st.sampled_from(MODES),
       st.integers(5, 9), st.integers(5, 9))
def test_delta_kernel_with_same_padding_is_identity(kh, kw, d, mode, h, w):
    # 'same' pads d (k - 1) // 2 before: the delta sits on the tap that lands there
    before_h, before_w = d * (kh - 1) // 2, d * (kw - 1) // 2
    assume(before_h % d == 0 and before_w % d == 0)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    delta = torch.zeros(3, 1, kh, kw, dtype=torch.float64)
    delta[:, 0, before_h // d, before_w // d] = 1.0
    spec = make_spec("conv2d", x.shape, delta.shape, padding="same", dilation=d, groups=3,
                     padding_mode=mode)
    for name in _supported(spec) + ["auto"]:
        y = cf.conv2d(x, delta, padding="same", dilation=d, groups=3, padding_mode=mode,
                      algorithm=name)
        assert_close(y, x, torch.float64, ALGO_FACTOR.get(name, 1.0), name)


@given(configs(max_pad=4))
def test_output_shape_helper_agrees(cfg):
    x_shape, w_shape, kwargs, spec = cfg
    y = cf.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), **kwargs)
    expected = cf.output_shape(x_shape[2:], w_shape[2:], kwargs["stride"], kwargs["padding"],
                               kwargs["dilation"])
    assert tuple(y.shape[2:]) == expected


@given(configs())
def test_padding_agrees_with_torch_pad_where_torch_has_the_mode(cfg):
    x_shape, w_shape, kwargs, spec = cfg
    assume(kwargs["padding_mode"] in ("reflect", "replicate", "circular"))
    x = torch.randn(x_shape, dtype=torch.float64)
    top, bottom, left, right = spec.padding
    ours = pad_input(x, spec.padding, kwargs["padding_mode"])
    ref = F.pad(x, (left, right, top, bottom), mode=kwargs["padding_mode"])
    assert torch.equal(ours, ref)


def _raises(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - any error counts: we compare *whether* it raises
        return True
    return False


@given(
    ndim=st.sampled_from([2, 3, 4, 4, 4, 5]),
    n=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(1, 7), w=st.integers(1, 7),
    c_out=st.integers(1, 5), c_w=st.integers(1, 5), kh=st.integers(1, 6), kw=st.integers(1, 6),
    groups=st.integers(-1, 3), stride=st.integers(-1, 3), dilation=st.integers(-1, 3),
    padding=st.one_of(st.integers(-1, 3), st.tuples(st.integers(-1, 2), st.integers(0, 2)),
                      st.sampled_from(["same", "valid", "full"])),
    bias_len=st.one_of(st.none(), st.integers(1, 5)),
    wdtype=st.sampled_from([torch.float32, torch.float32, torch.float64]),
)
def test_raises_exactly_when_torch_raises(ndim, n, c, h, w, c_out, c_w, kh, kw, groups, stride,
                                          dilation, padding, bias_len, wdtype):
    # strided 'same' is a documented extension: torch refuses it, convforge computes it
    assume(not (padding == "same" and stride > 1))
    shape = {2: (h, w), 3: (c, h, w), 4: (n, c, h, w), 5: (1, n, c, h, w)}[ndim]
    x = torch.randn(shape)
    weight = torch.randn(c_out, c_w, kh, kw, dtype=wdtype)
    bias = None if bias_len is None else torch.randn(bias_len)
    args = (x, weight, bias, stride, padding, dilation, groups)
    theirs = _raises(lambda: F.conv2d(*args))
    ours = _raises(lambda: cf.conv2d(*args))
    assert ours == theirs, f"torch raises: {theirs}, convforge raises: {ours}"


@given(n=st.integers(1, 2), c=st.integers(1, 4), h=st.integers(1, 5),
       c_out_g=st.integers(1, 3), kh=st.integers(1, 4), groups=st.integers(1, 3),
       stride=st.integers(1, 3), padding=st.integers(0, 3), output_padding=st.integers(0, 3),
       dilation=st.integers(1, 3), w0=st.integers(1, 4))
def test_transpose_raises_exactly_when_torch_raises(n, c, h, c_out_g, kh, groups, stride,
                                                    padding, output_padding, dilation, w0):
    x = torch.randn(n, c, h, h)
    weight = torch.randn(w0, c_out_g, kh, kh)
    args = (x, weight, None, stride, padding, output_padding, groups, dilation)
    theirs = _raises(lambda: F.conv_transpose2d(*args))
    ours = _raises(lambda: cf.conv_transpose2d(*args))
    # torch's grouped float32 kernel returns an empty output for a 0-sized result where
    # its other kernels raise; convforge always raises (tests/test_functional.py)
    assume(theirs or F.conv_transpose2d(*args).numel() > 0)
    assert ours == theirs, f"torch raises: {theirs}, convforge raises: {ours}"
    if not ours:
        assert_close(cf.conv_transpose2d(*args), F.conv_transpose2d(*args), torch.float32)


@pytest.mark.parametrize("name", ["shift", "im2col"])
def test_auto_candidates_are_supported(name):
    spec = make_spec("conv2d", (1, 2, 8, 8), (2, 2, 3, 3))
    assert REGISTRY[name].supports(spec, torch.float32, torch.device("cpu")) is None
