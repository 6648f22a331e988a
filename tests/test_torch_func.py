"""torch.func over convforge: vmap, grad, jacrev, jvp-free compositions, functional_call,
compared with the same transforms over torch's convolution."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

import convforge
import convforge.nn as cnn

D = torch.float64


def _w(*shape):
    return torch.randn(*shape, dtype=D)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, groups=2), dict(dilation=2)])
def test_vmap_over_samples_and_over_weights(kw):
    xs, w = _w(5, 2, 4, 9, 9), _w(4, 4 // kw.get("groups", 1), 3, 3)
    torch.testing.assert_close(vmap(lambda x: convforge.conv2d(x, w, **kw))(xs),
                               vmap(lambda x: F.conv2d(x, w, **kw))(xs))
    ws, x = _w(3, 4, 4 // kw.get("groups", 1), 3, 3), _w(2, 4, 9, 9)
    torch.testing.assert_close(vmap(lambda w_: convforge.conv2d(x, w_, **kw))(ws),
                               vmap(lambda w_: F.conv2d(x, w_, **kw))(ws))
    xu = _w(5, 4, 9, 9)                                        # vmap of unbatched inputs
    torch.testing.assert_close(vmap(lambda x: convforge.conv2d(x, w, **kw))(xu),
                               vmap(lambda x: F.conv2d(x, w, **kw))(xu))


def test_grad_and_jacrev_match_torch():
    x, w, b = _w(1, 2, 5, 6), _w(3, 2, 3, 2), _w(3)

    def ours(x_, w_, b_):
        return convforge.conv2d(x_, w_, b_, stride=(1, 2), padding=1).sin().sum()

    def theirs(x_, w_, b_):
        return F.conv2d(x_, w_, b_, stride=(1, 2), padding=1).sin().sum()

    for a, r in zip(grad(ours, argnums=(0, 1, 2))(x, w, b),
                    grad(theirs, argnums=(0, 1, 2))(x, w, b), strict=True):
        torch.testing.assert_close(a, r)
    jac = jacrev(lambda w_: convforge.conv2d(x, w_, padding=1), argnums=0)(w)
    torch.testing.assert_close(jac, jacrev(lambda w_: F.conv2d(x, w_, padding=1))(w))
    # second order: the Hessian-vector product through the operators' own backward
    hvp = grad(lambda w_: (grad(ours, argnums=1)(x, w_, b) * w).sum())(w)
    ref = grad(lambda w_: (grad(theirs, argnums=1)(x, w_, b) * w).sum())(w)
    torch.testing.assert_close(hvp, ref)


def test_functional_call_and_per_sample_gradients_of_a_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(4, 1, 3), torch.nn.Flatten()).double()
    ours = cnn.convert(copy.deepcopy(model))
    params = {k: v.detach() for k, v in ours.named_parameters()}
    xs = _w(4, 2, 7, 7)

    def loss(m):
        return lambda p, x: functional_call(m, p, (x.unsqueeze(0),)).square().sum()

    per_sample = vmap(grad(loss(ours)), in_dims=(None, 0))(params, xs)
    expect = vmap(grad(loss(model)), in_dims=(None, 0))(params, xs)
    for k in params:
        torch.testing.assert_close(per_sample[k], expect[k])


def test_conv1d_under_vmap():
    xs, w = _w(3, 2, 4, 20), _w(5, 4, 3)
    torch.testing.assert_close(vmap(lambda x: convforge.conv1d(x, w, padding=2))(xs),
                               vmap(lambda x: F.conv1d(x, w, padding=2))(xs))


def test_transposed_convolution_under_vmap_and_grad():
    x, w = _w(4, 2, 3, 5, 5), _w(3, 2, 3, 3)
    kw = dict(stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(vmap(lambda t: convforge.conv_transpose2d(t, w, **kw))(x),
                               vmap(lambda t: F.conv_transpose2d(t, w, **kw))(x))
    f = lambda w_: convforge.conv_transpose2d(x[0], w_, **kw).cos().sum()   # noqa: E731
    r = lambda w_: F.conv_transpose2d(x[0], w_, **kw).cos().sum()           # noqa: E731
    torch.testing.assert_close(grad(f)(w), grad(r)(w))
