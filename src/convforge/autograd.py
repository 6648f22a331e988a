"""Three autograd Functions that close under differentiation.

Fix a spec (stride, dilation, groups) and write, for the padded input x, weight w and an
output-shaped g,

    F(x, w)   = forward(x, w)          valid cross-correlation          -> output shape
    Gi(g, w)  = grad_input(g, w)       its adjoint in x                 -> input shape
    Gw(x, g)  = grad_weight(x, g)      its adjoint in w                 -> weight shape

All three are the same trilinear form T(x, w, g) = sum_{n,o,c,y,x,i,j}
g[n,o,y,x] w[o,c,i,j] x[n,c, y*sH + i*dH, x*sW + j*dW] read with one argument left out:

    <F(x, w), g> = <x, Gi(g, w)> = <w, Gw(x, g)>                (adjointness)

so the derivative of any one of them is another of them. With torch's convention for
complex gradients (grad = dL/d(conj z)), and conj() a no-op on real tensors:

    F(x, w),  upstream dy:  dx = Gi(dy, conj w)     dw = Gw(conj x, dy)
    Gi(g, w), upstream dX:  dg = F(dX, conj w)      dw = Gw(dX, conj g)
    Gw(x, g), upstream dW:  dx = Gi(conj g, dW)     dg = F(conj x, dW)

The bias travels with F (``F(x, w) + b``, its gradient ``sum dy`` over batch and
pixels). Each backward calls the other Functions through ``.apply``, so second and higher
derivatives (gradgradcheck, double backward) work for every algorithm. Each Function
carries the :class:`~convforge.algorithms.Passes` of its call: F always runs on its
forward algorithm, Gi on its input-gradient one and Gw on its weight-gradient one, at
every order of differentiation. The transposed
convolution is Gi used as a forward pass. Padding in other modes than zeros and the bias
stay outside: they are torch ops, and torch differentiates them. Zero padding may be in
the spec: each pass runs through :mod:`convforge.workspace`, which pads (per tile) for
an algorithm that does not fuse it, and tiles any pass over the workspace limit.
"""

from __future__ import annotations

import torch

from . import workspace
from .algorithms import Algorithm, Passes


def _passes(algos):
    return Passes.of(algos) if isinstance(algos, Algorithm) else algos


def _conj(t):
    return t.conj() if t.is_complex() else t


def _empty_result(shape, like):
    return like.new_zeros(tuple(shape))


def forward_values(x, w, b, spec, passes):
    """F(x, w) + b computed, without autograd: the inference path, and _Forward's."""
    if x.numel() == 0 or w.numel() == 0:
        out = _empty_result((x.shape[0], w.shape[0], spec.out_h, spec.out_w), x)
        return out if b is None else out.add_(b.view(1, -1, 1, 1))
    # the bias is fused or added in place (the output is the algorithm's own); tiled
    # under the workspace limit where the pass needs more
    return workspace.forward(passes.forward, x, w, spec, b)       # (N, C_out, oH, oW)


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, spec, passes):
        ctx.save_for_backward(x, w)
        ctx.spec, ctx.passes = spec, passes
        return forward_values(x, w, b, spec, passes)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = conv_grad_input(dy, _conj(w), ctx.spec, ctx.passes, x.shape)
        if ctx.needs_input_grad[1]:
            dw = conv_grad_weight(_conj(x), dy, ctx.spec, ctx.passes, w.shape)
        if ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3))
        return dx, dw, db, None, None


class _GradInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, w, spec, passes, x_shape):
        ctx.save_for_backward(g, w)
        ctx.spec, ctx.passes = spec, passes
        if g.numel() == 0 or w.numel() == 0:
            return _empty_result(x_shape, g)
        return workspace.grad_input(passes.grad_input, g, w, spec, tuple(x_shape))

    @staticmethod
    def backward(ctx, d_x):
        g, w = ctx.saved_tensors
        dg = dw = None
        if ctx.needs_input_grad[0]:
            dg = conv_forward(d_x, _conj(w), ctx.spec, ctx.passes)
        if ctx.needs_input_grad[1]:
            dw = conv_grad_weight(d_x, _conj(g), ctx.spec, ctx.passes, w.shape)
        return dg, dw, None, None, None


class _GradWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, spec, passes, w_shape):
        ctx.save_for_backward(x, g)
        ctx.spec, ctx.passes = spec, passes
        if x.numel() == 0 or g.numel() == 0:
            return _empty_result(w_shape, x)
        return workspace.grad_weight(passes.grad_weight, x, g, spec, tuple(w_shape))

    @staticmethod
    def backward(ctx, d_w):
        x, g = ctx.saved_tensors
        dx = dg = None
        if ctx.needs_input_grad[0]:
            dx = conv_grad_input(_conj(g), d_w, ctx.spec, ctx.passes, x.shape)
        if ctx.needs_input_grad[1]:
            dg = conv_forward(_conj(x), d_w, ctx.spec, ctx.passes)
        return dx, dg, None, None, None


def conv_forward(x, w, spec, algos, bias=None):
    """F(x, w) (+ bias): valid correlation of the padded input, differentiable to any order.

    ``algos``: a :class:`~convforge.algorithms.Passes` or one Algorithm for every pass.
    The bias is added in place to the algorithm's output (no second output tensor); its
    gradient is the sum of the output's gradient over batch and pixels."""
    return _Forward.apply(x, w, bias, spec, _passes(algos))


def conv_grad_input(g, w, spec, algos, x_shape):
    """Gi(g, w): the input gradient (adjoint of F in x), differentiable to any order."""
    return _GradInput.apply(g, w, spec, _passes(algos), tuple(x_shape))


def conv_grad_weight(x, g, spec, algos, w_shape):
    """Gw(x, g): the weight gradient (adjoint of F in w), differentiable to any order."""
    return _GradWeight.apply(x, g, spec, _passes(algos), tuple(w_shape))
