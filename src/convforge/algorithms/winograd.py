"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3, stride-1, undilated layers.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", arXiv:1509.09308.
A 1D correlation of ``m`` outputs with an ``r``-tap filter is computed with
``alpha = m + r - 1`` multiplications instead of ``m * r``::

    y = A^T [(G g) * (B^T d)]                      (1D, d has alpha samples)
    Y = A^T [(G g G^T) * (B^T d B)] A              (2D, nested, one alpha x alpha tile)

The matrices come from Toom-Cook: evaluate the filter polynomial and the data polynomial
at ``alpha`` points, multiply pointwise, interpolate. Correlation is the *transpose* of
that polynomial product, so with V the Vandermonde matrix of the points (the point at
infinity contributes the leading coefficient), ``B^T = V^{-T}``, ``G = V[:, :r]`` and
``A^T = V[:, :m]^T``; each row k of B^T is scaled to integers and G's row k divided by the
same factor. :func:`toom_cook_matrices` does exactly this in exact rational arithmetic;
the tables below are its output for the points of the paper (F(2,3): 0, 1, -1, inf;
F(4,3): 0, 1, -1, 2, -2, inf) and agree with the paper's tables (section 4.1 and 4.2) up
to the sign of rows that the paper negates in both B^T and G; tests check both.

Shape of the computation (``T = N * tH * tW`` tiles, ``P = alpha^2`` positions)::

    tiles  x.unfold(H).unfold(W)           (N, C, tH, tW, alpha, alpha)   (a view)
    V      B^T d B                         (P, G, Cg, T)
    U      G g G^T                         (P, G, Og, Cg)
    M      U @ V   one batched GEMM        (P, G, Og, T)
    Y      A^T M A                         (N, C_out, tH*m, tW*m) -> cropped

Backward: the input gradient of a stride-1 3x3 correlation is a "full" correlation of the
output gradient (zero-padded by 2 on each side) with the kernel rotated by 180 degrees
and its in/out channels swapped, again a 3x3 stride-1 correlation, so it runs through the
same Winograd forward. The weight gradient is a correlation of x with grad_out whose
"kernel" is oH x oW; Winograd buys nothing there, so it is the im2col GEMM (one GEMM over
all samples; see im2col.grad_weight).

Accuracy: the transforms amplify rounding (B^T of F(4,3) has entries up to 5, G 1/24,
A^T up to 8). Measured max error / max |reference| on random normal data, float32 vs
float64: F(2,3) <= 5e-7; F(4,3) 2e-6 (C_in = 3) to 7e-6 (C_in = 256), at most 1.1e-5 over
the cost-model fit grid; float64 ~1e-14. Both stay well inside the float32 tolerance 1e-4
that dispatch requires, so F(4,3) is the default and F(2,3) is used where 2x2 tiles need
fewer products in total (tiny outputs).

Speed (see benchmarks/run.py): the transforms are torch ops, each a pass over memory,
and the transform-domain GEMMs are small (alpha^2 products of (T x C_in) @ (C_in x C_out));
on this 2-core machine that is not yet faster than oneDNN's direct 3x3 kernels for
64 channels. Fusing gather + input transform and output transform + scatter into one
compiled pass each (Numba on CPU) would remove about four of the six memory passes.
"""

from __future__ import annotations

from fractions import Fraction
from math import lcm

import torch
import torch.nn.functional as F

from . import im2col

# F(2x2, 3x3), arXiv:1509.09308 section 4.1 (points 0, 1, -1, inf).
_F2 = {
    "BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]],
    "G": [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    "AT": [[1, 1, 1, 0], [0, 1, -1, 1]],
}
# F(4x4, 3x3), arXiv:1509.09308 section 4.2 (points 0, 1, -1, 2, -2, inf).
_F4 = {
    "BT": [[4, 0, -5, 0, 1, 0], [0, 4, 4, -1, -1, 0], [0, -4, 4, 1, -1, 0],
           [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    "G": [[1 / 4, 0, 0], [1 / 6, 1 / 6, 1 / 6], [1 / 6, -1 / 6, 1 / 6],
          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
           [0, 1, -1, 8, -8, 1]],
}
TABLES = {2: _F2, 4: _F4}
#: bytes of transformed input per chunk: keeps V, M and the output tile in L2/L3 cache
_CHUNK_BYTES = 6 << 20


def toom_cook_matrices(points, m: int, r: int):
    """Exact Winograd matrices (A^T, G, B^T) for F(m, r) from interpolation points.

    Args:
        points: ``m + r - 2`` distinct finite rationals; the point at infinity is added.
        m: outputs per tile.
        r: filter taps.

    Returns:
        ``(AT, G, BT)`` as lists of rows of :class:`fractions.Fraction`, shapes
        ``(m, alpha)``, ``(alpha, r)``, ``(alpha, alpha)``.

    Raises:
        ValueError: wrong number of points, or repeated points.

    Example:
        >>> AT, G, BT = toom_cook_matrices([0, 1, -1], 2, 3)
        >>> [[int(v) for v in row] for row in BT]
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]
    """
    a = m + r - 1
    pts = [Fraction(p) for p in points]
    if len(pts) != a - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"toom_cook_matrices: need {a - 1} distinct finite points, "
                         f"but got {list(points)!r}")
    vand = [[p ** k for k in range(a)] for p in pts] + [[Fraction(0)] * (a - 1) + [Fraction(1)]]
    inv = _inverse(vand)
    bt = [[inv[j][k] for j in range(a)] for k in range(a)]             # V^{-T}
    g = [row[:r] for row in vand[:-1]] + [[Fraction(0)] * (r - 1) + [Fraction(1)]]
    at = [[vand[k][i] for k in range(a - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    for k in range(a):
        scale = lcm(*[v.denominator for v in bt[k]])
        bt[k] = [v * scale for v in bt[k]]
        g[k] = [v / scale for v in g[k]]
    return at, g, bt


def _inverse(mat):
    """Gauss-Jordan inverse in exact rationals (tiny matrices only)."""
    n = len(mat)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(mat)]
    for c in range(n):
        p = next(i for i in range(c, n) if aug[i][c] != 0)
        aug[c], aug[p] = aug[p], aug[c]
        aug[c] = [v / aug[c][c] for v in aug[c]]
        for i in range(n):
            if i != c and aug[i][c] != 0:
                f = aug[i][c]
                aug[i] = [u - f * v for u, v in zip(aug[i], aug[c])]
    return [row[n:] for row in aug]


def supports(spec, dtype, device):
    if (spec.kh, spec.kw) != (3, 3):
        return f"only 3x3 kernels (F(m x m, 3 x 3)), not {spec.kh}x{spec.kw}"
    if spec.stride != (1, 1):
        return f"stride {spec.stride} would discard most of each output tile"
    if spec.dilation != (1, 1):
        return f"dilation {spec.dilation}: the transforms assume adjacent taps"
    if spec.c_in == spec.groups or spec.c_out == spec.groups:
        return ("one channel per group (depthwise): the transform-domain products would be "
                "1 x 1 matrices; shift or direct do the same work without transforms")
    return None


def tile_size(oh: int, ow: int) -> int:
    """Outputs per tile side: 4 (fewer products) unless 2x2 tiles need fewer in total.

    Example:
        >>> tile_size(56, 56), tile_size(2, 2)
        (4, 2)
    """
    def work(m):
        return -(-oh // m) * -(-ow // m) * (m + 2) ** 2
    return 4 if work(4) <= work(2) else 2


def _mats(m, dtype, device):
    t = TABLES[m]
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    return [torch.tensor(t[k], dtype=real, device=device).to(dtype) for k in ("BT", "G", "AT")]


def transform_weight(w, groups: int, m: int):
    """U = G g G^T for every (out, in) pair: ``(alpha^2, G, Og, Cg)``."""
    c_out, cg = w.shape[:2]
    _, gm, _ = _mats(m, w.dtype, w.device)
    a = m + 2
    # the small matrix always on the left of one long GEMM (BLAS is slow on K = 3 columns)
    u = gm @ w.permute(2, 0, 1, 3).reshape(3, -1)                  # (a, C_out*Cg*3)  rows
    u = gm @ u.view(a, c_out, cg, 3).permute(3, 0, 1, 2).reshape(3, -1)  # (a_q, a_p*O*Cg)
    return u.view(a, a, c_out, cg).transpose(0, 1).reshape(a * a, groups, c_out // groups, cg)


def winograd_conv(x, w, groups: int = 1, m: int = 4):
    """Valid 3x3 stride-1 correlation of ``x`` with ``w`` by Winograd F(m x m, 3 x 3).

    Args:
        x: ``(N, C_in, Hp, Wp)`` (already padded), real or complex, any strides.
        w: ``(C_out, C_in / groups, 3, 3)``.
        groups: channel groups.
        m: 2 for F(2x2, 3x3) or 4 for F(4x4, 3x3).

    Returns:
        ``(N, C_out, Hp - 2, Wp - 2)``.

    Raises:
        ValueError: m is not 2 or 4, or the kernel is not 3x3.

    Example:
        >>> x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3)
        >>> y = winograd_conv(x, w, m=4)
        >>> torch.allclose(y, F.conv2d(x, w), atol=1e-4)
        True
    """
    if m not in TABLES:
        raise ValueError(f"winograd_conv: m must be 2 or 4, but got {m}")
    if tuple(w.shape[-2:]) != (3, 3):
        raise ValueError(f"winograd_conv: kernel must be 3x3, but got {tuple(w.shape[-2:])}")
    n, c, hp, wp = x.shape
    c_out = w.shape[0]
    a, oh, ow = m + 2, hp - 2, wp - 2
    th, tw = -(-oh // m), -(-ow // m)
    x = x.resolve_conj()
    if th * m + 2 != hp or tw * m + 2 != wp:                      # whole tiles: pad the end
        x = F.pad(x, (0, tw * m + 2 - wp, 0, th * m + 2 - hp))
    bt, _, at = _mats(m, x.dtype, x.device)
    og, cg = c_out // groups, c // groups
    u = transform_weight(w.resolve_conj(), groups, m)             # (P, G, Og, Cg)
    u = u.permute(0, 1, 3, 2).reshape(a * a * groups, cg, og)     # (P*G, Cg, Og)
    # channels innermost: tiles are gathered in contiguous runs and the GEMM has tiles as
    # its long M dimension, which BLAS runs several times faster than tiles as N
    x = x.contiguous(memory_format=torch.channels_last)
    tiles = x.unfold(2, a, m).unfold(3, a, m)                     # (N, C, tH, tW, a, a)
    per_sample = c * th * tw * a * a * x.element_size()
    step = max(1, min(n, _CHUNK_BYTES // max(per_sample, 1)))
    out = x.new_empty((n, th * m, tw * m, c_out))                 # channels_last storage
    for n0 in range(0, n, step):
        nb = min(step, n - n0)
        t = nb * th * tw
        d = tiles[n0:n0 + nb].permute(4, 5, 0, 2, 3, 1)          # (a, a, nb, tH, tW, C)
        v = torch.matmul(bt, d.reshape(a, a * t * c))             # (a, a*T*C)  rows
        v = torch.matmul(bt, v.view(a, a, t * c))                 # (a, a, T*C) columns
        v = v.view(a * a, t, groups, cg).transpose(1, 2)          # (P, G, T, Cg)
        prod = torch.bmm(v.reshape(a * a * groups, t, cg), u)     # (P*G, T, Og)
        prod = prod.view(a * a, groups, t, og).transpose(1, 2)    # (P, T, G, Og)
        y = torch.matmul(at, prod.reshape(a, a * t * c_out))      # (m, a*T*O)
        y = torch.matmul(at, y.view(m, a, t * c_out))             # (m, m, T*O)
        y = y.view(m, m, nb, th, tw, c_out).permute(2, 3, 0, 4, 1, 5)   # (nb, tH, m, tW, m, O)
        out[n0:n0 + nb].view(nb, th, m, tw, m, c_out).copy_(y)
    out = out.permute(0, 3, 1, 2)                                 # (N, C_out, tH*m, tW*m)
    if th * m != oh or tw * m != ow:
        return out[..., :oh, :ow]
    return out


def forward(x, w, spec):
    oh, ow = x.shape[-2] - 2, x.shape[-1] - 2
    return winograd_conv(x, w, spec.groups, tile_size(oh, ow))


def grad_input(grad_out, w, spec, x_shape):
    # dX = full correlation of dY with the rotated kernel, in/out channels swapped
    c_out, cg, kh, kw = w.shape
    g = spec.groups
    wt = w.flip(-2, -1).reshape(g, c_out // g, cg, kh, kw).transpose(1, 2)
    wt = wt.reshape(g * cg, c_out // g, kh, kw)                   # (C_in, Og, 3, 3)
    gp = F.pad(grad_out, (2, 2, 2, 2))                            # (N, C_out, oH+4, oW+4)
    hp, wp = x_shape[-2:]
    return winograd_conv(gp, wt, g, tile_size(hp, wp))


def grad_weight(x, grad_out, spec, w_shape):
    return im2col.grad_weight(x, grad_out, spec, w_shape)


def cost(spec, dtype, device):
    oh, ow = spec.out_h, spec.out_w
    m = tile_size(oh, ow)
    a2 = (m + 2) ** 2
    tiles = spec.n * -(-oh // m) * -(-ow // m)
    cg, og = spec.c_in // spec.groups, spec.c_out // spec.groups
    gemm = 2 * a2 * tiles * spec.groups * cg * og
    moved = a2 * tiles * (spec.c_in + spec.c_out) * 4 * 3
    return gemm / 200e9 + moved / 8e9 + 4e-5
