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
(a 3x3 filter is two passes: 8 taps, then 1). Where two outputs read the same inputs, a
pass feeds both from each load (``_correlate_run2``): pairs of output channels on short
rows, pairs of output rows (input rows 1 .. kH - 1 are shared) on long ones and on short
rows of depthwise layers (one input and one output channel per task).

Zero padding is fused (``FUSED_ZERO_PADDING``): the input arrives unpadded with
``spec.padding`` still to apply, and no padded copy of the input is made:

* short rows, stride 1 (``_direct_small``): each task (n, group, up to 8 output channels,
  block of output rows) fills a scratch block with the zero-padded input rows it reads,
  every input channel of the group; the block is one flat run over that row layout
  (output (y, x) at ``y * Wp + x``; the ``kW - 1`` columns past each row end are computed
  and dropped), so 28- and 56-wide rows still give long vector loops, and the taps of all
  channels form one list (6 channels x 25 taps = 150 taps, 8 per pass);
* long rows, stride 1, ``(kW - 1) dW <= 4`` (3x3, 5x5 filters): the loop reads x in place;
  per output row only the tap rows inside x take part, the vector loop covers the columns
  where every tap is inside x, and the few border columns are summed tap by tap;
* other long rows: each task copies the zero-padded input rows of its block of output
  rows into a scratch block that stays in cache, then runs the row loop on it.

Backward passes (derivation in ``autograd.py``):

* ``grad_input`` is a *full* correlation of ``grad_out`` with the flipped kernel whose
  in/out channels are swapped per group: ``grad_out`` is zero-inserted (stride > 1) and
  zero-padded by ``d (k - 1)``, then the same compiled forward loop runs with stride 1;
  only the window of the unpadded input is computed (with stride 1 and padding at most
  ``d (k - 1)`` that is the fused forward of ``grad_out`` padded by ``d (k - 1) - pad``).
* ``grad_weight[o, c, i, j] = sum_{n,y,x} g[n,o,y,x] x[n,c, y*sH + i*dH, x*sW + j*dW]``:
  per tap a dot product, each task writing its own partial sums, added at the end. Short
  rows (stride 1): tasks are (input channel, chunk of samples); a task fills the padded
  input block once and dots it with the gradient rows of every output channel of the
  group, two at a time (``_dots2``), laid out ``Wp`` apart with zero tails, so each dot
  product is one long run (a block holding Inf or NaN is done row by row: a zero tail
  must not meet it). Long rows or strides: tasks are (o, c) pairs and chunks of rows, on
  the zero-padded input (padded in one NumPy pass).

Float32 and float64 on the CPU. The first call in a process compiles the loops (10-30 s
with an empty Numba cache) or loads them from Numba's on-disk cache (about 0.1-0.5 s); an
explicit ``algorithm=`` waits for that, silently; "auto" never does (it uses other
algorithms until a background compilation is done, ``convforge._compile``), and
``convforge.warmup()`` does it ahead of time. Numba uses ``min(torch.get_num_threads(),
numba cores)`` threads (``_threads.py``: a passive pool that leaves torch's threads and
child processes alone). The dot products of ``grad_weight`` are compiled with
``fastmath={"reassoc", "contract"}`` (reassociation lets LLVM vectorise the sums; NaN and
Inf still propagate as IEEE says); the forward loop only allows ``contract`` (fused
multiply-add).

Example:
    >>> import convforge
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> convforge.conv2d(x, torch.ones(1, 1, 2, 2), algorithm="direct")
    tensor([[[[10., 14., 18.],
              [26., 30., 34.],
              [42., 46., 50.]]]])
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import LazyModule, counts, no_cuda_reason
from ._threads import numba_threads as _threads

_k = LazyModule(__package__ + "._direct_kernels")     # Numba: loaded on first use
_s = LazyModule(__package__ + "._direct_small")

COMPILED = True            # Numba kernels, compiled on first use (convforge._compile)
FUSED_ZERO_PADDING = True   # handed the unpadded input and spec.padding for zeros

# ---- cost model constants (seconds), for dispatch; benchmarks recalibrate them. Measured
# on the 2-core AVX-512 (Zen 4) development machine, float32 (the machine was shared, so
# minima of interleaved runs): 2048x2048 15x15 forward 1.9 GFLOP in 33 ms (57 GFLOP/s),
# a 16->32-channel 3x3 layer 29 GFLOP/s, the same with stride 2 6 GFLOP/s (gathers), a
# 3x3 filter bound by memory at ~0.5 ns per output; ~16 us per call on a tiny input.
# Short rows with fused padding: LeNet's 1->6 5x5 layer (60 MFLOP) forward in 0.8 ms,
# grad_input 1.2-1.5 ms, grad_weight 0.7 ms; a depthwise 7x7 layer on 8x96x56x56
# (236 MFLOP) in 3.8 ms per pass (~65 GFLOP/s).
_SECONDS_PER_FLOP = 1 / 65e9
_SECONDS_PER_FLOP_STRIDED = 1 / 11e9
_SECONDS_PER_OUTPUT = 3e-10
_OVERHEAD = 2e-5

_FLAT_MAX_WIDTH = 256      # output rows shorter than this are computed as flat runs
_MIN_TASKS = 64            # split long-row images into at least this many tasks
_FUSED_MAX_ROWS = 64       # output rows per block of the copy-free zero-padding kernel
_BORDER_MAX_COLS = 4       # zero padding of narrower kernels: in place, scalar borders
# long rows: output row pairs sharing input rows only from this kernel height on (2048^2
# image, 2 threads: 3x3 with pairs 3.3 ms against 1.5-2.4 without; 5x5, 7x7: no difference)
_ROW_PAIR_MIN_KH = 5
_FLAT_MAX_BLOCK = 1 << 16  # padded input block of a flat task, all channels: 256 KiB
_FLAT_OCHUNK = 8           # output channels per flat task (each reuses the block in cache)
_FLAT_RUN_ELEMS = 4096     # flat run of a task: a whole 56x56 plane (longer runs, fewer tasks)
_MIN_FLAT_TASKS = 16       # fewer planes than this: shorter blocks of rows
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

def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    # NumPy's allocator reuses freed memory; a fresh torch tensor of many MiB is new pages
    # every call, and their page faults cost more than a 3x3 filter (6 ms at 2048x2048).
    return torch.from_numpy(np.empty(shape, np.float32 if dtype == torch.float32 else np.float64))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _plan(n_planes: int, oh: int, ow: int, wp: int, stride) -> tuple[int, bool]:
    """(output rows per task, flat?): short rows are done as flat runs of ~_FLAT_RUN_ELEMS;
    long rows one at a time, in place, with enough tasks to feed every thread."""
    if stride == (1, 1) and ow < _FLAT_MAX_WIDTH:
        return max(1, min(oh, _FLAT_RUN_ELEMS // wp)), True
    rows = max(1, min(oh, -(-_BLOCK_ELEMS // ow)))
    while rows > 1 and n_planes * -(-oh // rows) < _MIN_TASKS:
        rows //= 2
    return rows, False


def _flat_plan(planes: int, og: int, cg: int, oh: int, wp: int, extra: int, rows: int):
    """(rows, output channels) per task of the flat kernels: a task's padded block of all
    cg channels stays within _FLAT_MAX_BLOCK elements; enough tasks for every thread."""
    while rows > 1 and cg * (rows + extra) * wp > _FLAT_MAX_BLOCK:
        rows = (rows + 1) // 2
    while rows > 4 and planes * -(-oh // rows) < _MIN_FLAT_TASKS:
        rows = (rows + 1) // 2
    ochunk = min(og, _FLAT_OCHUNK)
    nblk = -(-oh // rows)
    while ochunk > 1 and planes * nblk * -(-og // ochunk) < _MIN_TASKS:
        ochunk = (ochunk + 1) // 2
    return rows, ochunk


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
    if flat:                          # short rows: padded blocks of every channel in cache
        rows, ochunk = _flat_plan(n * groups, w.shape[0] // groups, w.shape[1], oh, wp,
                                  (kh - 1) * dh, rows)
        if ochunk == 1 and w.shape[1] == 1 and dh == 1 and kh > 1:    # depthwise
            _s._forward_flat_rows2_kernel(_array(x), _array(w), out.numpy(), top, left, dw,
                                          groups, rows + rows % 2 if rows < oh else rows)
        else:
            _s._forward_flat_kernel(_array(x), _array(w), out.numpy(), top, left, dh, dw,
                                    groups, rows, ochunk)
    elif any(pads) and stride == (1, 1) and (kw - 1) * dw <= _BORDER_MAX_COLS:
        rows = max(rows, min(oh, 8))                     # in place, scalar border columns
        _s._forward_border_kernel(_array(x), _array(w), out.numpy(), top, left, dh, dw,
                                  groups, rows, kh >= _ROW_PAIR_MIN_KH)
    elif any(pads):                       # long rows: padded blocks in cache, no full copy
        # taller blocks than _plan's, so a block re-reads few rows: (kH - 1) dH extra
        rows = max(rows, min(_FUSED_MAX_ROWS, -(-4 * (kh - 1) * dh // sh)))
        while rows > 1 and n * w.shape[0] * -(-oh // rows) < _MIN_TASKS:
            rows //= 2
        _k._forward_padded_kernel(_array(x), _array(w), out.numpy(), top, left, sh, sw,
                                  dh, dw, groups, rows)
    else:
        _k._forward_kernel(_array(x), _array(w), out.numpy(), sh, sw, dh, dw, groups, rows)
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
    oh = grad_out.shape[-2]
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    rows, flat = _plan(n * c_out, oh, grad_out.shape[-1], spec.padded_w, spec.stride)
    threads = _threads(grad_out.numel() * cg * kh * kw)
    if flat:                # short rows: padding fused, tasks (input channel, samples)
        rows, _ = _flat_plan(n * c_in, 1, 1, oh, spec.padded_w, (kh - 1) * dh, rows)
        tasks = c_in
    else:                   # tasks ((o, c) pair, samples)
        tasks = c_out * cg
    units = n * (-(-oh // rows))
    nchunk = max(1, min(units, -(-4 * threads // tasks)))
    partial = np.zeros((c_out * cg, nchunk, kh * kw),
                       np.float32 if x.dtype == torch.float32 else np.float64)
    if flat:
        top, _, left, _ = spec.padding
        _s._grad_weight_flat_kernel(_array(x), _array(grad_out), partial, top, left, kh, kw,
                                    dh, dw, spec.groups, rows)
    else:
        _k._grad_weight_kernel(_padded_array(x, spec.padding), _array(grad_out), partial,
                               kh, kw, sh, sw, dh, dw, spec.groups, rows)
    return torch.from_numpy(partial.sum(axis=1)).reshape(w_shape)


def workspace_bytes(spec, dtype, pass_):
    """Contiguous copies of non-contiguous operands; the input gradient's zero-inserted
    window of the output gradient; the weight gradient's zero-padded input (long rows)
    and per-chunk partial sums."""
    inp, padded, out, weight = counts(spec)
    b = dtype.itemsize
    if pass_ == "forward":
        return b * inp
    if pass_ == "grad_input":
        (dh, dw) = spec.dilation
        spread = spec.n * spec.c_out * (spec.h + dh * (spec.kh - 1)) * (
            spec.w + dw * (spec.kw - 1))
        return b * (out + spread)
    chunks = 4 * torch.get_num_threads() + 1
    return b * (padded + out + chunks * weight)


def cost(spec, dtype, device):
    """Estimated seconds for the forward pass (flops / throughput + output + overhead).

    Zero padding costs nothing extra: the forward pass makes no padded copy of the input.
    Short rows run as flat runs over the padded row layout, which also computes the
    ``dW (kW - 1)`` dropped columns past each row: the work grows by ``Wp / oW`` (2x for a
    31-wide kernel on 28-wide rows).
    """
    rate = _SECONDS_PER_FLOP if spec.stride == (1, 1) else _SECONDS_PER_FLOP_STRIDED
    if dtype == torch.float64:
        rate *= 2
    flops = spec.flops()
    if spec.stride == (1, 1) and spec.out_w < _FLAT_MAX_WIDTH:
        flops *= (spec.out_w + spec.dilation[1] * (spec.kw - 1)) / spec.out_w
    outputs = spec.n * spec.c_out * spec.out_h * spec.out_w
    return flops * rate + outputs * _SECONDS_PER_OUTPUT + _OVERHEAD
