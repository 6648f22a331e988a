"""gradcheck and gradgradcheck in float64 for every algorithm (and complex where supported)."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import convforge as cf
from convforge.algorithms import REGISTRY
from convforge.spec import make_spec, make_transpose_spec

CASES = {
    "plain": ((1, 2, 5, 4), (2, 2, 3, 2), {}),
    "strided_dilated_groups": ((2, 4, 7, 6), (4, 2, 2, 2),
                               {"stride": (2, 1), "dilation": (1, 2), "groups": 2,
                                "padding": ((1, 0), (0, 1))}),
    "same_stride_reflect": ((1, 1, 6, 5), (2, 1, 3, 3),
                            {"padding": "same", "stride": 2, "padding_mode": "reflect"}),
    "symmetric_3x3": ((1, 2, 4, 4), (1, 2, 3, 3), {"padding": 2, "padding_mode": "symmetric"}),
}


def _skip_unless_supported(algo, spec, dtype=torch.float64):
    reason = REGISTRY[algo].supports(spec, dtype, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"{algo}: {reason}")


@pytest.mark.parametrize("algo", list(REGISTRY))
@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_and_gradgradcheck(algo, case):
    x_shape, w_shape, kw = CASES[case]
    _skip_unless_supported(algo, make_spec("conv2d", x_shape, w_shape, **kw))
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return cf.conv2d(x, w, b, algorithm=algo, **kw)

    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("algo", list(REGISTRY))
def test_transpose_gradgradcheck(algo):
    x_shape, w_shape = (1, 2, 3, 3), (2, 2, 3, 2)
    kw = {"stride": 2, "padding": 1, "output_padding": 1}
    _skip_unless_supported(algo, make_transpose_spec("conv_transpose2d", x_shape, w_shape,
                                                     **kw).conv)
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        return cf.conv_transpose2d(x, w, algorithm=algo, **kw)

    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))


@pytest.mark.parametrize("algo", list(REGISTRY))
def test_complex_gradcheck(algo):
    x_shape, w_shape, kw = (1, 2, 5, 4), (2, 2, 3, 2), {"stride": (1, 2), "padding": 1}
    _skip_unless_supported(algo, make_spec("conv2d", x_shape, w_shape, **kw), torch.complex128)
    x = torch.randn(x_shape, dtype=torch.complex128, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.complex128, requires_grad=True)

    def f(x, w):
        return cf.conv2d(x, w, algorithm=algo, **kw)

    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))
