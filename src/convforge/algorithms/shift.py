"""Shift-and-add: one pass over the input per kernel tap, in torch ops (CPU and CUDA).

For each tap (i, j) the strided window ``x[..., i*dH::sH, j*dW::sW]`` is multiplied by the
tap's (out, in) weight matrix and added to the output. With one input channel per group
(depthwise, image filtering) the product is an elementwise ``addcmul``; otherwise a small
batched matrix product. Memory stays at one output-sized buffer, so it suits few
channels, depthwise layers and large images with small kernels.
"""

from __future__ import annotations

import torch

from ._common import counts, out_size, tap_slices


def supports(spec, dtype, device):
    return None


def _tap_weights(w, groups):
    c_out, cg, kh, kw = w.shape
    return w.reshape(groups, c_out // groups, cg, kh, kw)        # (G, Og, Cg, kH, kW)


def forward(x, w, spec):
    n, c_in, hp, wp = x.shape
    g = spec.groups
    wt = _tap_weights(w, g)
    _, og, cg, kh, kw = wt.shape
    oh, ow = out_size(spec, hp, wp)
    xg = x.unflatten(1, (g, cg))                                  # (N, G, Cg, Hp, Wp)
    out = x.new_zeros((n, g, og, oh, ow))
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_slices(spec, i, j, oh, ow)
            patch = xg[..., rows, cols]                           # (N, G, Cg, oH, oW)
            if cg == 1:
                out.addcmul_(patch, wt[:, :, 0, i, j].reshape(1, g, og, 1, 1))
            else:
                out += torch.einsum("ngchw,goc->ngohw", patch, wt[..., i, j])
    return out.reshape(n, g * og, oh, ow)


def grad_input(grad_out, w, spec, x_shape):
    n, c_in, hp, wp = x_shape
    g = spec.groups
    wt = _tap_weights(w, g)
    _, og, cg, kh, kw = wt.shape
    oh, ow = grad_out.shape[-2:]
    gy = grad_out.unflatten(1, (g, og))                           # (N, G, Og, oH, oW)
    gx = grad_out.new_zeros((n, g, cg, hp, wp))
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_slices(spec, i, j, oh, ow)
            if cg == 1:
                contrib = (gy * wt[:, :, 0, i, j].reshape(1, g, og, 1, 1)).sum(2, keepdim=True)
            else:
                contrib = torch.einsum("ngohw,goc->ngchw", gy, wt[..., i, j])
            gx[..., rows, cols] += contrib
    return gx.reshape(n, c_in, hp, wp)


def grad_weight(x, grad_out, spec, w_shape):
    c_out, cg, kh, kw = w_shape
    g = spec.groups
    og = c_out // g
    oh, ow = grad_out.shape[-2:]
    xg = x.unflatten(1, (g, cg))                                  # (N, G, Cg, Hp, Wp)
    gy = grad_out.unflatten(1, (g, og))                           # (N, G, Og, oH, oW)
    gw = x.new_zeros((g, og, cg, kh, kw))
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_slices(spec, i, j, oh, ow)
            patch = xg[..., rows, cols]                           # (N, G, Cg, oH, oW)
            gw[..., i, j] = torch.einsum("ngohw,ngchw->goc", gy, patch)
    return gw.reshape(c_out, cg, kh, kw)


def workspace_bytes(spec, dtype, pass_):
    """Depthwise forward: none (in-place multiply-adds); else one tap's einsum operands
    (a copy of the strided window) and products, output-sized."""
    _, _, out, weight = counts(spec)
    b = dtype.itemsize
    window = spec.n * spec.c_in * spec.out_h * spec.out_w
    if pass_ == "forward":
        return 0 if spec.c_in == spec.groups else b * (window + out)
    if pass_ == "grad_input":
        return b * (window + out)
    return b * (window + out + weight)


def cost(spec, dtype, device):
    # one pass over an output-sized buffer per tap; elementwise when Cg == 1
    cg = spec.c_in // spec.groups
    passes = spec.kh * spec.kw
    elems = spec.n * spec.c_out * spec.out_h * spec.out_w
    if cg == 1:
        return passes * elems * 3.0e-10 + passes * 2e-6
    return passes * (elems * cg * 2 / 100e9 + elems * 4e-10 + 5e-6)
