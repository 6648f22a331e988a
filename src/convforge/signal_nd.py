"""N-D ``convolve``, ``correlate``, ``fftconvolve``, ``oaconvolve`` and
``choose_conv_method`` with scipy.signal's signatures, semantics, dtypes and errors.

NumPy in, NumPy out, any number of dimensions (both inputs the same). The two methods:

* ``"direct"``: the exact sum, computed by convforge's own convolutions on float64 /
  complex128 tensors (:func:`convforge.conv1d`, :func:`convforge.conv2d`,
  :func:`convforge.conv3d`; four or more dimensions as a sum over the first axis's taps of
  lower-dimensional ones). Integer inputs are summed in float64 when every partial sum is
  exact there (``max|in1| max|in2| min(size) < 2**53``), else in int64 (exact modulo
  2**64), and cast to the result type with scipy's wrap-around.
* ``"fft"``: products of real (or complex) FFTs of the zero-padded inputs (``scipy.fft``
  with 5-smooth lengths, on as many threads as torch uses); a long 1-D signal with a much
  shorter filter is done by overlap-save in blocks of a few thousand samples (that is
  ``oaconvolve``'s domain, and 2x faster here than scipy's own for 10**7 samples and 255
  taps). Integer results are rounded, as scipy rounds them.

``"auto"`` picks the method with our own cost estimate (:func:`choose_conv_method`).

Result dtypes as scipy's: ``convolve`` / ``correlate`` return ``np.result_type(in1,
in2)`` (integers stay integers; ``"direct"`` refuses bool and float16, as scipy does);
``fftconvolve`` / ``oaconvolve`` return floats (float64 for integers, float32 for
float16/float32, complex for complex inputs).
"""

from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
import scipy.fft as sp_fft
import torch

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "choose_conv_method"]

_MODES = ("full", "same", "valid")
_METHODS = ("auto", "direct", "fft")
# cost model of choose_conv_method (seconds), measured on the 2-core machine: the direct
# loops do ~1e10 real multiply-adds per second, scipy.fft ~ 1.4e9 "N log2 N" units
_DIRECT_MAC = 1.0e-10
_FFT_UNIT = 7.0e-10
_OVERHEAD = 2.0e-5
_EXACT = 2 ** 53


def _array(func, name, value):
    if isinstance(value, torch.Tensor):
        value = value.detach().resolve_conj().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{func}: {name} must be a numeric array (bool, integer, float or "
                        f"complex), but got dtype {a.dtype}")
    return a


def _check(func, in1, in2, mode, axes=None):
    """scipy's checks: equal dimensionality, a known mode, 'valid' sizes. Returns the
    convolution axes and whether the inputs must be swapped (mode 'valid')."""
    if in1.ndim != in2.ndim:
        raise ValueError(f"{func}: in1 and in2 should have the same dimensionality, but got "
                         f"{in1.ndim}D and {in2.ndim}D")
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"{func}: acceptable mode flags are 'valid', 'same', or 'full', "
                         f"but got mode={mode!r}")
    axes = _axes(func, axes, in1.ndim)
    for a in range(in1.ndim):
        if a not in axes and in1.shape[a] != in2.shape[a] and 1 not in (in1.shape[a],
                                                                         in2.shape[a]):
            raise ValueError(f"{func}: incompatible shapes for in1 and in2: {in1.shape} "
                             f"and {in2.shape} (axis {a} is not convolved and does not "
                             f"broadcast)")
    swap = False
    if mode == "valid":
        big1 = all(in1.shape[a] >= in2.shape[a] for a in axes)
        big2 = all(in2.shape[a] >= in1.shape[a] for a in axes)
        if not (big1 or big2):
            raise ValueError(f"{func}: for 'valid' mode, one must be at least as large as the "
                             f"other in every dimension, but got shapes {in1.shape} and "
                             f"{in2.shape}")
        swap = not big1
    return axes, swap


def _axes(func, axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    if not isinstance(axes, numbers.Integral) and not np.iterable(axes):
        raise ValueError(f"{func}: axes must be an int or a sequence of ints, but got "
                         f"{axes!r}")
    items = [axes] if isinstance(axes, numbers.Integral) else list(axes)
    out = []
    for a in items:
        if not isinstance(a, numbers.Integral) or not -ndim <= a < ndim:
            raise ValueError(f"{func}: axes must be integers in [-{ndim}, {ndim}), but got "
                             f"{axes!r}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{func}: axes must be unique, but got {axes!r}")
    return tuple(sorted(out))


def _crop(full, s1, s2, mode, axes):
    """The 'same' (centred on in1's shape) or 'valid' part of a full result."""
    if mode == "full":
        return full
    index = [slice(None)] * full.ndim
    for a in axes:
        if mode == "same":
            start = (full.shape[a] - s1[a]) // 2
            index[a] = slice(start, start + s1[a])
        else:
            index[a] = slice(s2[a] - 1, s1[a])
    return full[tuple(index)]


# ------------------------------------------------------------------------------ direct

def _valid_torch(a, k):
    """Valid cross-correlation (no conjugation) of ``a`` ``(B, *S)`` with ``k`` ``K``;
    float64 or complex128 tensors. 1-3 axes: one convforge convolution; more: a sum over
    the first axis's taps of lower-dimensional ones, batched over the output rows."""
    from . import functional, functional_nd

    nd = k.dim()
    real = not a.is_complex()
    algorithm = "direct" if real else "im2col"
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
    """Valid correlation summed by NumPy in ``dtype`` (int64: exact modulo 2**64;
    long double: its precision): one shifted multiply-add per non-zero tap."""
    oshape = tuple(s - q + 1 for s, q in zip(a.shape, k.shape, strict=True))
    out = np.zeros(oshape, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in zip(*np.nonzero(k), strict=True):
            out += k[t] * a[tuple(slice(i, i + o) for i, o in zip(t, oshape, strict=True))]
    return out


def _direct_full(a, b):
    """The full convolution of ``a`` and ``b`` (same ndim), exact: float64 / complex128, or
    int64 for integer inputs whose sums float64 cannot hold exactly, or long double."""
    kernel = b[tuple(slice(None, None, -1) for _ in range(b.ndim))]
    pads = [(q - 1, q - 1) for q in b.shape]
    rt = np.result_type(a, b)
    if a.dtype.kind in "biu" and b.dtype.kind in "biu" and _int_bound(a, b) >= _EXACT:
        return _valid_numpy(np.pad(a.astype(np.int64), pads), kernel.astype(np.int64))
    if rt.kind in "fc" and rt.itemsize > (16 if rt.kind == "c" else 8):      # long double
        return _valid_numpy(np.pad(a.astype(rt), pads), kernel.astype(rt), rt)
    ct = np.complex128 if rt.kind == "c" else np.float64
    x = torch.from_numpy(np.pad(a.astype(ct), pads))
    k = torch.from_numpy(np.array(kernel, dtype=ct, order="C"))   # fresh: positive strides
    return _valid_torch(x[None], k)[0].numpy()


# --------------------------------------------------------------------------------- fft

def _workers():
    return max(1, torch.get_num_threads())


def _ols_1d(a, b, complex_out, real=np.float64):
    """Full 1-D convolution by overlap-save: frames of ``n`` samples hop by ``n - m + 1``;
    each block of frames is transformed, multiplied by the filter's spectrum and
    transformed back (a few MiB at a time)."""
    m = b.shape[0]
    length = a.shape[0] + m - 1
    n = max(1024, 1 << (8 * m - 1).bit_length())      # ~8x the filter, a power of two
    hop = n - m + 1
    frames = -(-length // hop)
    dtype = np.result_type(real, np.complex64) if complex_out else np.dtype(real)
    padded = np.zeros((frames - 1) * hop + n, dtype)
    padded[m - 1:m - 1 + a.shape[0]] = a
    item = padded.itemsize
    view = np.lib.stride_tricks.as_strided(padded, (frames, n), (hop * item, item),
                                           writeable=False)
    fwd, inv = (sp_fft.fft, sp_fft.ifft) if complex_out else (sp_fft.rfft, sp_fft.irfft)
    spectrum = fwd(b.astype(dtype), n=n)
    out = np.empty((frames, hop), dtype)
    block = max(1, (1 << 20) // n)                    # ~8 MiB of frames per transform
    workers = _workers()
    for s in range(0, frames, block):
        f = fwd(view[s:s + block], n=n, axis=-1, workers=workers)
        f *= spectrum
        out[s:s + block] = inv(f, n=n, axis=-1, workers=workers, overwrite_x=True)[:, m - 1:]
    return out.reshape(-1)[:length]


def _use_ols(a, b, axes):
    return (a.ndim == 1 and axes == (0,) and b.shape[0] >= 8
            and a.shape[0] >= 16 * b.shape[0])


def _fft_full(a, b, axes):
    """The full convolution over ``axes`` (other axes broadcast) by FFTs, float64 or
    complex128 (long double for long double inputs, as scipy)."""
    complex_out = a.dtype.kind == "c" or b.dtype.kind == "c"
    rt = np.result_type(a, b)
    real = np.longdouble if rt.kind in "fc" and rt.itemsize > (16 if complex_out else 8) \
        else np.float64
    cplx = np.result_type(real, np.complex64)
    if _use_ols(a, b, axes):
        return _ols_1d(a, b, complex_out, real)
    if _use_ols(b, a, axes):
        return _ols_1d(b, a, complex_out, real)
    full = [a.shape[i] + b.shape[i] - 1 for i in axes]
    fast = [sp_fft.next_fast_len(n, not complex_out) for n in full]
    workers = _workers()
    if complex_out:
        fa = sp_fft.fftn(a.astype(cplx), fast, axes=axes, workers=workers)
        fb = sp_fft.fftn(b.astype(cplx), fast, axes=axes, workers=workers)
        out = sp_fft.ifftn(fa * fb, fast, axes=axes, workers=workers, overwrite_x=True)
    else:
        fa = sp_fft.rfftn(a.astype(real), fast, axes=axes, workers=workers)
        fb = sp_fft.rfftn(b.astype(real), fast, axes=axes, workers=workers)
        out = sp_fft.irfftn(fa * fb, fast, axes=axes, workers=workers, overwrite_x=True)
    return out[tuple(slice(0, full[axes.index(i)]) if i in axes else slice(None)
                     for i in range(out.ndim))]


def _precision(x):
    """The real type scipy.fft transforms ``x`` in."""
    if x.dtype in (np.float16, np.float32, np.complex64):
        return np.dtype(np.float32)
    if x.dtype.kind in "fc" and x.dtype.itemsize > (16 if x.dtype.kind == "c" else 8):
        return np.dtype(np.longdouble)
    return np.dtype(np.float64)


def _fft_dtype(a, b):
    """fftconvolve's result dtype: the wider of the inputs' transform precisions (float64
    for integers and bool, float32 for float16/float32), complex for complex inputs."""
    real = np.promote_types(_precision(a), _precision(b))
    return np.result_type(real, np.complex64) if "c" in (a.dtype.kind, b.dtype.kind) else real


def _fft_arrays(func, a, b, mode, axes):
    """scipy.signal.fftconvolve on arrays: axes where either input has size 1 are not
    transformed but broadcast (multiplied), as scipy does; with no axis left the result
    is the plain product ``a * b`` in its own dtype."""
    if a.ndim == b.ndim == 0:
        return a * b
    if a.ndim != b.ndim:
        _check(func, a, b, mode)
    if a.size == 0 or b.size == 0:       # scipy returns this before looking at mode / axes
        return np.array([])
    if axes is not None and not isinstance(axes, numbers.Integral) and np.iterable(axes) \
            and len(axes) == 0:
        raise ValueError(f"{func}: axes, when given, must not be empty, but got {axes!r}")
    s1 = a.shape
    axes = tuple(i for i in _axes(func, axes, a.ndim) if a.shape[i] != 1 and b.shape[i] != 1)
    _, swap = _check(func, a, b, mode, axes)
    if swap:
        a, b = b, a
    out = _fft_full(a, b, axes).astype(_fft_dtype(a, b), copy=False) if axes else a * b
    if mode == "full":
        return out
    keep = s1 if mode == "same" else [a.shape[i] - b.shape[i] + 1 if i in axes else n
                                      for i, n in enumerate(out.shape)]
    return out[tuple(slice((n - k) // 2, (n - k) // 2 + k)
                     for n, k in zip(out.shape, keep, strict=True))]


def _fftconvolve(func, in1, in2, mode, axes):
    return _fft_arrays(func, _array(func, "in1", in1), _array(func, "in2", in2), mode, axes)


def fftconvolve(in1, in2, mode="full", axes=None):
    """Convolve two N-D arrays by FFTs (``scipy.signal.fftconvolve``).

    Args:
        in1, in2: arrays of the same ndim (tensors are converted).
        mode: ``"full"``, ``"same"`` (in1's shape, centred) or ``"valid"``.
        axes: the axes to convolve over (default all); the others must be equal or 1 in
            one input (broadcast).

    Returns:
        float64 for integer inputs, float32 for float16/float32, complex for complex.

    Example:
        >>> fftconvolve([1, 2, 3], [1, 1])
        array([1., 3., 5., 3.])
    """
    return _fftconvolve("fftconvolve", in1, in2, mode, axes)


def oaconvolve(in1, in2, mode="full", axes=None):
    """Convolve two N-D arrays by overlap-add / overlap-save FFTs
    (``scipy.signal.oaconvolve``): the same values and dtypes as :func:`fftconvolve`;
    a long 1-D signal and a short filter go through blocks of a few thousand samples.

    Example:
        >>> oaconvolve([1, 2, 3], [1, 1], mode="same")
        array([1., 3., 5.])
    """
    return _fftconvolve("oaconvolve", in1, in2, mode, axes)


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
    axes = tuple(range(a.ndim))
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
    out = _crop(_direct_full(a, b), a.shape, b.shape, mode, axes)
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
    return _convolve("convolve", _array("convolve", "in1", in1),
                     _array("convolve", "in2", in2), mode, method)


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
        return a * b.conj()
    if a.ndim != b.ndim:
        _check("correlate", a, b, mode)
    rev = b[tuple(slice(None, None, -1) for _ in range(b.ndim))].conj()
    return _convolve("correlate", a, rev, mode, method)


# ------------------------------------------------------------------ choosing a method

def _costs(a, b, mode):
    """Estimated seconds of the direct and the FFT method (our model)."""
    axes = tuple(range(a.ndim))
    full = [p + q - 1 for p, q in zip(a.shape, b.shape, strict=True)]
    out = math.prod(full if mode == "full" else a.shape if mode == "same"
                    else [p - q + 1 for p, q in zip(a.shape, b.shape, strict=True)])
    complex_ = np.result_type(a, b).kind == "c"
    macs = out * min(a.size, b.size) * (4 if complex_ else 1)
    direct = _OVERHEAD + macs * _DIRECT_MAC
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
