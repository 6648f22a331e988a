"""N-D ``convolve``, ``correlate``, ``fftconvolve``, ``oaconvolve`` and
``choose_conv_method`` with scipy.signal's signatures, semantics, dtypes and errors.

NumPy in, NumPy out (a tensor ``in1`` gives a tensor, as :func:`convforge.correlate2d`),
any number of dimensions (both inputs the same). The two methods:

* ``"direct"``: the exact sum, computed by convforge's own convolutions on float64 /
  complex128 tensors (:func:`convforge.conv1d`, :func:`convforge.conv2d`,
  :func:`convforge.conv3d`; four or more dimensions as a sum over the first axis's taps of
  lower-dimensional ones). Integer inputs are summed in float64 when every partial sum is
  exact there (``max|in1| max|in2| min(size) < 2**53``), else in int64 (exact modulo
  2**64), and cast to the result type with scipy's wrap-around.
* ``"fft"``: :mod:`convforge.signal_fft` (scipy.fft products; overlap-save for a long
  1-D signal and a short filter). Integer results are rounded, as scipy rounds them.

``"auto"`` picks the method with our own cost estimate (:func:`choose_conv_method`);
unlike scipy's, it never picks a method that refuses the dtype (float16 in two or more
dimensions goes to the FFT, where scipy's choice of "direct" raises).

Result dtypes as scipy's: ``convolve`` / ``correlate`` return ``np.result_type(in1,
in2)`` (integers stay integers; ``"direct"`` refuses bool and float16 except for 1-D
inputs, as scipy does); ``fftconvolve`` / ``oaconvolve`` return floats (float64 for
integers, float32 for float16/float32, complex for complex inputs). Empty inputs give
scipy's outcomes: zeros where scipy's direct loop forms an output, otherwise
``ValueError`` (:class:`EmptyInputError`, also an ``IndexError``, for ``"fft"``).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from .algorithms._common import LazyModule
from .signal_fft import (
    _array,
    _check,
    _fft_arrays,
    _like,
    _use_ols,
    fftconvolve,
    oaconvolve,
)

sp_fft = LazyModule("scipy.fft")    # imported by the first FFT (~0.14 s of import)

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "choose_conv_method",
           "EmptyInputError"]

_METHODS = ("auto", "direct", "fft")
# cost model of choose_conv_method (seconds), measured on the 2-core machine: the direct
# loops do ~1e10 real multiply-adds per second, scipy.fft ~ 1.4e9 "N log2 N" units
_DIRECT_MAC = 1.0e-10
_NUMPY_MAC = 8.0e-10         # NumPy's shifted multiply-adds, 0.5-0.9 ns each (measured)
_NUMPY_WORK = 1 << 22        # up to ~4M multiply-adds (a few ms) as NumPy passes
_FFT_UNIT = 7.0e-10
_OVERHEAD = 2.0e-5
_EXACT = 2 ** 53


# ------------------------------------------------------------------------------ direct

def _valid_torch(a, k):
    """Valid cross-correlation (no conjugation) of ``a`` ``(B, *S)`` with ``k`` ``K``;
    float64 or complex128 tensors. 1-3 axes: one convforge convolution; more: a sum over
    the first axis's taps of lower-dimensional ones, batched over the output rows."""
    from . import functional, functional_nd

    nd = k.dim()
    out = math.prod(s - q + 1 for s, q in zip(a.shape[1:], k.shape, strict=True))
    # convforge's direct loops are fastest (and exact) while the output outnumbers the
    # taps; with more taps than outputs (a 'same' window of a small in1 under a large in2)
    # they slow down by 100x (40x40 outputs of 150x150 taps: 24 s) and im2col's GEMM
    # takes 0.2 s; complex tensors go to im2col anyway.
    algorithm = "direct" if not a.is_complex() and out >= k.numel() else "im2col"
    if nd <= 3:
        conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional_nd.conv3d}[nd]
        return conv(a.unsqueeze(1), k[None, None], algorithm=algorithm)[:, 0]
    b, s0 = a.shape[0], a.shape[1]
    o0 = s0 - k.shape[0] + 1
    out = None
    for t in range(k.shape[0]):
        part = a[:, t:t + o0].reshape(b * o0, *a.shape[2:])
        y = _valid_torch(part, k[t]).reshape(b, o0, *[s - q + 1 for s, q in
                                                      zip(a.shape[2:], k.shape[1:],
                                                          strict=True)])
        out = y if out is None else out + y
    return out


def _absmax(x):
    """max |x| as an exact Python number (uint64 and int64's minimum included)."""
    if x.size == 0:
        return 0
    if x.dtype.kind == "b":
        return int(x.any())
    if x.dtype.kind in "iu":
        return max(abs(int(x.min())), abs(int(x.max())))
    return float(np.abs(x).max())


def _int_bound(a, b):
    """A bound on every partial sum of the convolution of ``a`` and ``b`` (floats
    truncated, as scipy counts them; non-finite: unbounded)."""
    try:
        return int(_absmax(a)) * int(_absmax(b)) * min(a.size, b.size)
    except (OverflowError, ValueError):
        return 2 ** 64


def _valid_numpy(a, k, dtype=np.int64):
    """Valid correlation summed by NumPy in ``dtype`` (int64: exact modulo 2**64; floats:
    float64 / complex128 / long double): one shifted multiply-add per tap (integers skip
    zero taps; floats keep them, so 0 * inf is NaN as in a plain sum)."""
    oshape = tuple(s - q + 1 for s, q in zip(a.shape, k.shape, strict=True))
    out, term = np.zeros(oshape, dtype), np.empty(oshape, dtype)
    taps = zip(*np.nonzero(k), strict=True) if np.dtype(dtype).kind == "i" else \
        np.ndindex(*k.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in taps:
            np.multiply(a[tuple(slice(i, i + o) for i, o in zip(t, oshape, strict=True))],
                        k[t], out=term)
            out += term
    return out


def _pads(b, mode):
    """Zero padding of in1 so that a valid correlation with the flipped in2 gives the
    mode's output directly ('same': the centred window scipy keeps)."""
    if mode == "full":
        return [(q - 1, q - 1) for q in b.shape]
    if mode == "same":
        return [(q - 1 - (q - 1) // 2, (q - 1) // 2) for q in b.shape]
    return [(0, 0)] * b.ndim


def _numpy_path(a, b, mode):
    """Whether the direct sums run as NumPy passes (small work, or 3-D and more, where
    they measured faster than the convolutions: 50^3 with 3^3 taps 2 ms against 0.5 s)."""
    return a.ndim >= 3 or _direct_macs(a, b, mode) <= _NUMPY_WORK


def _direct_macs(a, b, mode):
    out = [p + q - 1 for p, q in zip(a.shape, b.shape, strict=True)] if mode == "full" \
        else a.shape if mode == "same" else [p - q + 1 for p, q in zip(a.shape, b.shape,
                                                                       strict=True)]
    return math.prod(out) * (min(a.size, b.size) if mode == "full" else b.size)


def _direct(a, b, mode):
    """The convolution of ``a`` and ``b`` (same ndim) in ``mode``, exact: float64 /
    complex128, or int64 for integer inputs whose sums float64 cannot hold exactly, or
    long double ('valid': ``a`` is the larger)."""
    if mode == "full" and b.size > a.size:     # fewer taps; the full sum is symmetric
        a, b = b, a
    kernel = b[tuple(slice(None, None, -1) for _ in range(b.ndim))]
    pads = _pads(b, mode)
    rt = np.result_type(a, b)
    if a.dtype.kind in "biu" and b.dtype.kind in "biu" and _int_bound(a, b) >= _EXACT:
        return _valid_numpy(np.pad(a.astype(np.int64), pads), kernel.astype(np.int64))
    if rt.kind in "fc" and rt.itemsize > (16 if rt.kind == "c" else 8):      # long double
        return _valid_numpy(np.pad(a.astype(rt), pads), kernel.astype(rt), rt)
    ct = np.complex128 if rt.kind == "c" else np.float64
    if _numpy_path(a, b, mode):
        return _valid_numpy(np.pad(a.astype(ct), pads), kernel.astype(ct), ct)
    x = torch.from_numpy(np.pad(a.astype(ct), pads))
    k = torch.from_numpy(np.array(kernel, dtype=ct, order="C"))   # fresh: positive strides
    return _valid_torch(x[None], k)[0].numpy()


# ---------------------------------------------------------------- convolve, correlate

def _direct_supported(func, rt, a, b, mode):
    """scipy's direct method sums 1-D inputs with NumPy (every dtype; 'same' only when
    in1 is the longer) and N-D ones in C, which refuses bool and float16."""
    numpy_1d = a.ndim == 1 and (mode != "same" or a.size >= b.size)
    if not numpy_1d and (rt.kind == "b" or rt == np.float16):
        raise ValueError(f"{func}: method 'direct' does not support dtype {rt} for these "
                         f"inputs (as in scipy: 'Unsupported type'); use method='fft'")


def _convolve(func, a, b, mode, method):
    if a.ndim == b.ndim == 0:
        return a * b
    _, swap = _check(func, a, b, mode)
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"{func}: acceptable method flags are 'auto', 'direct', or 'fft', "
                         f"but got method={method!r}")
    if swap:
        a, b = b, a
    if a.size == 0 or b.size == 0:
        return _empty(func, a, b, mode, method)
    if method == "auto":
        method = _choose(a, b, mode)
    rt = np.result_type(a, b)
    if method == "fft":
        out = _fft_arrays(func, a, b, mode, None)
        if rt.kind in "iu":             # rounded (bool: any non-zero is True, as scipy)
            out = np.around(out.real)
        if out.size and not np.isfinite(out.flat[0]):
            warnings.warn("Use of fft convolution on input with NAN or inf results in NAN or "
                          "inf output. Consider using method='direct' instead.",
                          RuntimeWarning, stacklevel=3)
        return out.astype(rt, copy=False)
    _direct_supported(func, rt, a, b, mode)
    out = _direct(a, b, mode)
    if rt.kind == "b":
        return out != 0                             # NumPy's: or of ands
    if rt.kind in "iu" and out.dtype.kind == "f":
        out = out.astype(np.int64)                 # exact integers: wraps on the cast below
    with np.errstate(over="ignore"):
        return out.astype(rt, copy=False)


class EmptyInputError(ValueError, IndexError):
    """An empty input where scipy raises IndexError (method 'fft'); also a ValueError."""


def _empty(func, a, b, mode, method):
    """scipy's outcomes for an empty input (``a``, ``b`` already swapped for 'valid'):
    'fft' fails (an IndexError in scipy); 'auto' fails for integers (scipy takes the
    maximum of an empty array) and is 'direct' otherwise; 'direct' fails for 1-D inputs
    (NumPy's sums) and otherwise gives zeros of the output's shape where scipy's N-D loop
    can form it."""
    shapes = f"shapes {a.shape} and {b.shape}"
    if method == "auto":
        if a.dtype.kind in "iu" or b.dtype.kind in "iu":
            raise ValueError(f"{func}: method 'auto' cannot weigh empty integer inputs (as in "
                             f"scipy), but got {shapes}")
        method = "direct"
    if method == "fft":
        raise EmptyInputError(f"{func}: method 'fft' needs non-empty inputs, but got {shapes}")
    rt = np.result_type(a, b)
    if a.ndim == 1 and (mode != "same" or a.size >= b.size):
        raise ValueError(f"{func}: 1-D inputs must not be empty, but got {shapes}")
    if mode == "valid":
        shape = [p - q + 1 for p, q in zip(a.shape, b.shape, strict=True)]
    else:
        s1, s2 = (b.shape, a.shape) if mode == "full" and b.size > a.size else (a.shape,
                                                                                b.shape)
        full = [p + q - 1 for p, q in zip(s1, s2, strict=True)]
        if min(full) < 0 or any(f < p and p != 1 for f, p in zip(full, s1, strict=True)):
            raise ValueError(f"{func}: with an empty input, an axis of size 0 needs the other "
                             f"input to have size 0 or 1 there (scipy's direct method), but "
                             f"got {shapes}")
        shape = full if mode == "full" else a.shape
    _direct_supported(func, rt, a, b, mode)
    return np.zeros(shape, rt)


def convolve(in1, in2, mode="full", method="auto"):
    """Convolve two N-D arrays (``scipy.signal.convolve``).

    Args:
        in1, in2: arrays of the same ndim (NumPy, lists or tensors).
        mode: ``"full"`` (every overlap), ``"same"`` (in1's shape, centred as scipy
            centres it) or ``"valid"`` (full overlaps only; one input must be at least as
            large as the other in every dimension, and the inputs are swapped if in2 is).
        method: ``"auto"`` (:func:`choose_conv_method`), ``"direct"`` (exact sums) or
            ``"fft"``.

    Returns:
        ``np.result_type(in1, in2)``, as scipy (integers stay integers: FFT results are
        rounded, direct sums wrap around as scipy's do).

    Raises:
        ValueError: different ndims, unknown mode or method, 'valid' sizes, empty inputs,
            bool or float16 with ``"direct"``.

    Example:
        >>> convolve([1, 2, 3], [0, 1, 0.5])
        array([0. , 1. , 2.5, 4. , 1.5])
        >>> convolve(np.eye(3, dtype=np.int8), np.ones((2, 2), np.int8), mode="valid")
        array([[2, 1],
               [1, 2]], dtype=int8)
    """
    return _like(_convolve("convolve", _array("convolve", "in1", in1),
                           _array("convolve", "in2", in2), mode, method), in1)


def correlate(in1, in2, mode="full", method="auto"):
    """Cross-correlate two N-D arrays (``scipy.signal.correlate``):
    ``z[k] = sum_l in1[l] conj(in2[l - k + N - 1])`` in ``"full"`` mode, i.e. the
    convolution of in1 with in2 reversed and conjugated; modes, methods, dtypes and errors
    as :func:`convolve`.

    Example:
        >>> correlate([1, 2, 3], [0, 1, 0.5])
        array([0.5, 2. , 3.5, 3. , 0. ])
    """
    a, b = _array("correlate", "in1", in1), _array("correlate", "in2", in2)
    if a.ndim == b.ndim == 0:
        return _like(a * b.conj(), in1)
    if a.ndim != b.ndim:
        _check("correlate", a, b, mode)
    rev = b[tuple(slice(None, None, -1) for _ in range(b.ndim))].conj()
    return _like(_convolve("correlate", a, rev, mode, method), in1)


# ------------------------------------------------------------------ choosing a method

def _costs(a, b, mode):
    """Estimated seconds of the direct and the FFT method (our model)."""
    axes = tuple(range(a.ndim))
    full = [p + q - 1 for p, q in zip(a.shape, b.shape, strict=True)]
    complex_ = np.result_type(a, b).kind == "c"
    macs = _direct_macs(a, b, mode) * (4 if complex_ else 1)
    direct = _OVERHEAD + macs * (_NUMPY_MAC if _numpy_path(a, b, mode) else _DIRECT_MAC)
    if _use_ols(a, b, axes) or _use_ols(b, a, axes):
        m = min(a.shape[0], b.shape[0])
        n = max(1024, 1 << (8 * m - 1).bit_length())
        frames = full[0] / (n - m + 1)
        units = 2 * frames * n * math.log2(n) / 2
    else:
        size = math.prod(sp_fft.next_fast_len(n, not complex_) for n in full)
        units = 3 * size * math.log2(max(size, 2)) / (1 if complex_ else 2)
    return direct, _OVERHEAD + units * _FFT_UNIT * (2 if complex_ else 1)


def _choose(a, b, mode):
    rt = np.result_type(a, b)
    if rt.kind == "b":
        return "direct"
    if rt == np.float16 and (a.ndim > 1 or (mode == "same" and a.size < b.size)):
        return "fft"                   # the direct method refuses float16 here (as scipy)
    if a.size == 0 or b.size == 0:
        if a.dtype.kind in "iu" or b.dtype.kind in "iu":
            raise ValueError(f"choose_conv_method: empty integer inputs cannot be weighed "
                             f"(as in scipy), but got shapes {a.shape} and {b.shape}")
        return "direct"
    if a.dtype.kind in "iu" or b.dtype.kind in "iu":
        if _int_bound(a, b) >= 2 ** 52:    # FFT rounding could miss the exact integer
            return "direct"
    direct, fft = _costs(a, b, mode)
    return "fft" if fft < direct else "direct"


def choose_conv_method(in1, in2, mode="full", measure=False):
    """The faster method of :func:`convolve` / :func:`correlate` for these inputs
    (``scipy.signal.choose_conv_method``), by convforge's own cost model: ``"direct"``
    for small kernels, bool, and integers whose exact result FFT rounding could miss;
    ``"fft"`` for large ones.

    Quality (``benchmarks/signal_nd.py``, 33 float64 shapes 1-D to 3-D on a 2-core
    machine): the chosen method took 1.07x the faster one's time on geometric average,
    1.87x at worst, and was within 10% of it in 28 of 33 cases.

    Args:
        measure: time both methods instead; then returns ``(method, {"direct": s,
            "fft": s})`` (the direct time is ``inf`` where that method refuses the dtype).

    Example:
        >>> choose_conv_method(np.ones(100), np.ones(3))
        'direct'
        >>> choose_conv_method(np.ones((300, 300)), np.ones((60, 60)))
        'fft'
    """
    func = "choose_conv_method"
    a, b = _array(func, "in1", in1), _array(func, "in2", in2)
    _check(func, a, b, mode)
    if not measure:
        return _choose(a, b, mode)
    times = {}
    for method in ("fft", "direct"):
        try:
            t0 = time.perf_counter()
            _convolve(func, a, b, mode, method)
            times[method] = time.perf_counter() - t0
        except ValueError:
            times[method] = float("inf")
    return min(times, key=times.get), times
