"""Compiled Winograd transforms (Numba, CPU, float32/float64) and their driver: see
``winograd.py`` for the design.

Every transform is separable and runs along channel vectors (NHWC data, channels
innermost): :func:`_t1d` applies one 1D transform (a table of ``winograd.TABLES`` written
out) to up to six channel vectors of a 3D array, writing up to six of another, for a run
of positions, in loops with one source and one destination array (so LLVM vectorises
them; constants are in the data's dtype, since an int literal would promote float32 to
float64 and the loop would not vectorise). Each kernel works a whole row of tiles at a
time: one vertical pass over every column, then one horizontal pass per row of the tile.

* :func:`tiles_in` gathers tiles (zero padding fused: columns outside x stay zero, border
  rows come from a zero-padded stage) and writes ``L d L^T`` in the GEMM layout
  ``(alpha^2, tiles, C)``;
* :func:`tiles_out` applies ``A^T M A`` and writes the output rows into NHWC, cropped;
* :func:`filters_in` computes ``G g G^T`` as ``(alpha^2, C_in, C_out)``;
* :func:`to_nhwc` transposes an NCHW array, row by row.

The loops are serial and release the GIL (``nogil``); :func:`conv` and
``winograd._compiled_du`` run them in jobs on worker threads (``_parallel``), with per-thread
scratch buffers that live across calls (``_scratch``).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

DTYPES = (torch.float32, torch.float64)
#: bytes of transformed tiles (input and output) per job, and tiles per job at least (the
#: GEMMs of fewer tiles are slow: 36 x (32 x 256 @ 256 x 256) runs at 60 GFLOP/s,
#: 36 x (128 x 256 @ 256 x 256) at 78 on one Zen 4 core)
_JOB_BYTES = 8 << 20
_JOB_TILES = 64
#: forward with fewer tiles than this per worker: GEMMs split over positions, not tiles
_PHASE_TILES = 256

_FM = {"contract"}  # fused multiply-add only: sums keep IEEE order, NaN/Inf propagate


# 1D transforms of six channel vectors at once (one pass, loads and stores only once):
# the rows of the tables in winograd.py written out. Unused sources/destinations are dummies.
BT4, BT2, AT4, AT2, A4, A2, G4, G2 = 0, 1, 2, 3, 4, 5, 6, 7
#: per m: the kinds of the data, output, output-gradient and filter transforms
KINDS = {4: (BT4, AT4, A4, G4), 2: (BT2, AT2, A2, G2)}


@njit(cache=True, fastmath=_FM)
def _t1d(kind, s, si, sj0, ei, ej, d, di, dj0, fi, fj, cnt, ss, ds):
    """d[di + f fi, dj + f fj, :] = sum_e L[f, e] s[si + e ei, sj + e ej, :] (3D arrays),
    for cnt positions (sj, dj) = (sj0 + u ss, dj0 + u ds), u < cnt.

    One pass over channel vectors; one source and one destination array, so the loop
    vectorises (one alias check)."""
    c = d.shape[2]
    ft = d.dtype.type                          # constants in the data's precision:
    c2, c4, c5, c8 = ft(2), ft(4), ft(5), ft(8)  # an int literal would promote to float64
    c1_2, c1_4, c1_6, c1_12, c1_24 = ft(0.5), ft(0.25), ft(1 / 6), ft(1 / 12), ft(1 / 24)
    if kind == BT4:                            # B^T of F(4, 3): 6 -> 6
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                d0, d1, d2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                d3, d4 = s[si + 3 * ei, sj + 3 * ej, ch], s[si + 4 * ei, sj + 4 * ej, ch]
                d5 = s[si + 5 * ei, sj + 5 * ej, ch]
                d[di, dj, ch] = c4 * d0 - c5 * d2 + d4
                d[di + fi, dj + fj, ch] = c4 * (d1 + d2) - (d3 + d4)
                d[di + 2 * fi, dj + 2 * fj, ch] = c4 * (d2 - d1) + (d3 - d4)
                d[di + 3 * fi, dj + 3 * fj, ch] = c2 * (d3 - d1) + (d4 - d2)
                d[di + 4 * fi, dj + 4 * fj, ch] = c2 * (d1 - d3) + (d4 - d2)
                d[di + 5 * fi, dj + 5 * fj, ch] = c4 * d1 - c5 * d3 + d5
    elif kind == BT2:                          # B^T of F(2, 3): 4 -> 4
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                d0, d1, d2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                d3 = s[si + 3 * ei, sj + 3 * ej, ch]
                d[di, dj, ch] = d0 - d2
                d[di + fi, dj + fj, ch] = d1 + d2
                d[di + 2 * fi, dj + 2 * fj, ch] = d2 - d1
                d[di + 3 * fi, dj + 3 * fj, ch] = d3 - d1
    elif kind == AT4:                          # A^T of F(4, 3): 6 -> 4
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                m0, m1, m2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                m3, m4 = s[si + 3 * ei, sj + 3 * ej, ch], s[si + 4 * ei, sj + 4 * ej, ch]
                m5 = s[si + 5 * ei, sj + 5 * ej, ch]
                p, q, u, v = m1 + m2, m1 - m2, m3 + m4, m3 - m4
                d[di, dj, ch] = m0 + p + u
                d[di + fi, dj + fj, ch] = q + c2 * v
                d[di + 2 * fi, dj + 2 * fj, ch] = p + c4 * u
                d[di + 3 * fi, dj + 3 * fj, ch] = q + c8 * v + m5
    elif kind == AT2:                          # A^T of F(2, 3): 4 -> 2
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                m0, m1, m2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                m3 = s[si + 3 * ei, sj + 3 * ej, ch]
                d[di, dj, ch] = m0 + m1 + m2
                d[di + fi, dj + fj, ch] = m1 - m2 + m3
    elif kind == A4:                           # A = (A^T)^T of F(4, 3): 4 -> 6
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                g0, g1, g2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                g3 = s[si + 3 * ei, sj + 3 * ej, ch]
                e, f, u, v = g0 + g2, g1 + g3, g0 + c4 * g2, c2 * g1 + c8 * g3
                d[di, dj, ch] = g0
                d[di + fi, dj + fj, ch] = e + f
                d[di + 2 * fi, dj + 2 * fj, ch] = e - f
                d[di + 3 * fi, dj + 3 * fj, ch] = u + v
                d[di + 4 * fi, dj + 4 * fj, ch] = u - v
                d[di + 5 * fi, dj + 5 * fj, ch] = g3
    elif kind == G4:                           # G of F(4, 3): 3 -> 6
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                g0, g1, g2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                e, f = (g0 + g2) * c1_6, g1 * c1_6
                u, v = g0 * c1_24 + g2 * c1_6, g1 * c1_12
                d[di, dj, ch] = g0 * c1_4
                d[di + fi, dj + fj, ch] = e + f
                d[di + 2 * fi, dj + 2 * fj, ch] = e - f
                d[di + 3 * fi, dj + 3 * fj, ch] = u + v
                d[di + 4 * fi, dj + 4 * fj, ch] = u - v
                d[di + 5 * fi, dj + 5 * fj, ch] = g2
    elif kind == G2:                           # G of F(2, 3): 3 -> 4
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                g0, g1, g2 = s[si, sj, ch], s[si + ei, sj + ej, ch], s[si + 2 * ei, sj + 2 * ej, ch]
                e, f = (g0 + g2) * c1_2, g1 * c1_2
                d[di, dj, ch] = g0
                d[di + fi, dj + fj, ch] = e + f
                d[di + 2 * fi, dj + 2 * fj, ch] = e - f
                d[di + 3 * fi, dj + 3 * fj, ch] = g2
    else:                                      # A of F(2, 3): 2 -> 4
        for u in range(cnt):
            sj, dj = sj0 + u * ss, dj0 + u * ds
            for ch in range(c):
                g0, g1 = s[si, sj, ch], s[si + ei, sj + ej, ch]
                d[di, dj, ch] = g0
                d[di + fi, dj + fj, ch] = g0 + g1
                d[di + 2 * fi, dj + 2 * fj, ch] = g0 - g1
                d[di + 3 * fi, dj + 3 * fj, ch] = g1


@njit(nogil=True, cache=True, fastmath=_FM)
def tiles_in(x, kind, k, m, top, left, th, tw, out, task0, task1, obase):
    """out[p, t, c] = (L d L^T)[p] of channel c's tile t, for the rows of tiles task0..task1.

    Tile (n, ty, tx) starts at row m ty - top and column m tx - left of x[n]; rows of tiles
    are numbered n th + ty, and row task is tiles (task - obase) tw, ... of out.

    Args:
        x: (N, H, W, C) channels innermost, C-contiguous. kind: the 1D transform L
            (BT4, BT2, A4, A2) of k x k tiles, one every m rows and columns.
        top, left: zeros before row 0 and column 0 (negative: rows/columns skipped);
            zeros past the end too.
        th, tw: tiles per column and row. out: (alpha^2, tiles, C), C-contiguous.
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    a = m + 2
    wz = (tw - 1) * m + k                      # padded columns of one row of tiles
    j0, j1 = max(0, left), min(wz, left + w)   # those inside x
    z = np.zeros((a, wz, c), x.dtype)          # the row of tiles after the vertical pass
    rows = np.empty((k, w, c), x.dtype)        # its input rows, at the top/bottom borders
    for task in range(task0, task1):
        xn = x[task // th]
        r = m * (task % th) - top
        if j1 > j0:
            if 0 <= r and r + k <= h:
                src, si = xn, r
            else:
                for i in range(k):
                    if 0 <= r + i < h:
                        rows[i] = xn[r + i]
                    else:
                        rows[i] = 0
                src, si = rows, 0
            _t1d(kind, src, si, j0 - left, 1, 0, z, 0, j0, 1, 0, j1 - j0, 1, 1)
        base = (task - obase) * tw
        for pr in range(a):                    # horizontal pass, every tile of the row
            _t1d(kind, z, pr, 0, 0, 1, out, pr * a, base, 1, 0, tw, m, 1)


@njit(nogil=True, cache=True, fastmath=_FM)
def tiles_out(mm, kind, m, th, tw, y, task0, task1, obase):
    """y[n, m ty + i, m tx + j, o] = (R M R^T)[i, j] of mm[:, t, o], cropped.

    For the rows of tiles task0..task1, numbered in mm as in :func:`tiles_in`.

    Args:
        mm: (alpha^2, tiles, O), C-contiguous. kind: R (AT4 or AT2), m outputs.
        y: (N, oH, oW, O), C-contiguous; oH <= th m, oW <= tw m.
    """
    oh, ow, o = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    wb = np.empty((a, tw * m, o), mm.dtype)    # the row of tiles after the horizontal pass
    stage = np.empty((m, ow, o), mm.dtype)     # its output rows, cut by the bottom edge
    for task in range(task0, task1):
        yn = y[task // th]
        r = m * (task % th)
        base = (task - obase) * tw
        for pr in range(a):
            _t1d(kind, mm, pr * a, base, 1, 0, wb, pr, 0, 0, 1, tw, 1, m)
        if r + m <= oh:                        # vertical pass, every output column
            _t1d(kind, wb, 0, 0, 1, 0, yn, r, 0, 1, 0, ow, 1, 1)
        else:
            _t1d(kind, wb, 0, 0, 1, 0, stage, 0, 0, 1, 0, ow, 1, 1)
            for i in range(oh - r):
                yn[r + i] = stage[i]


@njit(nogil=True, cache=True, fastmath=_FM)
def filters_in(wt, kind, a, out, row0, row1):
    """out[p, c, o] = (G g G^T)[p] of the filter wt[c, :, :, o], for rows c in [row0, row1).

    Args:
        wt: (rows, 3, 3, O) filters with the output channel innermost, C-contiguous.
        kind: G (G4 or G2). out: (alpha^2, rows, O), C-contiguous.
    """
    z = np.empty((a, 3, wt.shape[3]), wt.dtype)
    for c in range(row0, row1):
        _t1d(kind, wt[c], 0, 0, 1, 0, z, 0, 0, 1, 0, 3, 1, 1)
        for pr in range(a):
            _t1d(kind, z, pr, 0, 0, 1, out, pr * a, c, 1, 0, 1, 0, 0)


@njit(nogil=True, cache=True)
def to_nhwc(x, out, row0, row1):
    """out[n, r, col, c] = x[n, c, r, col] for the image rows n H + r in [row0, row1).

    Args:
        x: (N, C, H, W), C-contiguous. out: (N, H, W, C), C-contiguous.
    """
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    c8 = c - c % 8
    for nr in range(row0, row1):               # 8 contiguous row reads, 8-wide writes
        ni, r = nr // h, nr % h
        orow = out[ni, r]
        for c0 in range(0, c8, 8):
            s0, s1, s2, s3 = x[ni, c0, r], x[ni, c0 + 1, r], x[ni, c0 + 2, r], x[ni, c0 + 3, r]
            s4, s5, s6, s7 = x[ni, c0 + 4, r], x[ni, c0 + 5, r], x[ni, c0 + 6, r], x[ni, c0 + 7, r]
            for col in range(w):
                o = orow[col]
                o[c0], o[c0 + 1], o[c0 + 2], o[c0 + 3] = s0[col], s1[col], s2[col], s3[col]
                o[c0 + 4], o[c0 + 5], o[c0 + 6], o[c0 + 7] = s4[col], s5[col], s6[col], s7[col]
        for ch in range(c8, c):
            s0 = x[ni, ch, r]
            for col in range(w):
                orow[col, ch] = s0[col]


# --------------------------------------------------------------------------------------
# the driver: one pass in, one batched GEMM, one pass out, per job of rows of tiles
# --------------------------------------------------------------------------------------

def _nhwc(t: torch.Tensor, name: str = "x") -> np.ndarray:
    """(N, C, H, W) tensor as a C-contiguous (N, H, W, C) array (free for channels_last).

    A contiguous NCHW tensor is transposed by a compiled loop on the worker threads
    (torch's copy runs at about 3 GB/s here); other layouts by torch.
    """
    t = t.detach()
    nhwc = t.permute(0, 2, 3, 1)
    if nhwc.is_contiguous() or not t.is_contiguous() or t.numel() < 1 << 16:
        return nhwc.contiguous().numpy()
    x = t.numpy()
    out = _scratch(name, tuple(nhwc.shape), t.dtype)
    rows = t.shape[0] * t.shape[2]
    workers = _workers(rows)
    _parallel(lambda r0, r1: to_nhwc(x, out, r0, r1), _spans(rows, rows, workers), workers)
    return out


def _empty(shape, dtype) -> np.ndarray:
    # NumPy reuses freed heap pages; fresh torch tensors of many MiB page-fault every call
    return np.empty(shape, np.float32 if dtype == torch.float32 else np.float64)


_SCRATCH = threading.local()
_SCRATCH_MAX_BYTES = 64 << 20


def _scratch(name: str, shape, dtype) -> np.ndarray:
    """A buffer of this thread that lives across calls (no page faults for V, M, NHWC x).

    Freshly allocated multi-MiB arrays cost a page fault per 4 KiB every call (about 1 ms
    per 7 MiB here). Only for arrays that do not outlive the call; at most 64 MiB each.
    """
    nd = np.float32 if dtype == torch.float32 else np.float64
    size = math.prod(shape)
    if size * np.dtype(nd).itemsize > _SCRATCH_MAX_BYTES:     # not kept: allocated per call
        return np.empty(shape, nd)
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    buf = bufs.get((name, nd))
    if buf is None or buf.size < size:
        buf = bufs[(name, nd)] = np.empty(size, nd)
    return buf[:size].reshape(shape)


_POOL: dict = {}           # the worker threads: {"pool", "pid", "active", "threads"}
_POOL_LOCK = threading.Lock()


def _workers(rows: int) -> int:
    """Threads for a job list: torch's thread count (as it was before any call held it)."""
    threads = _POOL["threads"] if _POOL.get("active") else torch.get_num_threads()
    return max(1, min(threads, rows))


def _spans(rows: int, per_job: int, workers: int) -> list:
    """[first, end) ranges of rows: about per_job rows each, a multiple of workers of them."""
    jobs = max(workers, -(-rows // max(1, per_job)))
    jobs = min(rows, -(-jobs // workers) * workers)
    step = -(-rows // jobs)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _single_threaded() -> None:
    """A worker's torch ops run on one thread. OpenMP's thread count is per calling thread:
    a worker left at the default would start its own team of OpenMP threads for every
    torch op, and those teams spin after each op beside torch's own -- measured here, a
    tiny conv on the main thread went from 6 to 46-70 us per call after winograd had
    run, for as long as the teams spun."""
    torch.set_num_threads(1)


def _parallel(fn, spans: list, workers: int) -> list:
    """fn(first, end) for every span, on ``workers`` threads, torch held at one thread.

    Each job runs single-threaded from start to end (transform, GEMM, inverse transform)
    on its own worker: no thread pool spins while another waits for the cores (torch's
    OpenMP threads spin after each parallel region), and a job's tiles stay in its caches.
    torch's thread count is process-wide: it is 1 while any call is inside (other Python
    threads' torch ops run single-threaded meanwhile) and restored by the last one out.
    """
    if workers == 1 or len(spans) == 1:
        return [fn(*sp) for sp in spans]
    with _POOL_LOCK:
        if (_POOL.get("pid") != os.getpid()                  # threads do not survive fork
                or _POOL["pool"]._max_workers < workers):
            _POOL.update(pool=ThreadPoolExecutor(workers, thread_name_prefix="convforge-wino",
                                                 initializer=_single_threaded),
                         pid=os.getpid(), active=0)
        pool = _POOL["pool"]
        if _POOL["active"] == 0:
            _POOL["threads"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _POOL["active"] += 1
    try:
        return list(pool.map(lambda sp: fn(*sp), spans))
    finally:
        with _POOL_LOCK:
            _POOL["active"] -= 1
            if _POOL["active"] == 0:
                torch.set_num_threads(_POOL["threads"])


def _run_jobs(fn, rows: int, tw: int, tile_bytes: int) -> list:
    """fn(first row of tiles, end row) over jobs of about _JOB_BYTES of tiles each."""
    workers = _workers(rows)
    per_job = max(_JOB_BYTES // max(tile_bytes * tw, 1), -(-_JOB_TILES // tw))
    return _parallel(fn, _spans(rows, per_job, workers), workers)


def filters(w, groups, m):
    """U = G g G^T as a (alpha^2, G * Cg, Og) tensor (output channels innermost)."""
    c_out, cg = w.shape[:2]
    og = c_out // groups
    wg = w.detach().reshape(groups, og, cg, 9)
    wt = _scratch("w", (groups, cg, 9, og), w.dtype)        # (G, Cg, 3 * 3, Og)
    if wg.is_contiguous():
        to_nhwc(wg.numpy(), wt, 0, groups * cg)
    else:
        wt[:] = wg.permute(0, 2, 3, 1).numpy()
    wt = wt.reshape(groups * cg, 3, 3, og)
    u = _scratch("u", ((m + 2) ** 2, groups * cg, og), w.dtype)
    kind = KINDS[m][3]
    workers = _workers(groups * cg if u.size > 1 << 16 else 1)

    def job(r0, r1):
        filters_in(wt, kind, m + 2, u, r0, r1)
    _parallel(job, _spans(groups * cg, groups * cg, workers), workers)
    return torch.from_numpy(u)


def conv(x, w, groups, m, pads):
    """winograd_conv for real float32/float64 CPU tensors (zero padding fused).

    Channels innermost everywhere: the transforms run along channel vectors and the GEMM is
    (T x C_in) @ (C_in x C_out) per position; the result is channels_last storage.
    """
    n, c, h, wd = x.shape
    c_out = w.shape[0]
    top, bottom, left, right = pads
    oh, ow = h + top + bottom - 2, wd + left + right - 2
    a, th, tw = m + 2, -(-oh // m), -(-ow // m)
    og, cg = c_out // groups, c // groups
    kin, kout = KINDS[m][:2]
    u = filters(w, groups, m)                          # (P, G*Cg, Og)
    xa = _nhwc(x)
    y = _empty((n, oh, ow, c_out), x.dtype)

    def gemm(v, prod, up):                             # (p, t, C) @ (p, C, O) -> (p, t, O)
        p, t = v.shape[:2]
        vt, pt = torch.from_numpy(v), torch.from_numpy(prod)
        if groups == 1:
            torch.bmm(vt, up, out=pt)
        else:
            pg = torch.matmul(vt.view(p, t, groups, cg).transpose(1, 2),
                              up.view(p, groups, cg, og))
            pt.view(p, t, groups, og).copy_(pg.transpose(1, 2))

    def job(r0, r1):
        t = (r1 - r0) * tw
        v = _scratch("v", (a * a, t, c), x.dtype)
        tiles_in(xa, kin, a, m, top, left, th, tw, v, r0, r1, r0)
        prod = _scratch("m", (a * a, t, c_out), x.dtype)
        gemm(v, prod, u)
        tiles_out(prod, kout, m, th, tw, y, r0, r1, r0)

    rows, tile_bytes = n * th, a * a * (c + c_out) * x.element_size()
    workers = _workers(rows)
    if (workers > 1 and rows * tw < _PHASE_TILES * workers
            and rows * tw * tile_bytes <= _SCRATCH_MAX_BYTES):
        # few tiles: jobs would make GEMMs of too few rows; transform all tiles, split the
        # GEMMs over positions, then transform back (V and M stay in the shared L3)
        t_all = rows * tw
        v = _scratch("v", (a * a, t_all, c), x.dtype)
        prod = _scratch("m", (a * a, t_all, c_out), x.dtype)
        _run_jobs(lambda r0, r1: tiles_in(xa, kin, a, m, top, left, th, tw, v, r0, r1, 0),
                  rows, tw, tile_bytes)

        def gemms(p0, p1):
            gemm(v[p0:p1], prod[p0:p1], u[p0:p1])
        _parallel(gemms, _spans(a * a, a * a, _workers(a * a)), _workers(a * a))
        _run_jobs(lambda r0, r1: tiles_out(prod, kout, m, th, tw, y, r0, r1, 0),
                  rows, tw, tile_bytes)
    else:
        _run_jobs(job, rows, tw, tile_bytes)
    return torch.from_numpy(y).permute(0, 3, 1, 2)
