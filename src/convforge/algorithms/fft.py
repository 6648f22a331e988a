"""FFT convolution: real FFTs, channel mixing per frequency, overlap-save tiles.

By the convolution theorem a *valid* cross-correlation of a padded input of length ``Hp``
with a kernel of length ``K`` is ``irfft(rfft(x) * conj(rfft(w)))`` at any FFT length
``L >= Hp``: the circular wrap-around only touches the ``K - 1`` outputs past the valid
ones, which are dropped. ``L`` is rounded up to a 7-smooth length (:func:`next_fast_len`).

* **Channels and groups.** Per frequency the layer is a small matrix product
  ``Y[n, o] = sum_c X[n, c] conj(W[o, c])`` within each group. With up to 64 input
  channels per group it runs as ``Cg`` broadcast complex multiply-adds, each over all
  samples, output channels and frequencies at once; above that as one batched complex
  product (``einsum``, frequencies and groups as batch dimensions). torch's complex batched
  product does one tiny GEMM per frequency on the CPU, which measured 1.1-6x slower than
  the multiply-adds for 3 to 64 channels (constants below). The weight gradient's sum over
  samples is chosen the same way.
* **Large inputs (overlap-save).** When the input is much larger than the kernel, the
  output is cut into tiles of ``T = L - K + 1`` rows/columns; each tile's input window of
  ``L`` samples (overlapping its neighbours by ``K - 1``) becomes one more batch entry and
  one small FFT. ``L`` per axis minimises a ``tiles * L * (log2 L + c)`` model over
  lengths ``2^a 3^b`` up to 384 (larger and 7-smooth tiles measured slower).
* **Two real signals per complex FFT.** The kernel is real, so
  ``corr(x1 + i x2, w) = corr(x1, w) + i corr(x2, w)``: forward and ``grad_input`` pair
  neighbouring tiles (or samples) as the real and imaginary parts of one complex
  transform. That halves the transforms, and the complex inverse is much cheaper than
  torch's real inverse (one thread: ~8 vs ~19 ms for 81 tiles of 256^2); 2048^2 images
  with 15x15 / 31x31 kernels went from 41 / 68 ms to 34 / 61 ms of CPU time.
  Fewer than four signals at stride 1 use real transforms (no partner to pair with).
* **Stride** (real data) is folded into the spectrum before the inverse transform: with
  ``L`` a multiple of ``s``, every s-th output of a length-``L`` inverse is the length
  ``L/s`` inverse of ``(1/s) sum_j Y[k + j L/s]``, so the inverse runs on ``1/s^2`` of the
  points; tiles advance by a multiple of ``s``.
  **Dilation** is handled by a zero-dilated kernel.
* **Backward.** ``grad_input`` is the *full* convolution of the stride-zero-inserted
  ``grad_out`` with the kernel: the same valid correlation, run on ``grad_out`` padded by
  ``K - 1`` with the flipped kernel (in/out channels swapped per group), so it tiles too.
  ``grad_weight[o, c] = sum_n corr(x[n, c], g[n, o])``: per frequency
  ``sum_n conj(G[n, o]) X[n, c]``, a batched product over the batch (and tile) index.

Torch ops only, so it runs on any device; float32 is transformed in float32. Error against
the float64 result (max |error| / max |output|, 15x15 and 31x31 kernels, images up to 600^2,
depthwise and 16->32 channel layers): 2-3e-7 in float32 (torch's float32 conv2d: 0.6-1.2e-6)
and ~2e-15 in float64; tests/test_fft.py checks float32 < 1e-5 against the reference.
Complex inputs are not supported (``supports`` says so).

Example:
    >>> import convforge
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> convforge.conv2d(x, torch.ones(1, 1, 2, 2), algorithm="fft").round().tolist()
    [[[[10.0, 14.0, 18.0], [26.0, 30.0, 34.0], [42.0, 46.0, 50.0]]]]
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# ---- cost model constants (seconds), for dispatch; benchmarks recalibrate them. Measured
# on the 2-core AVX-512 development machine, float32, with time.process_time() on one
# thread (the machine was shared) and scaled by ~1.8 for two threads: batched real 2D FFTs
# cost ~3.2e-10 s per sample per log2(L*L) on one thread (2048x2048 image, 31x31 kernel,
# 49 tiles of 324^2: 55 ms); the complex channel mixing of a 16->32-channel layer runs at
# ~4 GFLOP/s on one thread (8 real flops per complex multiply-add); ~160 us per call on a
# tiny input (a dozen torch ops).
_SECONDS_PER_FFT_POINT_LOG = 1.8e-10
_SECONDS_PER_MIX_FLOP = 1 / 8e9
_OVERHEAD = 1.6e-4
_GPU_SPEEDUP = 50.0        # a rough factor for CUDA devices (not measured here: no GPU)

# tile choice: per-sample cost of the tiling copies and mixing, in log2 units, and the
# smallest tile (batches of tiny FFTs are slow: 2048^2 with 15x15 measured 47/42/37/41 ms
# for L = 64/96/128/256, and 5x5 on 512^2 with 32-sample tiles 10x slower than direct)
_TILE_LOG_EXTRA = 8.0
_MIN_TILE = 64
# tiles are 2^a 3^b long and at most this: 2048^2 with 31x31 (one thread) measured ~41 ms
# with 288^2 tiles, ~45 with 144 or 384, 61 with 441 (7-smooth), 70-97 with 512
_MAX_TILE = 384
_DTYPES = (torch.float32, torch.float64)
# channel mixing: torch's complex bmm runs one tiny product per frequency on the CPU, so
# broadcast multiply-adds are faster up to these sizes (one thread, complex64: 3->64
# channels 88 vs 98 ms, 16->32 4.8 vs 26 ms, 64->64 105 vs 233 ms; weight gradient over
# 72 tiles, 64x3 channel pairs 41 vs 184 ms, but 64x64 pairs over 8 samples 87 vs 57 ms)
_MIX_LOOP_MAX = 64
_GW_LOOP_MAX = 1024
# fewer signals than this (samples x tiles) use real transforms: pairing one or two
# signals measured 0-10% slower (a lone signal would be paired with zeros)
_MIN_PAIRS = 4


@functools.lru_cache(maxsize=4096)
def next_fast_len(n: int) -> int:
    """Smallest integer ``>= n`` whose only prime factors are 2, 3, 5 and 7.

    Args:
        n: a positive length.

    Returns:
        The FFT length to use (7-smooth lengths are fast in MKL, pocketfft and cuFFT).

    Raises:
        ValueError: if ``n`` is not positive.

    Example:
        >>> next_fast_len(2050), next_fast_len(97), next_fast_len(1)
        (2058, 98, 1)
    """
    if n < 1:
        raise ValueError(f"next_fast_len: n must be positive, but got {n}")
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def supports(spec, dtype, device):
    if dtype not in _DTYPES:
        return f"real FFTs in float32 and float64 only, not {dtype}"
    return None


def _tile_length(n: int, k: int) -> int:
    """FFT length along one axis of length n (padded) for a kernel of (dilated) length k."""
    full = next_fast_len(n)
    best, best_cost = full, full * (math.log2(max(full, 2)) + _TILE_LOG_EXTRA)
    for length in _smooth23(max(2 * k, _MIN_TILE), min(full - 1, _MAX_TILE)):
        t = length - k + 1
        tiles = -(-(n - k + 1) // t)
        c = tiles * length * (math.log2(length) + _TILE_LOG_EXTRA)
        if c < best_cost:
            best, best_cost = length, c
    return best


@functools.lru_cache(maxsize=256)
def _smooth23(lo: int, hi: int) -> tuple:
    """Lengths 2^a 3^b in [lo, hi]: the tile sizes MKL transforms fastest."""
    out = []
    p2 = 1
    while p2 <= hi:
        v = p2
        while v <= hi:
            if v >= lo:
                out.append(v)
            v *= 3
        p2 *= 2
    return tuple(sorted(out))


def _dilate(w, dh, dw):
    if dh == dw == 1:
        return w
    c_out, cg, kh, kw = w.shape
    out = w.new_zeros((c_out, cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    out[..., ::dh, ::dw] = w
    return out                                                    # (C_out, Cg, KH, KW)


def _mix(xf, wf, groups):
    """Y[n, o] = sum_c X[n, c] W[o, c] per frequency, within each group."""
    n, c_in, fh, fw = xf.shape
    c_out, cg = wf.shape[:2]
    xg = xf.reshape(n, groups, cg, fh, fw)                        # (N, G, Cg, fH, fW)
    wg = wf.reshape(groups, c_out // groups, cg, fh, fw)          # (G, Og, Cg, fH, fW)
    if cg > _MIX_LOOP_MAX:
        y = torch.einsum("ngchw,gochw->ngohw", xg, wg)
    else:                                 # Cg passes of a broadcast complex multiply-add
        y = xg[:, :, None, 0] * wg[:, :, 0]                       # (N, G, Og, fH, fW)
        for c in range(1, cg):
            y.addcmul_(xg[:, :, None, c], wg[:, :, c])
    return y.reshape(n, c_out, fh, fw)


def _grid(hp, wp, kh, kw):
    lh, lw = _tile_length(hp, kh), _tile_length(wp, kw)
    th, tw = -(-(hp - kh + 1) // (lh - kh + 1)), -(-(wp - kw + 1) // (lw - kw + 1))
    return lh, lw, th, tw


def _to_tiles(x, lh, lw, th, tw, kh, kw):
    """Overlapping input windows as extra batch entries: (N*tH*tW, C, lh, lw)."""
    n, c, hp, wp = x.shape
    sh, sw = lh - kh + 1, lw - kw + 1
    x = F.pad(x, (0, tw * sw + kw - 1 - wp, 0, th * sh + kh - 1 - hp))
    t = x.unfold(2, lh, sh).unfold(3, lw, sw)                     # (N, C, tH, tW, lh, lw)
    return t.permute(0, 2, 3, 1, 4, 5).reshape(n * th * tw, c, lh, lw)


def _corr_real(x, w, groups):
    """Stride-1 valid correlation with real transforms: few signals (no pairs to make)."""
    _, _, hp, wp = x.shape
    _, _, kh, kw = w.shape
    lh, lw = next_fast_len(hp), next_fast_len(wp)
    xf = torch.fft.rfft2(x, s=(lh, lw))                           # (N, C_in, lh, lw/2+1)
    wf = torch.fft.fft(torch.fft.rfft(w, n=lw, dim=-1), n=lh, dim=-2).conj()
    y = torch.fft.irfft2(_mix(xf, wf, groups), s=(lh, lw))        # (N, C_out, lh, lw)
    return y[..., :hp - kh + 1, :wp - kw + 1]


def _axis_plan(n: int, k: int, s: int):
    """``(L, step, tiles)`` along one axis: FFT length (a multiple of the stride s), input
    advance per tile (a multiple of s, so every tile starts on the output grid), tiles."""
    length, out = _tile_length(n, k), (n - k) // s + 1
    if s > 1:
        if length >= n:                   # one tile: it must hold every output's window
            length = max(length, out * s + k - 1)
        length = s * next_fast_len(-(-length // s))
    step = (length - k + 1) // s * s
    return length, step, -(-out // (step // s))


def _corr_paired(x, w, groups, stride=(1, 1)):
    """Real data, two signals per complex FFT, stride folded into the spectrum.

    * The kernel is real, so ``corr(x1 + i x2, w) = corr(x1, w) + i corr(x2, w)``: one
      complex transform pair does the work of two real ones, and the complex inverse is
      much cheaper than torch's real inverse (one thread: ~8 vs ~19 ms for 81 tiles of
      256^2). Neighbouring tiles along W (or, untiled, neighbouring samples) are paired.
    * Stride ``s`` (FFT length ``L`` a multiple of ``s``): keeping every s-th output of a
      length-L inverse transform is the length-``L/s`` inverse of the spectrum folded onto
      itself, ``Y_s[k] = (1/s) sum_j Y[k + j L/s]``, so the inverse runs on ``1/s^2`` of
      the points and no discarded output is ever computed.
    """
    n, c, hp, wp = x.shape
    c_out, _, kh, kw = w.shape
    sh, sw = stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    lh, ph, th = _axis_plan(hp, kh, sh)
    lw, pw, tw = _axis_plan(wp, kw, sw)
    if n * th * tw < _MIN_PAIRS and sh == sw == 1:
        return _corr_real(x, w, groups)
    if th * tw > 1:
        tw += tw % 2                                              # tiles pair up along W
    # pad (or crop: rows no output reads) to exactly the tiles' extent
    x = F.pad(x, (0, (tw - 1) * pw + lw - wp, 0, (th - 1) * ph + lh - hp))
    if th * tw > 1:
        t = x.unfold(2, lh, ph).unfold(3, lw, pw).permute(0, 2, 3, 1, 4, 5)  # (N,tH,tW,C,..)
        re, im = t[:, :, 0::2], t[:, :, 1::2]                     # (N, tH, tW/2, C, lh, lw)
    else:
        if n % 2:
            x = torch.cat([x, x.new_zeros((1,) + x.shape[1:])])
        re, im = x[0::2], x[1::2]                                 # (N/2, C, lh, lw)
    xc = torch.complex(re, im).reshape(-1, c, lh, lw)             # (B/2, C, lh, lw)
    wf = torch.fft.fft(torch.fft.fft(w, n=lw, dim=-1), n=lh, dim=-2).conj()
    if sh > 1 or sw > 1:
        wf = wf / (sh * sw)                                       # the fold's 1/s factor
    yf = _mix(torch.fft.fft2(xc), wf, groups)                     # (B/2, C_out, lh, lw)
    if sh > 1 or sw > 1:                  # s^2 block additions (torch's complex sum over
        mh, mw = lh // sh, lw // sw       # strided dims is ~40x slower on the CPU)
        blocks = [yf[..., i * mh:(i + 1) * mh, j * mw:(j + 1) * mw]
                  for i in range(sh) for j in range(sw)]
        yf = blocks[0] + blocks[1]
        for block in blocks[2:]:
            yf.add_(block)
    y = torch.view_as_real(torch.fft.ifft2(yf))                   # (B/2, C_out, mh, mw, 2)
    qh, qw = ph // sh, pw // sw                                   # outputs per tile
    if th * tw > 1:
        y = y.view(n, th, tw // 2, c_out, lh // sh, lw // sw, 2)[..., :qh, :qw, :]
        out = y.new_empty((n, c_out, th, qh, tw // 2, 2, qw))
        out.copy_(y.permute(0, 3, 1, 4, 2, 6, 5))                # pairs back side by side
        return out.view(n, c_out, th * qh, tw * qw)[..., :oh, :ow]
    y = y[..., :oh, :ow, :].permute(0, 4, 1, 2, 3)               # (B/2, 2, C_out, oH, oW)
    return y.reshape(-1, c_out, oh, ow)[:n]


def forward(x, w, spec):
    y = _corr_paired(x.resolve_conj(), _dilate(w, *spec.dilation), spec.groups, spec.stride)
    return y.contiguous()                                         # (N, C_out, oH, oW)


def _upsample(g, spec, h1, w1):
    """grad_out zero-inserted by the stride, as a stride-1 output of size (h1, w1)."""
    sh, sw = spec.stride
    if sh == sw == 1:
        return g
    n, c, oh, ow = g.shape
    up = g.new_zeros((n, c, h1, w1))
    up[..., :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw] = g
    return up


def grad_input(grad_out, w, spec, x_shape):
    n, c_in, hp, wp = x_shape
    c_out, cg, _, _ = w.shape
    g = spec.groups
    wd = _dilate(w, *spec.dilation)
    kh, kw = wd.shape[-2:]
    up = _upsample(grad_out, spec, hp - kh + 1, wp - kw + 1)      # (N, C_out, Hp-KH+1, ..)
    up = F.pad(up, (kw - 1, kw - 1, kh - 1, kh - 1))              # (N, C_out, Hp+KH-1, ..)
    wt = (wd.reshape(g, c_out // g, cg, kh, kw).transpose(1, 2)
          .flip(-2, -1).reshape(c_in, c_out // g, kh, kw))        # (C_in, Og, KH, KW)
    return _corr_paired(up, wt, g).contiguous()                   # (N, C_in, Hp, Wp)


def grad_weight(x, grad_out, spec, w_shape):
    c_out, cg, kh0, kw0 = w_shape
    (dh, dw), groups = spec.dilation, spec.groups
    kh, kw = dh * (kh0 - 1) + 1, dw * (kw0 - 1) + 1
    n, c_in, hp, wp = x.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    x = x.resolve_conj()
    up = _upsample(grad_out, spec, oh, ow)                        # (N, C_out, oH1, oW1)
    lh, lw, th, tw = _grid(hp, wp, kh, kw)
    if th * tw > 1:
        x = _to_tiles(x, lh, lw, th, tw, kh, kw)                  # (B, C_in, lh, lw)
        up = _to_tiles(up, lh - kh + 1, lw - kw + 1, th, tw, 1, 1)  # (B, C_out, T, T)
    b = x.shape[0]
    xf = torch.fft.rfft2(x, s=(lh, lw)).reshape(b, groups, cg, lh, -1)
    gf = torch.fft.rfft2(up, s=(lh, lw)).conj().reshape(b, groups, c_out // groups, lh, -1)
    if cg == 1 and c_out == groups:
        gwf = (gf * xf).sum(0)                                    # (G, 1, 1, lh, lw/2+1)
    elif cg * (c_out // groups) <= _GW_LOOP_MAX:  # one broadcast outer product per sample
        gwf = gf[0][:, :, None] * xf[0][:, None, :]               # (G, Og, Cg, lh, lw/2+1)
        for i in range(1, b):
            gwf.addcmul_(gf[i][:, :, None], xf[i][:, None, :])
    else:
        gwf = torch.einsum("ngohw,ngchw->gochw", gf, xf)          # (G, Og, Cg, lh, lw/2+1)
    gw = torch.fft.irfft2(gwf.reshape(c_out, cg, lh, -1), s=(lh, lw))
    return gw[..., :kh:dh, :kw:dw].contiguous()                   # (C_out, Cg, kH, kW)


def _valid_bytes(n, c, c_out, cg, hp, wp, kh, kw, stride, b):
    """Buffers of :func:`_corr_paired` (or :func:`_corr_real`) on an (n, c, hp, wp) input:
    the padded input, its complex tiles and their transform, the kernel's spectrum, the
    mixed spectrum and its inverse, and the rearranged output."""
    (sh, sw) = stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    lh, ph, th = _axis_plan(hp, kh, sh)
    lw, pw, tw = _axis_plan(wp, kw, sw)
    # above _MIX_LOOP_MAX channels the mixing is an einsum: torch lays both operands out
    # as batched-GEMM copies (the kernel's spectrum with its conjugate resolved) and the
    # product back
    copies = 2 if cg > _MIX_LOOP_MAX else 0
    if n * th * tw < _MIN_PAIRS and sh == sw == 1:
        lh, lw = next_fast_len(hp), next_fast_len(wp)
        half = lh * (lw // 2 + 1) * 2
        return b * (n * c * half * (1 + copies) + n * c_out * half * (2 + copies)
                    + n * c_out * lh * lw + c_out * cg * half * (2 + 2 * copies))
    if th * tw > 1:
        tw += tw % 2
        signals = n * th * tw
    else:
        signals = n + n % 2
    extent = n * c * ((th - 1) * ph + lh) * ((tw - 1) * pw + lw)
    spectra = signals * lh * lw                     # complex pairs: signals/2 x 2 values
    return b * (extent + spectra * c * (2 + copies) + c_out * cg * lh * lw * (4 + 4 * copies)
                + spectra * c_out * (2 + copies) + -(-spectra * c_out // (sh * sw))
                + n * c_out * oh * ow)


def workspace_bytes(spec, dtype, pass_):
    """The transforms' buffers of each pass (see :func:`_valid_bytes`); the input gradient
    first zero-inserts and pads the output gradient, the weight gradient cuts both
    operands into tiles and transforms them."""
    b = dtype.itemsize
    (dh, dw) = spec.dilation
    kh, kw = dh * (spec.kh - 1) + 1, dw * (spec.kw - 1) + 1
    hp, wp, n = spec.padded_h, spec.padded_w, spec.n
    cg = spec.c_in // spec.groups
    og = spec.c_out // spec.groups
    if pass_ == "forward":
        return _valid_bytes(n, spec.c_in, spec.c_out, cg, hp, wp, kh, kw, spec.stride, b)
    h1, w1 = hp - kh + 1, wp - kw + 1
    up = n * spec.c_out * h1 * w1 * b if spec.stride != (1, 1) else 0
    if pass_ == "grad_input":
        big = (hp + kh - 1, wp + kw - 1)
        return (up + n * spec.c_out * big[0] * big[1] * b
                + _valid_bytes(n, spec.c_out, spec.c_in, og, *big, kh, kw, (1, 1), b))
    lh, lw, th, tw = _grid(hp, wp, kh, kw)
    tiles = n * th * tw
    half = lh * (lw // 2 + 1) * 2
    copies = 2 if cg * og > _GW_LOOP_MAX else 0        # the einsum's operand layouts
    return up + b * (tiles * (spec.c_in + spec.c_out) * (lh * lw + (2 + copies) * half)
                     + spec.c_out * cg * ((1 + copies) * half + lh * lw))


def cost(spec, dtype, device):
    """Estimated seconds of the forward pass: transforms + channel mixing + overhead."""
    (dh, dw) = spec.dilation
    kh, kw = dh * (spec.kh - 1) + 1, dw * (spec.kw - 1) + 1
    (sh, sw) = spec.stride
    lh, _, th = _axis_plan(spec.padded_h, kh, sh)
    lw, _, tw = _axis_plan(spec.padded_w, kw, sw)
    cg = spec.c_in // spec.groups
    points = lh * lw * math.log2(max(lh * lw, 2))                # one transform
    # real signals go two per complex transform; the inverse runs on 1/stride^2 the points
    transforms = spec.n * th * tw * (spec.c_in + spec.c_out / (sh * sw)) + spec.c_out * cg
    fft_time = transforms * points * _SECONDS_PER_FFT_POINT_LOG
    mix_flops = 4 * spec.n * th * tw * lh * lw * spec.c_out * cg
    t = fft_time + mix_flops * _SECONDS_PER_MIX_FLOP
    if dtype == torch.float64:
        t *= 2
    if torch.device(device).type != "cpu":
        t /= _GPU_SPEEDUP
    return t + _OVERHEAD
