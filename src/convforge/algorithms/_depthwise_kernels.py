"""The compiled loops of ``depthwise`` (see ``depthwise.py`` for the design).

Every array argument is a flat (1D) C-contiguous NumPy array; every loop writes its output
in place. Two habits keep Numba's code fast here:

* indices are cast to unsigned (``_U``) before indexing: a signed index carries a
  wrap-around test (``i < 0: i += n``) that stops LLVM from vectorising the loop (a plane
  copy ran 3.5x slower);
* no array views are made inside the task loop: each view is a reference count updated
  atomically on the parent array, shared by every thread (cache-line ping-pong between
  the cores); the arrays stay flat and the loops compute offsets.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._direct_kernels import _FM_DOT, _FM_FWD
from ._threads import parallel_kernel

_U = np.uintp
#: elements of one flat run processed through every tap before the next (stays in L1)
_SEGMENT = 4096


@njit(cache=True, fastmath=_FM_DOT, inline="always")
def _fill(buf, base, src, sbase, h, w, top, left, uh, uw, sh, sw, hp, wp, phase, wq):
    """Scatter the (h, w) plane at ``src[sbase:]`` into ``buf[base:]`` as its zero-padded,
    spread, phase-split image: source (y, x) lands at padded (py, px) = (top + y uh,
    left + x uw); padded row py belongs to phase row py % sh at py // sh (columns likewise),
    phase (a, b) starting ``(a sw + b) phase`` after ``base`` (phase blocks are ``phase``
    apart, so the images of several planes can share them). Positions outside [0, hp) x
    [0, wp) are dropped (negative padding crops); spread and phases are not combined
    (``uw > 1`` only with ``sw == 1``). Only the source positions are written: the rest
    of ``buf`` keeps its zeros. Returns ``sum(src * 0)``: NaN iff the plane holds a NaN or
    an infinity (reassociated: vectorised)."""
    probe = src.dtype.type(0)
    zero = src.dtype.type(0)
    y0 = 0 if top >= 0 else (-top + uh - 1) // uh
    x0 = 0 if left >= 0 else (-left + uw - 1) // uw
    y1 = min(h, (hp - 1 - top) // uh + 1) if hp - 1 - top >= 0 else 0
    x1 = min(w, (wp - 1 - left) // uw + 1) if wp - 1 - left >= 0 else 0
    if x1 <= x0:
        return probe
    if sh == 1 and sw == 1 and uh == 1 and uw == 1:     # no phases, no spread: no divisions
        for y in range(y0, y1):
            d = base + (top + y) * wq + left
            s = sbase + y * w
            for x in range(x0, x1):
                v = src[_U(s + x)]
                buf[_U(d + x)] = v
                probe += v * zero
        return probe
    for y in range(y0, y1):
        py = top + y * uh
        row = base + (py % sh) * sw * phase + (py // sh) * wq
        s = sbase + y * w
        if sw == 1 and uw == 1:
            d = row + left
            for x in range(x0, x1):
                v = src[_U(s + x)]
                buf[_U(d + x)] = v
                probe += v * zero
        elif sw == 1:                                   # spread columns: strided stores
            d = row + left
            for x in range(x0, x1):
                v = src[_U(s + x)]
                buf[_U(d + x * uw)] = v
                probe += v * zero
        else:                       # column phases (uw = 1): each phase reads every sw-th
            for b in range(sw):
                xb = x0 + (b - (left + x0) % sw) % sw       # first x in phase b
                d = row + b * phase + (left + xb) // sw
                for k in range((x1 - xb + sw - 1) // sw):
                    v = src[_U(s + xb + k * sw)]
                    buf[_U(d + k)] = v
                    probe += v * zero
    return probe


@njit(cache=True, fastmath=_FM_FWD, inline="always")
def _taps(acc, buf, offs, wts, wbase, start, length, first):
    """acc[start + x] (+)= sum_t wts[wbase + t] buf[start + offs[t] + x] for x < length:
    eight taps per pass (then four, then one), one load of acc per pass."""
    nt = offs.shape[0]
    t = 0
    while t < nt:
        init = first and t == 0
        if nt - t >= 8:
            w0, w1, w2, w3 = wts[wbase + t], wts[wbase + t + 1], wts[wbase + t + 2], \
                wts[wbase + t + 3]
            w4, w5, w6, w7 = wts[wbase + t + 4], wts[wbase + t + 5], wts[wbase + t + 6], \
                wts[wbase + t + 7]
            b0, b1, b2, b3 = start + offs[t], start + offs[t + 1], start + offs[t + 2], \
                start + offs[t + 3]
            b4, b5, b6, b7 = start + offs[t + 4], start + offs[t + 5], start + offs[t + 6], \
                start + offs[t + 7]
            for x in range(length):
                s = ((w0 * buf[_U(b0 + x)] + w1 * buf[_U(b1 + x)])
                     + (w2 * buf[_U(b2 + x)] + w3 * buf[_U(b3 + x)])) \
                    + ((w4 * buf[_U(b4 + x)] + w5 * buf[_U(b5 + x)])
                       + (w6 * buf[_U(b6 + x)] + w7 * buf[_U(b7 + x)]))
                if init:
                    acc[_U(start + x)] = s
                else:
                    acc[_U(start + x)] += s
            t += 8
        elif nt - t >= 4:
            w0, w1, w2, w3 = wts[wbase + t], wts[wbase + t + 1], wts[wbase + t + 2], \
                wts[wbase + t + 3]
            b0, b1, b2, b3 = start + offs[t], start + offs[t + 1], start + offs[t + 2], \
                start + offs[t + 3]
            for x in range(length):
                s = (w0 * buf[_U(b0 + x)] + w1 * buf[_U(b1 + x)]) \
                    + (w2 * buf[_U(b2 + x)] + w3 * buf[_U(b3 + x)])
                if init:
                    acc[_U(start + x)] = s
                else:
                    acc[_U(start + x)] += s
            t += 4
        else:
            w0 = wts[wbase + t]
            b0 = start + offs[t]
            for x in range(length):
                s = w0 * buf[_U(b0 + x)]
                if init:
                    acc[_U(start + x)] = s
                else:
                    acc[_U(start + x)] += s
            t += 1


@njit(cache=True)
def _max(offs):
    m = 0
    for t in range(offs.shape[0]):
        m = max(m, offs[t])
    return m


@parallel_kernel(fastmath=_FM_FWD)
def forward_kernel(x, w, bias, out, shape, top, left, uh, uw, sh, sw, hp, wp, hq, wq, offs,
                   div, mul, reps, stack, chunk):
    """out[n, o] = bias[o] + sum_{k < reps} correlate(phase image of x[n, (o // div) mul + k],
    w[o k]).

    ``shape`` is ``(N, C_src, H, W, C_out, oH, oW)`` of the flat ``x`` and ``out``. The
    forward pass is ``div = m`` (channel multiplier), ``mul = 1``, ``reps = 1``; the input
    gradient (this loop on the spread gradient with flipped weights) is ``div = 1``,
    ``mul = reps = m``. ``w`` is ``(C_out * reps, T)`` flat. Tasks are (output channel,
    chunk of ``chunk`` samples); ``stack`` samples' images lie one after another in each
    phase block (``stack hq wq`` long; ``offs`` counts in those blocks), so one flat run
    covers them all.
    """
    n, c_src, h, wd, c_out, oh, ow = shape
    ntap = offs.shape[0]
    pitch = hq * wq
    phase = stack * pitch
    run = (stack - 1) * pitch + oh * wq
    size = sh * sw * phase + _max(offs) + 64
    nchunk = (n + chunk - 1) // chunk
    for task in prange(c_out * nchunk):
        o = task // nchunk
        n0 = (task % nchunk) * chunk
        n1 = min(n, n0 + chunk)
        buf = np.zeros(size, x.dtype)
        acc = np.empty(run + 16, x.dtype)
        for g0 in range(n0, n1, stack):
            g1 = min(n1, g0 + stack)
            length = (g1 - g0 - 1) * pitch + oh * wq
            for k in range(reps):
                src = (o // div) * mul + k
                for ni in range(g0, g1):
                    _fill(buf, (ni - g0) * pitch, x, (ni * c_src + src) * h * wd, h, wd, top,
                          left, uh, uw, sh, sw, hp, wp, phase, wq)
                for s0 in range(0, length, _SEGMENT):
                    _taps(acc, buf, offs, w, (o * reps + k) * ntap, s0,
                          min(_SEGMENT, length - s0), k == 0)
            b = bias[o]
            for ni in range(g0, g1):
                dst = (ni * c_out + o) * oh * ow
                for y in range(oh):
                    a = (ni - g0) * pitch + y * wq
                    d = dst + y * ow
                    for xx in range(ow):
                        out[_U(d + xx)] = acc[_U(a + xx)] + b


@parallel_kernel(fastmath=_FM_DOT)
def grad_weight_kernel(x, g, partial, shape, top, left, sh, sw, hp, wp, hq, wq, offs, kw, dh,
                       dw, div, stack, nchunk):
    """partial[o, chunk, t] = sum over the chunk's samples of the dot product of g[n, o]
    with the input plane x[n, o // div] read at tap t (offset ``offs[t]`` in the phase
    image); ``shape`` is ``(N, C_in, H, W, C_out, oH, oW)`` of the flat ``x`` and ``g``.

    The gradient rows are laid out ``wq`` apart with zero tails, so each tap is one long
    dot product; a block whose input holds NaN or infinity is summed over the valid
    positions only (``0 * inf`` must not enter a sum that torch does not form). Sums start
    from their first term, so Inf and NaN in the gradient propagate as in a plain sum.
    """
    n, c_in, h, wd, c_out, oh, ow = shape
    ntap = offs.shape[0]
    pitch = hq * wq
    phase = stack * pitch
    size = sh * sw * phase + _max(offs) + 64
    chunk = (n + nchunk - 1) // nchunk
    for task in prange(c_out * nchunk):
        o = task // nchunk
        ci = task % nchunk
        n0 = ci * chunk
        n1 = min(n, n0 + chunk)
        buf = np.zeros(size, x.dtype)
        gbuf = np.zeros(phase + 16, x.dtype)
        pbase = (o * nchunk + ci) * ntap
        for g0 in range(n0, n1, stack):
            g1 = min(n1, g0 + stack)
            probe = x.dtype.type(0)
            for ni in range(g0, g1):
                probe += _fill(buf, (ni - g0) * pitch, x, (ni * c_in + o // div) * h * wd, h,
                               wd, top, left, 1, 1, sh, sw, hp, wp, phase, wq)
                _fill(gbuf, (ni - g0) * pitch, g, (ni * c_out + o) * oh * ow, oh, ow, 0, 0,
                      1, 1, 1, 1, oh, wq, phase, wq)
            length = (g1 - g0 - 1) * pitch + oh * wq
            if probe == probe:               # all finite: one flat dot product per tap
                for t in range(ntap):
                    b = offs[t]
                    s = gbuf[0] * buf[_U(b)]
                    for p in range(1, length):
                        s += gbuf[_U(p)] * buf[_U(b + p)]
                    partial[_U(pbase + t)] += s
            else:                            # valid positions only, on the plain layout
                for t in range(ntap):
                    i, j = t // kw, t % kw
                    s = x.dtype.type(0)
                    for ni in range(g0, g1):
                        xb = (ni * c_in + o // div) * h * wd
                        gb = (ni * c_out + o) * oh * ow
                        for y in range(oh):
                            py = y * sh + i * dh - top
                            if 0 <= py < h:
                                for xx in range(ow):
                                    px = xx * sw + j * dw - left
                                    if 0 <= px < wd:
                                        s += g[_U(gb + y * ow + xx)] * x[_U(xb + py * wd + px)]
                    partial[_U(pbase + t)] += s


# ---- 3D (convforge.conv3d's depthwise path, ``convforge/algorithms/_depthwise3d.py``):
# one task per (sample, output channel) zero-pads its input volume into a scratch block;
# the volume is then one flat run, tap (a, b, c) at offset ``(a dD Hp + b dH) Wp + c dW``
# (stride 1). ``geo`` is ``(N, C_in, D, H, W, C_out, oD, oH, oW, Hp, Wp, front, top,
# left, div)``: output channel o reads input channel o // div.


@njit(cache=True, fastmath=_FM_DOT, inline="always")
def _fill3d(buf, x, sbase, d, h, wd, hp, wp, front, top, left):
    """Copy the (d, h, w) volume at ``x[sbase:]`` into the zeroed ``buf`` at (front, top,
    left) of a (., hp, wp) block."""
    for z in range(d):
        for y in range(h):
            dst = ((front + z) * hp + top + y) * wp + left
            src = sbase + (z * h + y) * wd
            for i in range(wd):
                buf[_U(dst + i)] = x[_U(src + i)]


@parallel_kernel(fastmath=_FM_FWD)
def forward3d_kernel(x, w, bias, out, geo, offs, size):
    """out[n, o] = bias[o] + correlate(zero-padded x[n, o // div], w[o]) (stride 1)."""
    n, c_in, d, h, wd, c_out, od, oh, ow, hp, wp, front, top, left, div = geo
    ntap = offs.shape[0]
    run = ((od - 1) * hp + oh - 1) * wp + ow
    for task in prange(n * c_out):
        ni = task // c_out
        o = task % c_out
        buf = np.zeros(size, x.dtype)
        acc = np.empty(run + 16, x.dtype)
        _fill3d(buf, x, (ni * c_in + o // div) * d * h * wd, d, h, wd, hp, wp, front, top,
                left)
        for s0 in range(0, run, _SEGMENT):
            _taps(acc, buf, offs, w, o * ntap, s0, min(_SEGMENT, run - s0), True)
        b = bias[o]
        base = task * od * oh * ow
        for z in range(od):
            for y in range(oh):
                a = (z * hp + y) * wp
                dst = base + (z * oh + y) * ow
                for i in range(ow):
                    out[_U(dst + i)] = acc[_U(a + i)] + b


@parallel_kernel(fastmath=_FM_DOT)
def grad_weight3d_kernel(x, g, partial, geo, offs, size):
    """partial[n, o, t] = sum over the output positions p of g[n, o, p] times the padded
    x[n, o // div] at p + offs[t]: valid positions only (no product torch does not
    form, so NaN and infinity propagate as in torch's sums)."""
    n, c_in, d, h, wd, c_out, od, oh, ow, hp, wp, front, top, left, div = geo
    ntap = offs.shape[0]
    for task in prange(n * c_out):
        ni = task // c_out
        o = task % c_out
        buf = np.zeros(size, x.dtype)
        sums = np.zeros(ntap, x.dtype)
        _fill3d(buf, x, (ni * c_in + o // div) * d * h * wd, d, h, wd, hp, wp, front, top,
                left)
        gbase = task * od * oh * ow
        for z in range(od):
            for y in range(oh):
                grow = gbase + (z * oh + y) * ow
                brow = (z * hp + y) * wp
                for t in range(ntap):
                    s = x.dtype.type(0)
                    start = brow + offs[t]
                    for i in range(ow):
                        s += g[_U(grow + i)] * buf[_U(start + i)]
                    sums[t] += s
        for t in range(ntap):
            partial[_U(task * ntap + t)] = sums[t]
