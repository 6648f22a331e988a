"""im2col + GEMM: the exercise "cross-correlation as matrix multiplication", made fast.

The padded input is viewed (no copy) as ``(N, C, kH, kW, oH, oW)`` windows with
``as_strided``; one reshape lays them out as columns ``(N, G, Cg*kH*kW, oH*oW)`` and the
convolution becomes the batched matrix product ``W (G, Og, Cg*kH*kW) @ columns``.
Backward passes are the two transposed products; the input gradient folds the columns
back (col2im) with one strided add per kernel tap. 1x1 stride-1 layers need no copy.
"""

from __future__ import annotations

import torch

from ._common import out_size, tap_slices


def supports(spec, dtype, device):
    return None


def _columns(x, spec, oh, ow):
    n, c, hp, wp = x.shape
    g, kh, kw = spec.groups, spec.kh, spec.kw
    if kh == kw == 1 and spec.stride == (1, 1):
        return x.reshape(n, g, c // g, hp * wp)                  # (N, G, Cg, L)
    x = x.resolve_conj()
    sn, sc, sh, sw = x.stride()
    (s1, s2), (d1, d2) = spec.stride, spec.dilation
    win = x.as_strided((n, c, kh, kw, oh, ow),
                       (sn, sc, sh * d1, sw * d2, sh * s1, sw * s2), x.storage_offset())
    return win.reshape(n, g, (c // g) * kh * kw, oh * ow)        # (N, G, Cg*kH*kW, L)


def forward(x, w, spec):
    n, _, hp, wp = x.shape
    c_out = w.shape[0]
    g = spec.groups
    oh, ow = out_size(spec, hp, wp)
    cols = _columns(x, spec, oh, ow)
    wm = w.reshape(g, c_out // g, -1)                             # (G, Og, K)
    return torch.matmul(wm, cols).reshape(n, c_out, oh, ow)       # (N, C_out, oH, oW)


def grad_weight(x, grad_out, spec, w_shape):
    n, c_out, oh, ow = grad_out.shape
    g = spec.groups
    cols = _columns(x, spec, oh, ow)                              # (N, G, K, L)
    gy = grad_out.reshape(n, g, c_out // g, oh * ow)              # (N, G, Og, L)
    gw = torch.matmul(gy, cols.transpose(-1, -2)).sum(0)          # (G, Og, K)
    return gw.reshape(w_shape)


def grad_input(grad_out, w, spec, x_shape):
    n, c_in, hp, wp = x_shape
    c_out, cg, kh, kw = w.shape
    g = spec.groups
    oh, ow = grad_out.shape[-2:]
    gy = grad_out.reshape(n, g, c_out // g, oh * ow)              # (N, G, Og, L)
    wm = w.reshape(g, c_out // g, cg * kh * kw)                   # (G, Og, K)
    dcols = torch.matmul(wm.transpose(-1, -2), gy)                # (N, G, K, L)
    dcols = dcols.reshape(n, c_in, kh, kw, oh, ow)
    if kh == kw == 1 and spec.stride == (1, 1):
        return dcols.reshape(x_shape)
    gx = grad_out.new_zeros(tuple(x_shape))
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_slices(spec, i, j, oh, ow)
            gx[..., rows, cols] += dcols[:, :, i, j]
    return gx


def cost(spec, dtype, device):
    cols_bytes = spec.n * spec.c_in * spec.kh * spec.kw * spec.out_h * spec.out_w * 4
    return spec.flops() / 150e9 + cols_bytes / 5e9 + 2e-5
