"""Depthwise 3D convolution (stride 1) as compiled flat runs: :func:`convforge.conv3d`'s
path for the layers torch's CPU kernels are slowest at (a 7x7x7 depthwise backward pass on
8 x 32 x 32^3 takes torch about a minute here).

The loops are ``depthwise``'s, one dimension up (``_depthwise_kernels.py``): a task
(sample, channel) zero-pads its input volume into a scratch block, so that the volume is
one flat run and tap ``(a, b, c)`` a fixed offset; the ``Wp - oW`` columns and ``Hp - oH``
rows past the output are computed and dropped. The three passes:

* forward: ``out[p] = sum_t w_t buf[p + off_t]`` over the run;
* input gradient: the same loop on the output gradient padded by ``d (k - 1) - pad`` on
  each side, with the flipped kernel (stride 1, so no spreading);
* weight gradient: per (sample, channel) one dot product per tap over the valid output
  positions, summed over the samples afterwards.

Each pass is an autograd Function made of the others (the input gradient is the forward
loop, the weight gradient's own derivatives are forward and input-gradient loops), so
gradients of every order come from these loops.

Used when: CPU, float32/float64, one input channel per group and ``C_out = C_in`` (true
depthwise), stride 1, zero padding of at most ``d (k - 1)`` per side; "auto" or
``algorithm="depthwise"``. Everything else runs on the 2D core per depth tap.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import LazyModule
from ._threads import numba_threads as _threads
from .direct import _array, _empty

_k = LazyModule(__package__ + "._depthwise_kernels")  # Numba: loaded on first use

_DTYPES = (torch.float32, torch.float64)


def applies(spec, x, w) -> str | None:
    """None when the spec (a :class:`convforge.spec.ConvSpec3d`) runs here, else why not."""
    if x.device.type != "cpu":
        return "CPU only (compiled Numba loops)"
    if x.dtype not in _DTYPES or w.dtype != x.dtype:
        return f"compiled for float32 and float64 only, not {x.dtype}"
    if not (spec.groups == spec.c_in == spec.c_out):
        return "depthwise layers only (C_out = C_in = groups)"
    if spec.stride != (1, 1, 1):
        return f"stride 1 only, not {spec.stride}"
    if spec.padding_mode != "zeros" and any(spec.padding):
        return f"zero padding only, not {spec.padding_mode!r}"
    reach = [dl * (k - 1) for k, dl in zip(spec.kernel, spec.dilation, strict=True)]
    if any(p > reach[a // 2] for a, p in enumerate(spec.padding)):
        return "padding larger than the dilated kernel's reach"
    return None


def _geometry(shape, kernel, pads, dilation):
    n, c, d, h, wd = shape
    f, bk, t, bt, lf, r = pads
    dp, hp, wp = d + f + bk, h + t + bt, wd + lf + r
    od, oh, ow = (p - dl * (k - 1) for p, k, dl in zip((dp, hp, wp), kernel, dilation,
                                                        strict=True))
    a = np.arange(kernel[0])[:, None, None] * dilation[0]
    b = np.arange(kernel[1])[None, :, None] * dilation[1]
    cc = np.arange(kernel[2])[None, None, :] * dilation[2]
    offs = np.ascontiguousarray(((a * hp + b) * wp + cc).reshape(-1), np.int64)
    return (dp, hp, wp), (od, oh, ow), offs, dp * hp * wp + 64


def _forward(x, w, b, pads, dilation):
    """Valid correlation of the zero-padded ``x`` (N, C, D, H, W) with ``w`` (C, 1, kD,
    kH, kW), plus ``b``; a new tensor."""
    n, c, d, h, wd = x.shape
    kernel = tuple(w.shape[2:])
    (dp, hp, wp), (od, oh, ow), offs, size = _geometry(x.shape, kernel, pads, dilation)
    out = _empty((n, c, od, oh, ow), x.dtype)
    if out.numel() == 0:
        return out.zero_()
    run = ((od - 1) * hp + oh - 1) * wp + ow
    _threads(n * c * run * offs.size)
    bias = np.zeros(c, out.numpy().dtype) if b is None else _array(b.to(x.dtype))
    geo = (n, c, d, h, wd, c, od, oh, ow, hp, wp, pads[0], pads[2], pads[4], 1)
    _k.forward3d_kernel(_array(x).reshape(-1), _array(w).reshape(-1), bias,
                        out.numpy().reshape(-1), geo, offs, size)
    return out


def _adjoint(pads, kernel, dilation):
    """The zero padding of the input gradient's correlation: ``d (k - 1) - pad``."""
    return tuple(dilation[a // 2] * (kernel[a // 2] - 1) - p for a, p in enumerate(pads))


def _grad_weight(x, g, pads, dilation, kernel):
    n, c = x.shape[:2]
    (dp, hp, wp), (od, oh, ow), offs, size = _geometry(x.shape, kernel, pads, dilation)
    if tuple(g.shape[2:]) != (od, oh, ow):
        raise RuntimeError(f"depthwise3d: gradient of shape {tuple(g.shape)} for an output "
                           f"of {(od, oh, ow)}")
    partial = np.zeros((n, c, offs.size), _array(x[:0]).dtype)
    if n and c and od * oh * ow:
        _threads(n * c * od * oh * ow * offs.size)
        geo = (n, c, x.shape[2], x.shape[3], x.shape[4], c, od, oh, ow, hp, wp, pads[0],
               pads[2], pads[4], 1)
        _k.grad_weight3d_kernel(_array(x).reshape(-1), _array(g.to(x.dtype)).reshape(-1),
                                partial.reshape(-1), geo, offs, size)
    return torch.from_numpy(partial.sum(axis=0)).reshape(c, 1, *kernel)


class Depthwise3d(torch.autograd.Function):
    """``conv3d(x, w, b, padding=pads, dilation=dilation, groups=C)`` (stride 1)."""

    @staticmethod
    def forward(ctx, x, w, b, pads, dilation):
        ctx.save_for_backward(x, w)
        ctx.pads, ctx.dilation, ctx.has_bias = pads, dilation, b is not None
        return _forward(x, w, b, pads, dilation)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        kernel = tuple(w.shape[2:])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = Depthwise3d.apply(g, w.flip(2, 3, 4), None,
                                   _adjoint(ctx.pads, kernel, ctx.dilation), ctx.dilation)
        if ctx.needs_input_grad[1]:
            dw = Depthwise3dWeight.apply(x, g, ctx.pads, ctx.dilation, kernel)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum((0, 2, 3, 4))
        return dx, dw, db, None, None


class Depthwise3dWeight(torch.autograd.Function):
    """The weight gradient of :class:`Depthwise3d` for input ``x`` and output gradient
    ``g``; differentiable in both (forward and input-gradient loops)."""

    @staticmethod
    def forward(ctx, x, g, pads, dilation, kernel):
        ctx.save_for_backward(x, g)
        ctx.pads, ctx.dilation = pads, dilation
        return _grad_weight(x, g, pads, dilation, kernel).to(x.dtype)

    @staticmethod
    def backward(ctx, gg):
        x, g = ctx.saved_tensors
        kernel = tuple(gg.shape[2:])
        dx = dg = None
        if ctx.needs_input_grad[0]:
            dx = Depthwise3d.apply(g, gg.flip(2, 3, 4), None,
                                   _adjoint(ctx.pads, kernel, ctx.dilation), ctx.dilation)
        if ctx.needs_input_grad[1]:
            dg = Depthwise3d.apply(x, gg, None, ctx.pads, ctx.dilation)
        return dx, dg, None, None, None


def conv3d(x, w, b, spec):
    """The depthwise 3D convolution of ``spec`` (batched ``x``); see :func:`applies`."""
    return Depthwise3d.apply(x.contiguous(), w.contiguous(), b, spec.padding, spec.dilation)
