"""Depthwise convolutions (one input channel per group) as compiled flat runs (Numba).

MobileNet's 3x3 and ConvNeXt's 7x7 depthwise layers are where torch's CPU kernels are
weakest: on NCHW tensors oneDNN reorders input and output to a blocked layout on every
call (fresh pages each time: 13,800 page faults and 25 ms for one 32x144x32x32 forward
here), and the backward pass is slower still. Here every output plane is computed from
one input plane, in cache, with no reorder:

* a task (output channel, chunk of samples) zero-pads the planes it reads into a scratch
  block, which is zeroed once per task: later planes overwrite the same positions;
* stride (sH, sW) is folded into the layout: the padded plane is split into sH * sW
  *phases* (rows y with y % sH = a, columns x % sW = b), so that every tap of a strided
  convolution reads a stride-1 window of one phase;
* the plane is then one *flat run*: output (y, x) sits at ``y Wq + x`` of the phase row
  layout, tap (i, j) at a fixed offset, and ``out[p] = sum_t w_t buf[p + off_t]`` is a
  contiguous loop over p, eight taps per pass (``direct``'s ``_correlate_run``); the
  ``Wq - oW`` columns past each row end are computed and dropped;
* small planes are stacked: the phase images of several samples (same channel, same
  weights) lie one after another in each phase block, so one run covers them all (a 4x4
  map with a 3x3 kernel is 36 of every 16 outputs' worth of work, in one long loop
  instead of 32 loops of two vectors).

Backward passes (derivation in ``autograd.py``):

* ``grad_input`` is the same loop on the gradient *spread* by the stride (zeros between
  samples) and padded by ``d (k - 1) - pad``, with the flipped kernel; with a channel
  multiplier m, each input plane sums the runs of its m output planes;
* ``grad_weight[o, t]`` is one dot product per tap between the gradient rows, laid out
  ``Wq`` apart with zero tails, and the input's phase image at the tap's offset. A block
  whose input holds NaN or infinity is summed over the valid positions only, so that
  ``0 * inf`` never enters a sum torch does not form.

Float32 and float64 on the CPU, any kernel size, stride, dilation and zero padding (fused:
the input arrives unpadded); ``C_out = m * C_in`` with one input channel per group. The
first call in a process compiles or loads the loops, as ``direct``'s do (see its docstring
and ``convforge._compile``); "auto" never waits for it.

Example:
    >>> import convforge
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> convforge.conv2d(x, torch.ones(1, 1, 2, 2), algorithm="depthwise")
    tensor([[[[10., 14., 18.],
              [26., 30., 34.],
              [42., 46., 50.]]]])
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import LazyModule, counts, no_cuda_reason
from ._threads import numba_threads as _threads
from .direct import _array, _empty

_k = LazyModule(__package__ + "._depthwise_kernels")  # Numba: loaded on first use

COMPILED = True            # Numba kernels, compiled on first use (convforge._compile)
FUSED_ZERO_PADDING = True
FUSED_BIAS = True          # added as the outputs are copied out of the run
_DTYPES = (torch.float32, torch.float64)
_STACK_ELEMS = 4096        # stack small planes into runs of about this length
_TASKS_PER_THREAD = 4

# ---- cost model constants (seconds), for dispatch; benchmarks/fit_cost_model.py fits
# the weights of these terms. Measured on the 2-core machine, float32: a 32x144x32x32
# 3x3 forward (9 taps over 35 M run elements) in about 2 ms on 2 threads.
_SECONDS_PER_TAP_ELEM = 1 / 12e9
_SECONDS_PER_ELEM = 1.5e-10
_OVERHEAD = 2e-5


def supports(spec, dtype, device):
    reason = no_cuda_reason(device)
    if reason is not None:
        return reason + " (compiled Numba loops)"
    if dtype not in _DTYPES:
        return f"compiled for float32 and float64 only, not {dtype}"
    if spec.c_in != spec.groups:
        return (f"depthwise layers only (one input channel per group), not "
                f"{spec.c_in // spec.groups} per group")
    return None


def _geometry(h, w, kh, kw, pads, spread, stride, dilation):
    """(hp, wp, hq, wq, oh, ow): the padded, spread plane, its phases and the output."""
    top, bottom, left, right = pads
    (uh, uw), (sh, sw), (dh, dw) = spread, stride, dilation
    hp = top + (h - 1) * uh + 1 + bottom
    wp = left + (w - 1) * uw + 1 + right
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    return hp, wp, -(-hp // sh), -(-wp // sw), oh, ow


def _offsets(kh, kw, stride, dilation, hq, wq, stack):
    """Offset of every tap (i, j) in the phase image, ``stack`` planes per phase block."""
    (sh, sw), (dh, dw) = stride, dilation
    i = np.arange(kh)[:, None] * dh
    j = np.arange(kw)[None, :] * dw
    offs = ((i % sh) * sw + j % sw) * stack * hq * wq + (i // sh) * wq + j // sw  # (kH, kW)
    return np.ascontiguousarray(offs.reshape(-1), np.int64)


def _chunk(n, planes, threads):
    """Samples per task: enough tasks (planes x chunks) to feed every thread."""
    nchunk = max(1, min(n, -(-_TASKS_PER_THREAD * threads // planes)))
    return -(-n // nchunk)


def _stack(pitch, chunk):
    return max(1, min(chunk, _STACK_ELEMS // pitch))


def _run(src, w, c_out, pads, spread, stride, dilation, div, mul, reps, out_hw=None,
         bias=None):
    """The flat-run loop over every (sample, output plane), plus ``bias``; NumPy out."""
    n, _, h, wd = src.shape
    kh, kw = w.shape[-2:]
    hp, wp, hq, wq, oh, ow = _geometry(h, wd, kh, kw, pads, spread, stride, dilation)
    if out_hw is not None and (oh, ow) != tuple(out_hw):
        raise RuntimeError(f"depthwise: internal geometry {(oh, ow)} != {tuple(out_hw)}")
    out = _empty((n, c_out, oh, ow), src.dtype)
    threads = _threads(n * c_out * oh * ow * kh * kw * reps)
    top, _, left, _ = pads
    shape = (n, src.shape[1], h, wd, c_out, oh, ow)
    chunk = _chunk(n, c_out, threads)
    stack = _stack(hq * wq, chunk)
    offs = _offsets(kh, kw, stride, dilation, hq, wq, stack)
    b = np.zeros(c_out, out.numpy().dtype) if bias is None else _array(bias.to(out.dtype))
    _k.forward_kernel(_array(src).reshape(-1), _array(w).reshape(-1), b,
                      out.numpy().reshape(-1), shape, top, left, spread[0], spread[1],
                      stride[0], stride[1], hp, wp, hq, wq, offs, div, mul, reps, stack, chunk)
    return out


def forward(x, w, spec, bias=None):
    m = spec.c_out // spec.c_in
    return _run(x, w, spec.c_out, spec.padding, (1, 1), spec.stride, spec.dilation, m, 1, 1,
                (spec.out_h, spec.out_w), bias)                       # (N, C_out, oH, oW)


def grad_input(grad_out, w, spec, x_shape):
    """The forward loop on grad_out spread by the stride, padded by d (k - 1) - pad."""
    n, c_in, h, wd = x_shape
    kh, kw = w.shape[-2:]
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, _, left, _ = spec.padding
    oh, ow = grad_out.shape[-2:]
    t2, l2 = dh * (kh - 1) - top, dw * (kw - 1) - left
    b2 = h + dh * (kh - 1) - t2 - ((oh - 1) * sh + 1)
    r2 = wd + dw * (kw - 1) - l2 - ((ow - 1) * sw + 1)
    m = spec.c_out // c_in
    wf = w.detach().flip(-2, -1)                                       # (C_out, 1, kH, kW)
    return _run(grad_out, wf, c_in, (t2, b2, l2, r2), (sh, sw), (1, 1), (dh, dw), 1, m, m,
                (h, wd))                                               # (N, C_in, H, W)


def grad_weight(x, grad_out, spec, w_shape):
    c_out, _, kh, kw = w_shape
    n, _, h, wd = x.shape
    hp, wp, hq, wq, oh, ow = _geometry(h, wd, kh, kw, spec.padding, (1, 1), spec.stride,
                                       spec.dilation)
    threads = _threads(grad_out.numel() * kh * kw)
    chunk = _chunk(n, c_out, threads)
    nchunk = -(-n // chunk)
    partial = np.zeros((c_out, nchunk, kh * kw),
                       np.float32 if x.dtype == torch.float32 else np.float64)
    top, _, left, _ = spec.padding
    shape = (n, x.shape[1], h, wd, c_out, oh, ow)
    div = c_out // spec.c_in
    stack = _stack(hq * wq, chunk)
    offs = _offsets(kh, kw, spec.stride, spec.dilation, hq, wq, stack)
    _k.grad_weight_kernel(_array(x).reshape(-1), _array(grad_out).reshape(-1),
                          partial.reshape(-1), shape, top, left, spec.stride[0],
                          spec.stride[1], hp, wp, hq, wq, offs, kw, spec.dilation[0],
                          spec.dilation[1], div, stack, nchunk)
    return torch.from_numpy(partial.sum(axis=1)).reshape(w_shape)


def _task_bytes(n, c_out, h, w, kh, kw, pads, spread, stride, dilation, b, grad=False):
    """Scratch of the tasks running at once: each holds its zero-padded phase images
    (``stack`` planes) and an output run (forward) or a gradient block (weight gradient).
    An empty batch or channel set runs no task."""
    if n <= 0 or c_out <= 0:
        return 0
    hp, wp, hq, wq, oh, _ = _geometry(h, w, kh, kw, pads, spread, stride, dilation)
    threads = max(1, torch.get_num_threads())
    chunk = _chunk(n, c_out, threads)
    pitch = hq * wq
    stack = _stack(pitch, chunk)
    size = stride[0] * stride[1] * stack * pitch + (kh * dilation[0] + 1) * wq + 64
    second = stack * pitch + 16 if grad else (stack - 1) * pitch + oh * wq + 16
    tasks = min(threads, c_out * -(-n // chunk))
    return tasks * (size + second) * b


def workspace_bytes(spec, dtype, pass_):
    """Contiguous copies of non-contiguous operands and the running tasks' scratch blocks
    (a padded plane and an output run each, :func:`_task_bytes`): the loops read the
    padding, the stride's zeros and the output in place."""
    inp, _, out, weight = counts(spec)
    b = dtype.itemsize
    geometry = (spec.kh, spec.kw)
    if pass_ == "forward":
        return b * inp + _task_bytes(spec.n, spec.c_out, spec.h, spec.w, *geometry,
                                     spec.padding, (1, 1), spec.stride, spec.dilation, b)
    if pass_ == "grad_input":
        (dh, dw) = spec.dilation
        top, bottom, left, right = spec.padding
        pads = (dh * (spec.kh - 1) - top, dh * (spec.kh - 1) - bottom,
                dw * (spec.kw - 1) - left, dw * (spec.kw - 1) - right)
        return b * out + _task_bytes(spec.n, spec.c_in, spec.out_h, spec.out_w, *geometry,
                                     tuple(max(0, p) for p in pads), spec.stride, (1, 1),
                                     spec.dilation, b)
    return b * (inp + out + (spec.n + 1) * weight) + _task_bytes(
        spec.n, spec.c_out, spec.h, spec.w, *geometry, spec.padding, (1, 1), spec.stride,
        spec.dilation, b, grad=True)


def cost(spec, dtype, device):
    """Estimated seconds of the forward pass: taps x run elements (a plane's run is its
    phase block, ``hq wq``: the dropped columns and rows included) plus one read and one
    write per element."""
    sh, sw = spec.stride
    hq, wq = -(-spec.padded_h // sh), -(-spec.padded_w // sw)
    run = spec.n * spec.c_out * hq * wq * spec.kh * spec.kw
    elems = spec.n * (spec.c_in * spec.h * spec.w + spec.c_out * spec.out_h * spec.out_w)
    scale = 2.0 if dtype == torch.float64 else 1.0
    return scale * (run * _SECONDS_PER_TAP_ELEM + elems * _SECONDS_PER_ELEM) + _OVERHEAD
