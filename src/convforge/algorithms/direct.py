"""Direct sliding-window loops compiled with Numba: few channels, depthwise layers, images.

Every output element is ``sum_{c,i,j} w[o,c,i,j] * x[n, c, y*sH + i*dH, x*sW + j*dW]``.
The loops are ordered so that the innermost one runs along an output row and reads the
input contiguously (SIMD-friendly), eight kernel taps per pass into the output itself::

    for each (n, o, block of output rows)         # parallel (numba prange)
        for each output row y of the block
            for each input channel c of o's group
                for each group of 8 taps t = (i, j)
                    for each output column x:
                        out[y, x] += w_t0 * in[y*sH + off_t0 + x] + ... + w_t7 * ...

Eight taps per pass keep the output row's loads and stores to one per 8 multiply-adds
(a 3x3 filter is two passes: 8 taps, then 1). With stride 1 and rows shorter than 256 a
block of output rows is one flat run over the padded input's row layout (output (y, x)
at ``y * Wp + x``) in a scratch buffer: the ``kW - 1`` columns past each row end are
computed and dropped, so 56-wide rows still give long vector loops.

Zero padding is fused (``FUSED_ZERO_PADDING``): the input arrives unpadded with
``spec.padding`` still to apply, and no padded copy of a large input is made:

* long rows, stride 1, ``(kW - 1) dW <= 4`` (3x3, 5x5 filters): the loop reads x in place;
  per output row only the tap rows inside x take part, the vector loop covers the columns
  where every tap is inside x, and the few border columns are summed tap by tap;
* other long rows: each task copies the zero-padded input rows of its block of output
  rows into a scratch block that stays in cache, then runs the row loop on it;
* short rows (flat runs): the input is padded in one NumPy pass (border strips zeroed,
  interior copied; NumPy reuses its heap pages, so no page faults) -- it is small.

Backward passes (derivation in ``autograd.py``):

* ``grad_input`` is a *full* correlation of ``grad_out`` with the flipped kernel whose
  in/out channels are swapped per group: ``grad_out`` is zero-inserted (stride > 1) and
  zero-padded by ``d (k - 1)``, then the same compiled forward loop runs with stride 1;
  only the window of the unpadded input is computed (with stride 1 and padding at most
  ``d (k - 1)`` that is the fused forward of ``grad_out`` padded by ``d (k - 1) - pad``).
* ``grad_weight[o, c, i, j] = sum_{n,y,x} g[n,o,y,x] x[n,c, y*sH + i*dH, x*sW + j*dW]``:
  per tap a dot product; the work is split over (o, c) pairs and chunks of rows, each
  task writing its own partial sums, which are added at the end. It reads the
  zero-padded input (padded in one NumPy pass, as for short rows).

Float32 and float64 on the CPU. Loops are compiled on first use (a few seconds) and cached
on disk (``cache=True``). Numba uses ``min(torch.get_num_threads(), numba cores)`` threads.
The dot products of ``grad_weight`` are compiled with ``fastmath={"reassoc", "contract"}``
(reassociation lets LLVM vectorise the sums; NaN and Inf still propagate as IEEE says);
the forward loop only allows ``contract`` (fused multiply-add).

Example:
    >>> import convforge
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> convforge.conv2d(x, torch.ones(1, 1, 2, 2), algorithm="direct")
    tensor([[[[10., 14., 18.],
              [26., 30., 34.],
              [42., 46., 50.]]]])
"""

from __future__ import annotations

import os

# Numba's OpenMP pool (the system libgomp) would otherwise spin after each parallel loop,
# fighting torch's own OpenMP threads for the cores: 3-6x slower calls when they alternate
# (measured on 2 cores). Only set when the user has not chosen, before Numba's pool starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from . import _direct_kernels as _k  # noqa: E402
from ._common import no_cuda_reason  # noqa: E402

FUSED_ZERO_PADDING = True   # handed the unpadded input and spec.padding for zeros

# ---- cost model constants (seconds), for dispatch; benchmarks recalibrate them. Measured
# on the 2-core AVX-512 (Zen 4) development machine, float32, with time.process_time() on
# one thread (the machine was shared, so wall-clock medians were unreliable) and scaled by
# ~1.8 for two threads: 2048x2048 15x15 forward 1.9 GFLOP in 33 ms (57 GFLOP/s), a
# 16->32-channel 3x3 layer 29 GFLOP/s, the same with stride 2 6 GFLOP/s (gathers), a
# 3x3 filter bound by memory at ~0.5 ns per output; ~16 us per call on a tiny input.
_SECONDS_PER_FLOP = 1 / 60e9
_SECONDS_PER_FLOP_STRIDED = 1 / 11e9
_SECONDS_PER_OUTPUT = 3e-10
_OVERHEAD = 2e-5

# below this many multiply-adds one thread is quicker than waking the others (a parallel
# launch costs ~20 us on an idle machine and milliseconds when the other core is busy)
_PARALLEL_MIN_MACS = 1 << 18
_FLAT_MAX_WIDTH = 256      # output rows shorter than this are computed as flat runs
_MIN_TASKS = 64            # split long-row images into at least this many tasks
_FUSED_MAX_ROWS = 64       # output rows per block of the copy-free zero-padding kernel
_BORDER_MAX_COLS = 4       # zero padding of narrower kernels: in place, scalar borders
_BLOCK_ELEMS = 2048        # one row-block accumulator: 8 KiB float32, stays in L1
_DTYPES = (torch.float32, torch.float64)


def supports(spec, dtype, device):
    reason = no_cuda_reason(device)
    if reason is not None:
        return reason + " (compiled Numba loops)"
    if dtype not in _DTYPES:
        return f"compiled for float32 and float64 only, not {dtype}"
    return None


# --------------------------------------------------------------------------------------
# the algorithm interface
# --------------------------------------------------------------------------------------

def _threads(macs: int) -> int:
    """Use torch's thread count (at most Numba's), or one thread for a small job."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if macs < _PARALLEL_MIN_MACS:
        n = 1
    numba.set_num_threads(n)
    return n


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    # NumPy's allocator reuses freed memory; a fresh torch tensor of many MiB is new pages
    # every call, and their page faults cost more than a 3x3 filter (6 ms at 2048x2048).
    return torch.from_numpy(np.empty(shape, np.float32 if dtype == torch.float32 else np.float64))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _plan(n_planes: int, oh: int, ow: int, wp: int, stride) -> tuple[int, bool]:
    """(output rows per task, flat?): short rows are done as flat runs of ~_BLOCK_ELEMS;
    long rows one at a time, in place, with enough tasks to feed every thread."""
    if stride == (1, 1) and ow < _FLAT_MAX_WIDTH:
        return max(1, min(oh, _BLOCK_ELEMS // wp)), True
    rows = max(1, min(oh, -(-_BLOCK_ELEMS // ow)))
    while rows > 1 and n_planes * -(-oh // rows) < _MIN_TASKS:
        rows //= 2
    return rows, False


def _pad(a: np.ndarray, pads) -> np.ndarray:
    """a (N, C, H, W), any strides, zero-padded by (top, bottom, left, right) in one pass:
    only the border strips are zeroed; the interior is copied (NumPy's heap, reused)."""
    top, bottom, left, right = pads
    n, c, h, w = a.shape
    out = np.empty((n, c, h + top + bottom, w + left + right), a.dtype)
    out[:, :, :top] = 0
    out[:, :, top + h:] = 0
    out[:, :, top:top + h, :left] = 0
    out[:, :, top:top + h, left + w:] = 0
    out[:, :, top:top + h, left:left + w] = a
    return out


def _padded_array(x: torch.Tensor, pads) -> np.ndarray:
    return _pad(x.detach().numpy(), pads) if any(pads) else _array(x)


def _run_forward(x, w, stride, dilation, groups, pads=(0, 0, 0, 0)):
    """Correlation of x zero-padded by pads = (top, bottom, left, right), as NumPy out."""
    n, _, h, wd = x.shape
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, wd + left + right
    (sh, sw), (dh, dw) = stride, dilation
    kh, kw = w.shape[-2:]
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    out = _empty((n, w.shape[0], oh, ow), x.dtype)
    _threads(out.numel() * w[0].numel())
    rows, flat = _plan(n * w.shape[0], oh, ow, wp, (sh, sw))
    if any(pads) and not flat and stride == (1, 1) and (kw - 1) * dw <= _BORDER_MAX_COLS:
        rows = max(rows, min(oh, 8))                     # in place, scalar border columns
        _k._forward_border_kernel(_array(x), _array(w), out.numpy(), top, left, dh, dw,
                                  groups, rows)
    elif any(pads) and not flat:          # long rows: padded blocks in cache, no full copy
        # taller blocks than _plan's, so a block re-reads few rows: (kH - 1) dH extra
        rows = max(rows, min(_FUSED_MAX_ROWS, -(-4 * (kh - 1) * dh // sh)))
        while rows > 1 and n * w.shape[0] * -(-oh // rows) < _MIN_TASKS:
            rows //= 2
        _k._forward_padded_kernel(_array(x), _array(w), out.numpy(), top, left, sh, sw,
                                  dh, dw, groups, rows)
    else:
        _k._forward_kernel(_padded_array(x, pads), _array(w), out.numpy(), sh, sw, dh, dw,
                           groups, rows, flat)
    return out                                                    # (N, C_out, oH, oW)


def forward(x, w, spec):
    return _run_forward(x, w, spec.stride, spec.dilation, spec.groups, spec.padding)


def grad_input(grad_out, w, spec, x_shape):
    """Full correlation of grad_out with the flipped kernel, cut to the unpadded input.

    In padded coordinates the zero-inserted gradient sits at (ph + y sH, pw + x sW) with
    (ph, pw) = d (k - 1); the unpadded input starts at (top, left). With stride 1 and
    padding within (ph, pw) that is grad_out zero-padded by (ph - top, ph - bottom, ...);
    otherwise the window of the zero-inserted gradient is built explicitly.
    """
    n, c_in, h, wd = x_shape
    c_out, cg, kh, kw = w.shape
    g = spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, bottom, left, right = spec.padding
    oh, ow = grad_out.shape[-2:]
    ph, pw = dh * (kh - 1), dw * (kw - 1)
    wt = (w.detach().reshape(g, c_out // g, cg, kh, kw).transpose(1, 2)
          .flip(-2, -1).reshape(c_in, c_out // g, kh, kw))       # (C_in, Og, kH, kW)
    if (spec.stride == (1, 1) and max(top, bottom) <= ph and max(left, right) <= pw
            and (oh + ph - top - bottom, ow + pw - left - right) == (h, wd)):
        pads = (ph - top, ph - bottom, pw - left, pw - right)
        return _run_forward(grad_out, wt, (1, 1), (dh, dw), g, pads)   # (N, C_in, H, W)
    gy = _empty((n, c_out, h + ph, wd + pw), grad_out.dtype)    # window of the spread g
    _threads(gy.numel())
    _k._spread_kernel(_array(grad_out).reshape(n * c_out, oh, ow),
                      gy.numpy().reshape(n * c_out, h + ph, wd + pw),
                      ph - top, pw - left, sh, sw)
    return _run_forward(gy, wt, (1, 1), (dh, dw), g)             # (N, C_in, H, W)


def grad_weight(x, grad_out, spec, w_shape):
    c_out, cg, kh, kw = w_shape
    n, c_in = x.shape[:2]
    wp = spec.padded_w
    oh = grad_out.shape[-2]
    rows, flat = _plan(n * c_out, oh, grad_out.shape[-1], wp, spec.stride)
    units = n * (-(-oh // rows))
    npair = c_out * cg
    nchunk = max(1, min(units, -(-4 * _threads(grad_out.numel() * cg * kh * kw) // npair)))
    partial = np.zeros((npair, nchunk, kh * kw),
                       dtype=np.float32 if x.dtype == torch.float32 else np.float64)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    _k._grad_weight_kernel(_padded_array(x, spec.padding), _array(grad_out), partial, kh, kw,
                           sh, sw, dh, dw, spec.groups, rows, flat)
    return torch.from_numpy(partial.sum(axis=1)).reshape(w_shape)


def cost(spec, dtype, device):
    """Estimated seconds for the forward pass (flops / throughput + output + overhead).

    Zero padding costs nothing extra: long rows never copy, short ones copy a small input.
    """
    rate = _SECONDS_PER_FLOP if spec.stride == (1, 1) else _SECONDS_PER_FLOP_STRIDED
    if dtype == torch.float64:
        rate *= 2
    outputs = spec.n * spec.c_out * spec.out_h * spec.out_w
    return spec.flops() * rate + outputs * _SECONDS_PER_OUTPUT + _OVERHEAD
