"""A compiled col2im for im2col's input gradient on the CPU.

``fold`` sums every column entry ``d[n, (c, i, j), y * oW + x]`` into
``gx[n, c, y * sH + i * dH, x * sW + j * dW]``, one ``(n, c)`` plane at a time: a plane
(at most a few hundred KiB for image-sized layers) stays in cache while its ``kH * kW``
column rows stream through once. One thread: 3.3 ms against 4.6 ms for torch's
``F.fold`` (also one thread) on the 7x7 stride-2 stem's columns of two samples. It is not
run in parallel on purpose: torch's OpenMP pool keeps spinning after the GEMM that
precedes it and would fight a second pool for the cores. Float32 and float64; the caller
falls back to ``F.fold`` elsewhere (CUDA, complex, other dtypes).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit


@njit(cache=True)
def _fold(d, out, kh, kw, sh, sw, dh, dw, oh, ow):
    n, c, _, _ = out.shape
    for task in range(n * c):
        b, ch = task // c, task % c
        plane = out[b, ch]
        plane[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                row = d[b, (ch * kh + i) * kw + j]
                for y in range(oh):
                    src = row[y * ow:(y + 1) * ow]
                    dst = plane[y * sh + i * dh, j * dw:]
                    if sw == 1:
                        for x in range(ow):
                            dst[x] += src[x]
                    else:
                        for x in range(ow):
                            dst[x * sw] += src[x]


def usable(dcols) -> bool:
    """Whether the compiled fold takes this column gradient."""
    return dcols.device.type == "cpu" and dcols.dtype in (torch.float32, torch.float64)


def fold(dcols, size, spec, out_hw):
    """``F.fold(dcols, size, (kH, kW), dilation, stride)`` for ``(n, C*kH*kW, L)`` columns.

    Example:
        >>> import convforge, torch.nn.functional as F
        >>> spec = convforge.make_spec("conv2d", (1, 2, 7, 7), (1, 2, 3, 3), stride=2)
        >>> d = torch.randn(1, 18, 9)
        >>> torch.allclose(fold(d, (7, 7), spec, (3, 3)), F.fold(d, (7, 7), 3, stride=2))
        True
    """
    d = np.ascontiguousarray(dcols.detach().numpy())
    n, ckk, _ = d.shape
    c = ckk // (spec.kh * spec.kw)
    out = np.empty((n, c) + tuple(size), d.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    _fold(d, out, spec.kh, spec.kw, sh, sw, dh, dw, out_hw[0], out_hw[1])
    return torch.from_numpy(out)
