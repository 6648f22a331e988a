"""The oracle: loops over groups and kernel taps in float64 NumPy, never dispatched.

For each group g and each tap (i, j) the output gains
``w[o, c, i, j] * x[n, c, i*dH + s_H*y, j*dW + s_W*x]`` summed over the group's input
channels c: d2l's ``corr2d`` written as a sum of shifted, scaled copies of the input.
It uses NumPy (not torch) so that it is independent of the code it checks; results are
computed in float64 (complex128 for complex inputs) and returned in the input's dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import counts, out_size, tap_slices


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().resolve_conj().cpu()
    return t.to(torch.complex128 if t.is_complex() else torch.float64).numpy()


def _back(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(a).to(device=like.device, dtype=like.dtype)


def supports(spec, dtype, device):
    return None


def forward(x, w, spec):
    xn, wn = _np(x), _np(w)
    n, _, hp, wp = xn.shape
    c_out, cg, kh, kw = wn.shape
    og = c_out // spec.groups
    oh, ow = out_size(spec, hp, wp)
    out = np.zeros((n, c_out, oh, ow), dtype=np.result_type(xn, wn))
    for g in range(spec.groups):
        xs, o = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(kh):
            for j in range(kw):
                rows, cols = tap_slices(spec, i, j, oh, ow)
                patch = xn[:, xs, rows, cols]                      # (N, Cg, oH, oW)
                out[:, o] += np.einsum("nchw,oc->nohw", patch, wn[o, :, i, j])
    return _back(out, x)


def grad_input(grad_out, w, spec, x_shape):
    gn, wn = _np(grad_out), _np(w)
    c_out, cg, kh, kw = wn.shape
    og = c_out // spec.groups
    oh, ow = gn.shape[-2:]
    gx = np.zeros(tuple(x_shape), dtype=np.result_type(gn, wn))
    for g in range(spec.groups):
        xs, o = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(kh):
            for j in range(kw):
                rows, cols = tap_slices(spec, i, j, oh, ow)
                gx[:, xs, rows, cols] += np.einsum("nohw,oc->nchw", gn[:, o], wn[o, :, i, j])
    return _back(gx, grad_out)


def grad_weight(x, grad_out, spec, w_shape):
    xn, gn = _np(x), _np(grad_out)
    c_out, cg, kh, kw = w_shape
    og = c_out // spec.groups
    oh, ow = gn.shape[-2:]
    gw = np.zeros(tuple(w_shape), dtype=np.result_type(xn, gn))
    for g in range(spec.groups):
        xs, o = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(kh):
            for j in range(kw):
                rows, cols = tap_slices(spec, i, j, oh, ow)
                gw[o, :, i, j] = np.einsum("nohw,nchw->oc", gn[:, o], xn[:, xs, rows, cols])
    return _back(gw, x)


def workspace_bytes(spec, dtype, pass_):
    """float64 (complex128) NumPy copies of the operands, the float64 result before its
    cast, and one tap's einsum operands."""
    inp, _, out, weight = counts(spec)
    f = 16 if dtype.is_complex else 8
    cg, og = spec.c_in // spec.groups, spec.c_out // spec.groups
    tap = spec.n * (cg + og) * spec.out_h * spec.out_w
    if pass_ == "forward":
        return f * (inp + weight + 2 * out + tap)
    if pass_ == "grad_input":
        return f * (out + weight + 2 * inp + tap)
    return f * (inp + out + 2 * weight + tap)


def cost(spec, dtype, device):
    return float("inf")
