"""Compiled stride-1 loops of ``direct`` with zero padding fused in (see ``direct.py``).

Short rows (shorter than ``_FLAT_MAX_WIDTH``): a task fills a scratch block with the
zero-padded input rows it reads -- every input channel of its group, one after the other --
so no padded copy of the whole input is made, and the block stays in cache while all its
taps and output channels are computed:

* forward (and ``grad_input``, a forward pass of the gradient): the taps of every channel
  form one list (offset ``c * block + i dH Wp + j dW``), summed 8 at a time into a flat run
  of the block's output rows laid out ``Wp`` apart, two output channels per pass; the
  ``kW - 1`` columns past each row end are computed and dropped;
* ``grad_weight``: per input channel and chunk of samples, the padded input block is
  filled once and dotted with the gradient rows of the output channels of its group, two
  at a time, laid out ``Wp`` apart with zero tails (one long dot product per tap). A zero
  tail meets real input columns, so a block holding Inf or NaN is done row by row instead
  (``0 * inf`` must not enter a sum that torch does not form).

Long rows, ``(kW - 1) dW <= 4``: ``_forward_border_kernel`` reads x in place.

Every array argument is a C-contiguous NumPy array; every loop writes its output in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._direct_kernels import (
    _FM_DOT,
    _FM_FWD,
    _all_finite,
    _correlate_run,
    _correlate_run2,
    _dots,
    _fill_block,
    _tap_offsets,
)
from ._threads import parallel_kernel


@njit(cache=True, fastmath=_FM_DOT)
def _dots2(acc0, acc1, g0, g1, a, offs, length):
    """acc0[t] += sum_x g0[x] a[offs[t] + x], acc1[t] likewise with g1: each input load
    feeds two output channels (8, then 1, taps per pass; sums start from their first term
    so that Inf and NaN propagate as in a plain sum)."""
    nt = offs.shape[0]
    t = 0
    while nt - t >= 8:
        p0, p1, p2, p3 = a[offs[t]:], a[offs[t + 1]:], a[offs[t + 2]:], a[offs[t + 3]:]
        p4, p5, p6, p7 = a[offs[t + 4]:], a[offs[t + 5]:], a[offs[t + 6]:], a[offs[t + 7]:]
        g, h = g0[0], g1[0]
        s0, s1, s2, s3 = g * p0[0], g * p1[0], g * p2[0], g * p3[0]
        s4, s5, s6, s7 = g * p4[0], g * p5[0], g * p6[0], g * p7[0]
        r0, r1, r2, r3 = h * p0[0], h * p1[0], h * p2[0], h * p3[0]
        r4, r5, r6, r7 = h * p4[0], h * p5[0], h * p6[0], h * p7[0]
        for x in range(1, length):
            g, h = g0[x], g1[x]
            q0, q1, q2, q3 = p0[x], p1[x], p2[x], p3[x]
            q4, q5, q6, q7 = p4[x], p5[x], p6[x], p7[x]
            s0 += g * q0
            s1 += g * q1
            s2 += g * q2
            s3 += g * q3
            s4 += g * q4
            s5 += g * q5
            s6 += g * q6
            s7 += g * q7
            r0 += h * q0
            r1 += h * q1
            r2 += h * q2
            r3 += h * q3
            r4 += h * q4
            r5 += h * q5
            r6 += h * q6
            r7 += h * q7
        acc0[t] += s0
        acc0[t + 1] += s1
        acc0[t + 2] += s2
        acc0[t + 3] += s3
        acc0[t + 4] += s4
        acc0[t + 5] += s5
        acc0[t + 6] += s6
        acc0[t + 7] += s7
        acc1[t] += r0
        acc1[t + 1] += r1
        acc1[t + 2] += r2
        acc1[t + 3] += r3
        acc1[t + 4] += r4
        acc1[t + 5] += r5
        acc1[t + 6] += r6
        acc1[t + 7] += r7
        t += 8
    while t < nt:
        p0 = a[offs[t]:]
        s0, r0 = g0[0] * p0[0], g1[0] * p0[0]
        for x in range(1, length):
            s0 += g0[x] * p0[x]
            r0 += g1[x] * p0[x]
        acc0[t] += s0
        acc1[t] += r0
        t += 1


@njit(cache=True)
def _channel_offsets(cg, kh, kw, dh, dw, block, wp):
    """Offsets of the taps (c, i, j) in a block of cg channels, ``block`` elements each."""
    ntap = kh * kw
    offs = np.empty(cg * ntap, np.int64)
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                offs[c * ntap + i * kw + j] = c * block + i * dh * wp + j * dw
    return offs


@parallel_kernel(fastmath=_FM_FWD)
def _forward_flat_kernel(x, w, out, top, left, dh, dw, groups, rows, ochunk):
    """out = stride-1 correlation of x zero-padded by `top` rows and `left` columns.

    Tasks are (n, group, chunk of `ochunk` output channels, block of `rows` output rows).
    """
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = c_out // groups
    wp = ow + (kw - 1) * dw                               # padded columns read
    nr = rows + (kh - 1) * dh                             # padded rows a block reads
    block = nr * wp
    offs = _channel_offsets(cg, kh, kw, dh, dw, block, wp)
    xf = x.reshape((n * c_in, h * wd))
    of = out.reshape((n * c_out, oh * ow))
    wf = w.reshape((c_out, cg * kh * kw))
    nblk = (oh + rows - 1) // rows
    nch = (og + ochunk - 1) // ochunk
    for task in prange(n * groups * nch * nblk):
        b = task % nblk
        q = task // nblk
        k = q % nch
        q //= nch
        grp = q % groups
        ni = q // groups
        y0 = b * rows
        y1 = min(oh, y0 + rows)
        length = (y1 - y0 - 1) * wp + ow
        buf = np.empty(cg * block, x.dtype)
        acc = np.empty(2 * length, x.dtype)
        for c in range(cg):
            _fill_block(buf[c * block:(c + 1) * block], xf[ni * c_in + grp * cg + c], y0, nr,
                        1, h, wd, wp, top, left)
        o = grp * og + k * ochunk
        o_end = grp * og + min(og, (k + 1) * ochunk)
        while o < o_end:
            two = o + 1 < o_end                           # a pair shares every input load
            if two:
                _correlate_run2(acc[:length], acc[length:], buf, 0, offs, wf[o], wf[o + 1],
                                length, True)
            else:
                _correlate_run(acc, buf, 0, offs, wf[o], length, True)
            for e in range(2 if two else 1):
                p = ni * c_out + o + e
                for r in range(y1 - y0):
                    of[p, (y0 + r) * ow:(y0 + r + 1) * ow] = acc[e * length + r * wp:
                                                                 e * length + r * wp + ow]
            o += 2 if two else 1





@parallel_kernel(fastmath=_FM_FWD)
def _forward_flat_rows2_kernel(x, w, out, top, left, dw, groups, rows):
    """``_forward_flat_kernel`` for one output channel per task and dH = 1: output rows in
    pairs (2r, 2r + 1), every input load feeding both (``_correlate_run2``).

    A task's padded input rows are two planes per channel, even rows then odd rows, so
    both outputs of a pair are flat runs: input row 2r + d is row r + d // 2 of plane
    d % 2. Input rows 0 .. kH feed the pair, row 0 with weight 0 for the odd output and
    row kH with weight 0 for the even one -- exact only for finite inputs (0 * inf is
    NaN), so a block holding Inf or NaN sums the two outputs' own taps apart.
    """
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = c_out // groups
    wp = ow + (kw - 1) * dw
    nrh = (rows + 1) // 2 + kh // 2                       # rows of each plane
    pb = nrh * wp
    nt = cg * kh * kw
    offs = np.empty(nt + cg * kw, np.int64)               # input rows 0 .. kH
    w0 = np.zeros((c_out, nt + cg * kw), x.dtype)
    w1 = np.zeros((c_out, nt + cg * kw), x.dtype)
    offs0 = np.empty(nt, np.int64)                        # rows 0 .. kH - 1: even outputs
    offs1 = np.empty(nt, np.int64)                        # rows 1 .. kH: odd outputs
    for c in range(cg):
        for d in range(kh + 1):
            for j in range(kw):
                e = (c * (kh + 1) + d) * kw + j
                offs[e] = 2 * c * pb + (d % 2) * pb + (d // 2) * wp + j * dw
                if d < kh:
                    w0[:, e] = w[:, c, d, j]
                    offs0[(c * kh + d) * kw + j] = offs[e]
                if d > 0:
                    w1[:, e] = w[:, c, d - 1, j]
                    offs1[(c * kh + d - 1) * kw + j] = offs[e]
    wf = w.reshape((c_out, nt))
    xf = x.reshape((n * c_in, h * wd))
    of = out.reshape((n * c_out, oh * ow))
    nblk = (oh + rows - 1) // rows
    for task in prange(n * c_out * nblk):
        b = task % nblk
        p = task // nblk                                  # n * C_out + o
        o = p % c_out
        first = (p // c_out) * c_in + (o // og) * cg
        y0 = b * rows
        y1 = min(oh, y0 + rows)
        length = ((y1 - y0 + 1) // 2 - 1) * wp + ow
        buf = np.empty(2 * cg * pb, x.dtype)
        acc = np.empty(2 * length, x.dtype)
        for q in range(2 * cg):                           # channel q // 2, plane q % 2
            _fill_block(buf[q * pb:(q + 1) * pb], xf[first + q // 2], y0 + q % 2, nrh, 2,
                        h, wd, wp, top, left)
        a0, a1 = acc[:length], acc[length:]
        if _all_finite(buf, buf.shape[0]):
            _correlate_run2(a0, a1, buf, 0, offs, w0[o], w1[o], length, True)
        else:
            _correlate_run(a0, buf, 0, offs0, wf[o], length, True)
            _correlate_run(a1, buf, 0, offs1, wf[o], length, True)
        for r in range(y1 - y0):
            src = (r % 2) * length + (r // 2) * wp
            of[p, (y0 + r) * ow:(y0 + r + 1) * ow] = acc[src:src + ow]


@parallel_kernel(fastmath=_FM_DOT)
def _grad_weight_flat_kernel(x, g, partial, top, left, kh, kw, dh, dw, groups, rows):
    """partial[o * Cg + c', chunk, t] = that chunk's share of grad_weight[o, c', t].

    Tasks are (input channel, chunk of (sample, row block) units); x is unpadded, padded
    by `top` rows and `left` columns on the fly, one block at a time.
    """
    n, c_in, h, wd = x.shape
    c_out, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    npair, nchunk, ntap = partial.shape
    cg = npair // c_out
    og = c_out // groups
    wp = ow + (kw - 1) * dw
    nr = rows + (kh - 1) * dh
    offs = _tap_offsets(kh, kw, dh, dw, wp)
    xf = x.reshape((n * c_in, h * wd))
    gf = g.reshape((n * c_out, oh * ow))
    nblk = (oh + rows - 1) // rows
    units = n * nblk
    for task in prange(c_in * nchunk):
        c = task // nchunk
        chunk = task % nchunk
        grp = c // cg
        xbuf = np.empty(nr * wp, x.dtype)
        gbuf = np.zeros(2 * rows * wp, x.dtype)           # tails past ow stay zero
        gsize = rows * wp
        for u in range(chunk * units // nchunk, (chunk + 1) * units // nchunk):
            ni = u // nblk
            y0 = (u % nblk) * rows
            y1 = min(oh, y0 + rows)
            nb = y1 - y0 + (kh - 1) * dh
            _fill_block(xbuf, xf[ni * c_in + c], y0, nb, 1, h, wd, wp, top, left)
            finite = _all_finite(xbuf, nb * wp)
            length = (y1 - y0 - 1) * wp + ow
            o = grp * og
            while o < (grp + 1) * og:
                two = finite and o + 1 < (grp + 1) * og   # a pair shares every x load
                for e in range(2 if two else 1):
                    grow = gf[ni * c_out + o + e]
                    acc = partial[(o + e) * cg + c % cg, chunk]
                    if finite:
                        for r in range(y1 - y0):
                            gbuf[e * gsize + r * wp:e * gsize + r * wp + ow] = \
                                grow[(y0 + r) * ow:(y0 + r + 1) * ow]
                    else:
                        for y in range(y0, y1):
                            _dots(acc, grow[y * ow:(y + 1) * ow], xbuf, (y - y0) * wp, offs,
                                  ow, 1)
                if two:
                    _dots2(partial[o * cg + c % cg, chunk], partial[(o + 1) * cg + c % cg, chunk],
                           gbuf, gbuf[gsize:], xbuf, offs, length)
                elif finite:
                    _dots(partial[o * cg + c % cg, chunk], gbuf, xbuf, 0, offs, length, 1)
                o += 2 if two else 1


@njit(cache=True)
def _border_columns(row, xf, first, wrow, y, i_lo, i_hi, top, left, kh, kw, dh, dw, wd,
                    x_lo, x_hi, ow):
    """The output columns left of x_lo and right of x_hi, tap by tap with bounds checks."""
    cg = wrow.shape[0] // (kh * kw)
    for k in range(x_lo + ow - x_hi):
        xx = k if k < x_lo else x_hi + k - x_lo
        s = 0.0                                           # float64 sum of few taps
        for c in range(cg):
            a = xf[first + c]
            for i in range(i_lo, i_hi):
                r = (y + i * dh - top) * wd
                for j in range(kw):
                    col = xx + j * dw - left
                    if 0 <= col < wd:
                        s += wrow[(c * kh + i) * kw + j] * a[r + col]
        row[xx] = s


@parallel_kernel(fastmath=_FM_FWD)
def _forward_border_kernel(x, w, out, top, left, dh, dw, groups, rows, pairs):
    """Stride-1 correlation of x zero-padded by `top` rows and `left` columns, reading x
    in place (long rows, small kernels).

    Per output row only the tap rows inside x take part; their columns are cut to where
    every tap lies inside x (the vector loop); the few border columns on either side are
    summed tap by tap. With dH = 1, two output rows whose taps all lie inside x are done
    together: input rows 1 .. kH - 1 of the pair feed both (``_correlate_run2``).
    """
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = c_out // groups
    ntap = kh * kw
    xf = x.reshape((n * c_in, h * wd))
    of = out.reshape((n * c_out, oh * ow))
    wf = w.reshape((c_out, cg * ntap))
    x_lo = min(left, ow)                                  # interior: all taps inside x
    x_hi = max(x_lo, min(ow, wd + left - (kw - 1) * dw))
    nblk = (oh + rows - 1) // rows
    for task in prange(n * c_out * nblk):
        b = task % nblk
        p = task // nblk                                  # n * C_out + o
        o = p % c_out
        first = (p // c_out) * c_in + (o // og) * cg
        offs = np.empty(cg * ntap, np.int64)
        wts = np.empty(cg * ntap, x.dtype)
        w2 = np.empty(cg * ntap, x.dtype)
        ends = np.empty(cg * kw * 2, np.int64)           # the pair's unshared taps
        endw = np.empty(cg * kw * 2, x.dtype)
        y = b * rows
        y_end = min(oh, b * rows + rows)
        while y < y_end:
            row = of[p, y * ow:(y + 1) * ow]
            if (pairs and dh == 1 and y + 1 < y_end and y >= top and y + kh - top <= h - 1
                    and x_hi > x_lo):
                row1 = of[p, (y + 1) * ow:(y + 2) * ow]
                nt = 0
                ne = 0
                for c in range(cg):
                    for j in range(kw):
                        ends[ne] = (y - top) * wd + j * dw - left            # row 0 only
                        endw[ne] = wf[o, c * ntap + j]
                        ends[cg * kw + ne] = (y + kh - top) * wd + j * dw - left
                        endw[cg * kw + ne] = wf[o, c * ntap + (kh - 1) * kw + j]
                        ne += 1
                        for i in range(1, kh):                               # shared
                            offs[nt] = (y + i - top) * wd + j * dw - left
                            wts[nt] = wf[o, c * ntap + i * kw + j]
                            w2[nt] = wf[o, c * ntap + (i - 1) * kw + j]
                            nt += 1
                    a = xf[first + c]
                    for r in range(2):                    # one call site: less to compile
                        e0 = r * cg * kw + c * kw
                        _correlate_run(of[p, (y + r) * ow + x_lo:(y + r) * ow + x_hi], a, x_lo,
                                       ends[e0:e0 + kw], endw[e0:e0 + kw], x_hi - x_lo, c == 0)
                    s0 = c * (kh - 1) * kw
                    _correlate_run2(row[x_lo:x_hi], row1[x_lo:x_hi], a, x_lo,
                                    offs[s0:nt], wts[s0:nt], w2[s0:nt], x_hi - x_lo, False)
                for r in range(2):
                    _border_columns(of[p, (y + r) * ow:(y + r + 1) * ow], xf, first, wf[o],
                                    y + r, 0, kh, top, left, kh, kw, dh, dw, wd, x_lo, x_hi, ow)
                y += 2
                continue
            i_lo = (top - y + dh - 1) // dh if top > y else 0     # tap rows inside x
            i_hi = min(kh, (h - 1 + top - y) // dh + 1) if h - 1 + top - y >= 0 else 0
            started = False
            for c in range(cg):
                nt = 0
                for i in range(i_lo, i_hi):
                    for j in range(kw):
                        offs[nt] = (y + i * dh - top) * wd + j * dw - left
                        wts[nt] = wf[o, c * ntap + i * kw + j]
                        nt += 1
                if nt > 0 and x_hi > x_lo:
                    _correlate_run(row[x_lo:x_hi], xf[first + c], x_lo, offs[:nt], wts[:nt],
                                   x_hi - x_lo, not started)
                    started = True
            if not started:
                row[x_lo:x_hi] = 0
            _border_columns(row, xf, first, wf[o], y, i_lo, i_hi, top, left, kh, kw, dh, dw,
                            wd, x_lo, x_hi, ow)
            y += 1
