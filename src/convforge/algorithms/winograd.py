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

The first call in a process compiles or loads the loops, as ``direct``'s do (see its
docstring and ``convforge._compile``); "auto" never waits for it.

Shape of the computation (``T = N * tH * tW`` tiles, ``P = alpha^2`` positions).
Real float32/float64 CPU tensors take the compiled path (``_winograd_kernels``), channels
innermost so that every transform runs along channel vectors::

    x      NCHW -> NHWC (free for channels_last input)        (N, H, W, C)
    U      G g G^T                     one compiled pass       (P, C, O)
    per job of rows of tiles (about 8 MiB of V and M; one worker thread each):
      V    B^T d B, zero padding fused one compiled pass       (P, T_job, C)
      M    V @ U   batched GEMM        torch.bmm, one thread   (P, T_job, O)
      Y    A^T M A, crop fused         one compiled pass  ->   (N, oH, oW, O) channels_last

With few tiles per worker (dense256: 128 tiles) the jobs would make GEMMs of too few
rows, so V of all tiles is built first, the GEMMs are split over positions, then Y.
Jobs run on ``torch.get_num_threads()`` Python worker threads, torch held at one thread
meanwhile: a job's V and M stay in its core's caches, and no OpenMP pool spins while
another waits (torch's pool spins after each parallel region, which made alternating
torch and Numba parallel regions 3-10x slower on 2 cores). CUDA, complex and other
dtypes take the torch-op path (:func:`_torch_conv`: unfold views, matmuls, one bmm).

Zero padding is fused (``FUSED_ZERO_PADDING``): the input arrives unpadded with
``spec.padding`` still to apply; tiles read zeros outside it.

Backward: the input gradient of a stride-1 3x3 correlation is a "full" correlation of the
output gradient (zero-padded by 2 on each side) with the kernel rotated by 180 degrees
and its in/out channels swapped, again a 3x3 stride-1 correlation, so it runs through the
same Winograd forward; the input's own padding crops that, so grad_out is zero-padded by
``2 - pad`` per side (negative: cropped). The weight gradient is the adjoint of the
forward in U: ``dU[p] = sum_tiles (A dY A^T)[p]^T (B^T d B)[p]`` (one GEMM per position
with the tiles as the inner dimension), then ``dW = G^T dU G``: 4x fewer multiplications
than im2col's GEMM with F(4,3). The torch-op path uses im2col.grad_weight.

Accuracy: the transforms amplify rounding (B^T of F(4,3) has entries up to 5, G 1/24,
A^T up to 8). Measured max error / max |reference| on random normal data, float32 vs
float64 (padding 1): F(2,3) <= 5e-7; F(4,3) forward 2.6e-6 (C_in = 3) to 8.7e-6
(C_in = 256), input gradient <= 1.2e-5, weight gradient <= 6.6e-6 (torch's own float32
conv: 3e-7); float64 ~1e-14. All stay well inside the float32 tolerance 1e-4 that
dispatch requires, so F(4,3) is the default and F(2,3) is used where 2x2 tiles need
fewer products in total (tiny outputs).

Speed (``python benchmarks/run.py --only dense64,dense256``, 2 threads, float32, median,
on the shared 2-core Zen 4 machine while other jobs ran): dense64 (8, 64, 56, 56) forward
0.66x torch's F.conv2d time (0.70x channels_last), forward + backward 0.70x (0.77x);
dense256 (8, 256, 14, 14) forward 0.76x (0.77x), forward + backward 0.87x (0.87x). The
transform-domain GEMMs (torch.bmm, MKL) are 60-70% of the time; the rest is the NHWC
copy of x, U, and the transforms.
"""

from __future__ import annotations

from fractions import Fraction
from math import lcm

import torch
import torch.nn.functional as F

from . import im2col
from ._common import LazyModule, counts

_k = LazyModule(__package__ + "._winograd_kernels")   # Numba: loaded on first use
_COMPILED_DTYPES = (torch.float32, torch.float64)     # the compiled transforms' dtypes

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
COMPILED = True            # Numba kernels, compiled on first use (convforge._compile)
FUSED_ZERO_PADDING = True   # handed the unpadded input and spec.padding for zeros


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


def _kron_g(m, dtype, device):
    """(alpha^2, 9): row (p, q), column (i, j) is G[p, i] G[q, j], so vec(U) = K vec(g)."""
    g = torch.tensor(TABLES[m]["G"], dtype=torch.float64)
    return torch.kron(g, g).to(dtype=dtype, device=device)


def transform_weight(w, groups: int, m: int):
    """U = G g G^T for every (out, in) pair: ``(alpha^2, G, Og, Cg)``.

    Example:
        >>> transform_weight(torch.ones(4, 2, 3, 3), 2, 4).shape
        torch.Size([36, 2, 2, 2])
    """
    c_out, cg = w.shape[:2]
    a = m + 2
    u = _kron_g(m, w.dtype, w.device) @ w.reshape(c_out * cg, 9).t()    # (a*a, O*Cg)
    return u.view(a * a, groups, c_out // groups, cg)


def _fast(*ts) -> bool:
    """Whether the compiled CPU transforms apply (real float32/float64 on the CPU)."""
    return all(t.device.type == "cpu" and t.dtype in _COMPILED_DTYPES for t in ts)


def winograd_conv(x, w, groups: int = 1, m: int = 4, padding=(0, 0, 0, 0)):
    """3x3 stride-1 correlation of ``x`` zero-padded by ``padding`` by Winograd F(m x m, 3 x 3).

    Args:
        x: ``(N, C_in, H, W)``, real or complex, any strides, any device.
        w: ``(C_out, C_in / groups, 3, 3)``.
        groups: channel groups.
        m: 2 for F(2x2, 3x3) or 4 for F(4x4, 3x3).
        padding: zeros ``(top, bottom, left, right)``; negative values crop.

    Returns:
        ``(N, C_out, H + top + bottom - 2, W + left + right - 2)``.

    Raises:
        ValueError: m is not 2 or 4, or the kernel is not 3x3.

    Example:
        >>> x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3)
        >>> y = winograd_conv(x, w, m=4, padding=(1, 1, 0, 2))
        >>> torch.allclose(y, F.conv2d(F.pad(x, (0, 2, 1, 1)), w), atol=1e-4)
        True
    """
    if m not in TABLES:
        raise ValueError(f"winograd_conv: m must be 2 or 4, but got {m}")
    if tuple(w.shape[-2:]) != (3, 3):
        raise ValueError(f"winograd_conv: kernel must be 3x3, but got {tuple(w.shape[-2:])}")
    if _fast(x, w):
        return _k.conv(x, w, groups, m, tuple(padding))
    top, bottom, left, right = padding
    if any(padding):
        x = F.pad(x, (left, right, top, bottom))
    return _torch_conv(x, w, groups, m)


def _torch_conv(x, w, groups, m):
    """Valid correlation by torch ops on views (CUDA, complex, other dtypes)."""
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



# --------------------------------------------------------------------------------------
# compiled CPU path: one pass in, one batched GEMM, one pass out (per chunk of samples)
# --------------------------------------------------------------------------------------


def _compiled_du(x, gy, groups, pads, m):
    """dU[p] = sum over tiles of (A dY A^T)[p]^T (B^T d B)[p]: ``(alpha^2, G, Og, Cg)``.

    Small dU (few channels): jobs over rows of tiles, each transforming its tiles and
    adding its GEMMs into its own partial dU. Large dU: first the transforms of all tiles
    (parallel over rows of tiles), then one GEMM per position over every tile (parallel
    over positions), with no partial sums to add.
    """
    n, c = x.shape[:2]
    c_out, oh, ow = gy.shape[1:]
    top, _, left, _ = pads
    a, th, tw = m + 2, -(-oh // m), -(-ow // m)
    og, cg = c_out // groups, c // groups
    kin, _, kgrad, _ = _k.KINDS[m]
    xa, ga = _k._nhwc(x), _k._nhwc(gy, "g")
    tile_bytes = a * a * (c + c_out) * x.element_size()
    rows = n * th

    def grads(v, g):                                                   # (P, G, Og, Cg)
        p, t = v.shape[:2]
        return torch.matmul(torch.from_numpy(g).view(p, t, groups, og).permute(0, 2, 3, 1),
                            torch.from_numpy(v).view(p, t, groups, cg).transpose(1, 2))

    if a * a * c_out * cg * x.element_size() * 4 <= _k._JOB_BYTES:
        def job(r0, r1):
            t = (r1 - r0) * tw
            v = _k._scratch("v", (a * a, t, c), x.dtype)
            g = _k._scratch("m", (a * a, t, c_out), x.dtype)
            _k.tiles_in(xa, kin, a, m, top, left, th, tw, v, r0, r1, r0)
            _k.tiles_in(ga, kgrad, m, m, 0, 0, th, tw, g, r0, r1, r0)
            return grads(v, g)
        du = sum(_k._run_jobs(job, rows, tw, tile_bytes))
    else:
        t_all = rows * tw
        v = _k._scratch("v", (a * a, t_all, c), x.dtype)
        g = _k._scratch("m", (a * a, t_all, c_out), x.dtype)

        def transforms(r0, r1):
            _k.tiles_in(xa, kin, a, m, top, left, th, tw, v, r0, r1, 0)
            _k.tiles_in(ga, kgrad, m, m, 0, 0, th, tw, g, r0, r1, 0)
        _k._run_jobs(transforms, rows, tw, tile_bytes)
        du = torch.empty(a * a, groups, og, cg, dtype=x.dtype)

        def gemms(p0, p1):
            du[p0:p1] = grads(v[p0:p1], g[p0:p1])
        workers = _k._workers(a * a)
        _k._parallel(gemms, _k._spans(a * a, a * a, workers), workers)
    return du


def forward(x, w, spec):
    top, bottom, left, right = spec.padding
    oh, ow = x.shape[-2] + top + bottom - 2, x.shape[-1] + left + right - 2
    return winograd_conv(x, w, spec.groups, tile_size(oh, ow), spec.padding)


def grad_input(grad_out, w, spec, x_shape):
    """dX (of the unpadded input) = full correlation of dY with the rotated kernel.

    The full correlation pads dY by 2 on every side; the input's own padding crops it,
    so dY is zero-padded by ``2 - pad`` per side (negative: cropped).
    """
    c_out, cg, kh, kw = w.shape
    g = spec.groups
    wt = w.flip(-2, -1).reshape(g, c_out // g, cg, kh, kw).transpose(1, 2)
    wt = wt.reshape(g * cg, c_out // g, kh, kw)                   # (C_in, Og, 3, 3)
    pads = tuple(2 - p for p in spec.padding)
    return winograd_conv(grad_out, wt, g, tile_size(*x_shape[-2:]), pads)


def grad_weight(x, grad_out, spec, w_shape):
    """dW by Winograd when compiled (``G^T [sum_tiles (A dY A^T) * (B^T d B)] G``), else im2col."""
    if _fast(x, grad_out):
        m = tile_size(*grad_out.shape[-2:])
        du = _compiled_du(x, grad_out, spec.groups, spec.padding, m)     # (P, G, Og, Cg)
        dw = _kron_g(m, x.dtype, x.device).t() @ du.reshape((m + 2) ** 2, -1)  # (9, O*Cg)
        return dw.t().reshape(w_shape)
    if any(spec.padding):
        top, bottom, left, right = spec.padding
        x, spec = F.pad(x, (left, right, top, bottom)), spec.after_padding()
    return im2col.grad_weight(x, grad_out, spec, w_shape)


def workspace_bytes(spec, dtype, pass_):
    """NHWC copies of the operands, and the transformed tiles of input and output
    (alpha^2 values per tile and channel, alpha = m + 2), for every tile at once at most
    (the compiled loops' per-thread scratch buffers, kept between calls)."""
    inp, _, out, weight = counts(spec)
    b = dtype.itemsize
    oh, ow = spec.out_h, spec.out_w
    if pass_ == "grad_input":
        oh, ow = spec.h, spec.w
    m = tile_size(oh, ow)
    a = m + 2
    tiles = spec.n * -(-oh // m) * -(-ow // m)
    return b * (inp + out + a * a * tiles * (spec.c_in + spec.c_out) + a * a * weight)


def cost(spec, dtype, device):
    """Estimated seconds for the forward pass: GEMM flops plus the values transformed.

    Compiled path (2 threads, float32, measured on the 2-core Zen 4 machine): GEMMs at
    ~140 GFLOP/s, ~0.18 ns per value of V and M, 0.2 ns per input value (NHWC copy),
    0.3 ns per value of U, 0.3 us per tile (short channel vectors), 0.2 ms per call (the
    worker threads; measured under load, scaled). The torch-op path moves each
    transformed value about six times.
    """
    oh, ow = spec.out_h, spec.out_w
    m = tile_size(oh, ow)
    a2 = (m + 2) ** 2
    tiles = spec.n * -(-oh // m) * -(-ow // m)
    cg, og = spec.c_in // spec.groups, spec.c_out // spec.groups
    gemm = 2 * a2 * tiles * spec.groups * cg * og
    values = a2 * tiles * (spec.c_in + spec.c_out)
    if torch.device(device).type == "cpu" and dtype in _COMPILED_DTYPES:
        scale = 2.0 if dtype == torch.float64 else 1.0
        return scale * (gemm / 140e9 + values * 1.8e-10 + spec.n * spec.c_in * spec.h * spec.w
                        * 2e-10 + a2 * spec.c_out * cg * 3e-10 + tiles * 3e-7) + 2e-4
    return gemm / 200e9 + values * 4 * 3 / 8e9 + 4e-5
