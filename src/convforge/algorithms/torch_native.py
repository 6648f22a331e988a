"""torch's own kernels (``F.conv2d``, ``torch.nn.grad``) on the input's own layout.

A candidate of "auto" like any other: where oneDNN's dense kernels win (3x3 layers of a
ResNet), "auto" says so by choosing ``torch``. Zero padding is fused: torch pads
symmetric zeros itself; the asymmetric excess (strided ``"same"``) is padded by
``F.pad`` first. When "auto" picks torch for every pass a call needs, ``convforge.conv2d``
calls :func:`native` (one ``F.conv2d``, torch's own autograd and fused backward) instead
of the three separate passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import counts

FUSED_ZERO_PADDING = True

# ---- cost model constants (seconds), for dispatch; benchmarks/fit_cost_model.py fits
# the weights. oneDNN on the 2-core machine, float32: dense 3x3 layers at about 120
# GFLOP/s, depthwise ones at about 15 (NCHW: reorders to blocked layouts each call).
_SECONDS_PER_FLOP = 1 / 120e9
_SECONDS_PER_FLOP_DEPTHWISE = 1 / 15e9
_SECONDS_PER_BYTE = 1 / 10e9
_OVERHEAD = 1.5e-5


def supports(spec, dtype, device):
    if dtype.is_complex:
        return "torch's CPU gradient kernels (slow_conv2d_grad_input) have no complex version"
    return None


def split_padding(padding):
    """(symmetric (pH, pW) for torch, excess (left, right, top, bottom) for F.pad)."""
    top, bottom, left, right = padding
    ph, pw = min(top, bottom), min(left, right)
    return (ph, pw), (left - pw, right - pw, top - ph, bottom - ph)


def native(x, w, b, spec):
    """``F.conv2d`` with the spec's zero padding, stride, dilation and groups."""
    sym, extra = split_padding(spec.padding)
    if any(extra):
        x = F.pad(x, extra)
    return F.conv2d(x, w, b, spec.stride, sym, spec.dilation, spec.groups)


def forward(x, w, spec):
    return native(x, w, None, spec)


def grad_input(grad_out, w, spec, x_shape):
    sym, extra = split_padding(spec.padding)
    if not any(extra):
        return torch.nn.grad.conv2d_input(tuple(x_shape), w, grad_out, spec.stride, sym,
                                          spec.dilation, spec.groups)
    n, c, h, wd = x_shape
    left, right, top, bottom = extra
    full = (n, c, h + top + bottom, wd + left + right)
    gx = torch.nn.grad.conv2d_input(full, w, grad_out, spec.stride, sym, spec.dilation,
                                    spec.groups)
    return gx[..., top:top + h, left:left + wd]


def grad_weight(x, grad_out, spec, w_shape):
    sym, extra = split_padding(spec.padding)
    if any(extra):
        x = F.pad(x, extra)
    return torch.nn.grad.conv2d_weight(x, tuple(w_shape), grad_out, spec.stride, sym,
                                       spec.dilation, spec.groups)


def workspace_bytes(spec, dtype, pass_):
    """oneDNN (float32, bfloat16, float16) reorders input and output to blocked layouts of
    16-channel blocks (measured: a 1-channel 4096^2 image costs ~16 floats per pixel);
    torch's other CPU kernels (float64) build the whole batch's im2col columns. Plus the
    asymmetric excess of the padding, padded by ``F.pad`` first."""
    inp, padded, out, weight = counts(spec)
    b = dtype.itemsize
    sym, extra = split_padding(spec.padding)
    pad = b * padded if any(extra) else 0
    if dtype in (torch.float32, torch.bfloat16, torch.float16):
        blocks = lambda c: -(-c // 16) * 16                       # noqa: E731
        hw_in, hw_out = spec.padded_h * spec.padded_w, spec.out_h * spec.out_w
        moved = spec.n * (blocks(spec.c_in) * hw_in + blocks(spec.c_out) * hw_out)
        return pad + b * (moved + weight)
    pointwise = spec.kh == spec.kw == 1 and spec.stride == (1, 1) and sym == (0, 0)
    cols = 0 if pointwise else spec.n * spec.c_in * spec.kh * spec.kw * spec.out_h * spec.out_w
    grads = {"forward": 0, "grad_input": inp, "grad_weight": weight}[pass_]
    return pad + b * (cols + grads + weight)


def cost(spec, dtype, device):
    """FLOPs at oneDNN's rate (dense or depthwise), bytes moved, a per-call constant."""
    depthwise = spec.c_in == spec.groups and spec.groups > 1
    rate = _SECONDS_PER_FLOP_DEPTHWISE if depthwise else _SECONDS_PER_FLOP
    elems = spec.n * (spec.c_in * spec.h * spec.w + spec.c_out * spec.out_h * spec.out_w)
    return spec.flops() * rate + elems * dtype.itemsize * _SECONDS_PER_BYTE + _OVERHEAD
