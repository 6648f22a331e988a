"""``fftconvolve`` and ``oaconvolve`` with scipy.signal's signatures, semantics and dtypes,
and the argument checks shared with :mod:`convforge.signal_nd`.

The FFT method: products of real (or complex) FFTs of the zero-padded inputs
(``scipy.fft`` with 5-smooth lengths, on as many threads as torch uses); a long 1-D
signal with a much shorter filter is done by overlap-save in blocks of a few thousand
samples (that is ``oaconvolve``'s domain, and faster here than scipy's own: 10**7
samples and 255 taps in ``benchmarks/signal_nd.py``). Axes where either input has size 1
are broadcast (multiplied), not transformed, as in scipy; results are floats of the
inputs' transform precision (float64 for integers and bool, float32 for float16/float32,
long double for long double), complex for complex inputs.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .algorithms._common import LazyModule

sp_fft = LazyModule("scipy.fft")    # imported by the first FFT (~0.14 s of import)

__all__ = ["fftconvolve", "oaconvolve"]

_MODES = ("full", "same", "valid")


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


def _like(result, in1):
    """NumPy in, NumPy out: a tensor ``in1`` gets a tensor back (on its device)."""
    if not isinstance(in1, torch.Tensor):
        return result
    return torch.from_numpy(np.ascontiguousarray(result)).to(in1.device)


def _fftconvolve(func, in1, in2, mode, axes):
    out = _fft_arrays(func, _array(func, "in1", in1), _array(func, "in2", in2), mode, axes)
    return _like(out, in1)


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
