"""``correlate`` / ``convolve`` with scipy.ndimage's signatures, semantics and dtypes, N-D.

The output has the input's shape and, by default, its dtype; each output sample is the sum
of the weights times the input around it, centred at ``weights.shape // 2 + origin``,
with the input extended beyond its edges by ``mode``:

=================  ==========================  ===================================
mode               extension of ``a b c d``    the same in other libraries
=================  ==========================  ===================================
``reflect``        ``d c b a | a b c d | d c``  numpy "symmetric", OpenCV REFLECT
``mirror``         ``d c b | a b c d | c b``    numpy "reflect", OpenCV REFLECT_101
``nearest``        ``a a a | a b c d | d d``    numpy "edge", OpenCV REPLICATE
``wrap``           ``b c d | a b c d | a b``    numpy "wrap", OpenCV WRAP
``constant``       ``k k k | a b c d | k k``    numpy "constant" with ``cval``
=================  ==========================  ===================================

(``grid-mirror``, ``grid-wrap`` and ``grid-constant`` are scipy's aliases of reflect, wrap
and constant for filters.) Extensions longer than the input repeat with the mode's
period, as scipy's do.

What scipy's C loops do, and so do we (each measured against scipy):

* weights with ``|w| <= 2.2e-16`` (float64's epsilon) are left out of the sum, so a zero
  weight never meets a NaN or an infinity;
* the sum runs over the weights in C order from 0.0, in float64: small problems, few
  weights, 3-D and more, inputs with non-finite values, and outputs into integers that
  land within rounding of an integer are summed in exactly that order (bit for bit
  scipy's); the rest (1-D and 2-D with more than 9 weights) run on convforge's float64
  convolutions;
* float64 sums go into integer outputs as C casts them on x86-64: truncated toward zero;
  8-, 16- and 32-bit types and bool through a 32-bit integer (out of range or NaN gives
  -2**31, then the low bits), int64 and uint32 through a 64-bit one; unsigned types as
  ``-(T)(-x)`` below -1;
* complex input or weights are four (or two) real correlations combined as scipy combines
  them (correlate conjugates complex weights); ``convolve`` reverses the weights and
  mirrors the origin (``-origin``, one more to the left along axes of even size).
"""

from __future__ import annotations

import numbers
import operator
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from .signal_nd import _valid_torch

__all__ = ["correlate", "convolve"]

_MODES = {"reflect": "reflect", "grid-mirror": "reflect", "mirror": "mirror",
          "nearest": "nearest", "wrap": "wrap", "grid-wrap": "wrap",
          "constant": "constant", "grid-constant": "constant"}
_EPS = float(np.finfo(np.float64).eps)     # scipy's C filters skip |w| <= DBL_EPSILON
# summed in scipy's order (one multiply-add pass over the output per weight) when small,
# when few weights (faster than a convolution there), and in 3-D and more (measured: 64^3
# with 3x3x3 weights 0.01 s this way, 0.5 s by the 3-D convolutions in float64)
_ORDERED_WORK = 1 << 21
_ORDERED_TAPS = 9


def _as_array(x):
    if isinstance(x, torch.Tensor):
        return x.detach().resolve_conj().cpu().numpy()
    return np.asarray(x)


def _axes(func, axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    if np.isscalar(axes):
        items = [operator.index(axes)]
    elif isinstance(axes, Iterable):
        items = [operator.index(a) for a in axes]
    else:
        raise ValueError(f"{func}: axes must be None, an int or a sequence of ints, but got "
                         f"{axes!r}")
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"{func}: every axis must be in [-{ndim}, {ndim}), but got axes "
                             f"{axes!r}")
    items = [a % ndim for a in items]
    if len(set(items)) != len(items):
        raise ValueError(f"{func}: axes must be unique, but got {axes!r}")
    return tuple(items)


def _origins(func, origin, axes, ndim):
    """scipy's normalisation: one origin per filtered axis, 0 on the others (placed at
    ``axes[k]``; with every axis filtered, in the weights' own order, as scipy does)."""
    if not isinstance(origin, str) and np.iterable(origin):
        items = list(origin)
        if len(items) != len(axes):
            raise RuntimeError(f"{func}: origin must be one value or one per filtered axis "
                               f"({len(axes)}), but got {origin!r}")
    else:
        items = [origin] * len(axes)
    if len(axes) == ndim:
        return items
    full = [0] * ndim
    for o, a in zip(items, axes, strict=True):
        full[a] = o
    return full


def _output(func, output, input, complex_needed):
    """(dtype, array to fill or None), with scipy's rules and errors."""
    if output is None:
        if input.dtype.kind in "USV":
            raise TypeError(f"{func}: input must be numeric, but got dtype {input.dtype}")
        dtype = np.promote_types(input.dtype, np.complex64) if complex_needed else input.dtype
        return np.dtype(dtype), None
    if isinstance(output, (type, np.dtype)):
        dtype = np.dtype(output)
        if complex_needed and dtype.kind != "c":
            warnings.warn(f"{func}: complex input or weights: promoting the output dtype "
                          f"{dtype} to complex (as scipy does)", UserWarning, stacklevel=4)
            dtype = np.promote_types(dtype, np.complex64)
        return dtype, None
    if isinstance(output, str):
        dtype = np.dtype(output)
        if complex_needed and dtype.kind != "c":
            raise RuntimeError(f"{func}: complex input or weights need a complex output, but "
                               f"got output={output!r}")
        if not issubclass(dtype.type, np.number):
            raise RuntimeError(f"{func}: an output given by name must be a numeric dtype, "
                               f"but got output={output!r}")
        return dtype, None
    array = output if isinstance(output, np.ndarray) else _as_array(output)
    if array.shape != input.shape:
        raise RuntimeError(f"{func}: output must have the input's shape {input.shape}, but "
                           f"got {array.shape}")
    if complex_needed and array.dtype.kind != "c":
        raise RuntimeError(f"{func}: complex input or weights need a complex output, but got "
                           f"an output array of dtype {array.dtype}")
    return array.dtype, array


def _supported(dtype, complex_):
    if complex_:
        return dtype in (np.complex64, np.complex128)
    return dtype.kind in "biu" or dtype in (np.float32, np.float64)


def _mode(func, mode):
    if not isinstance(mode, str) and isinstance(mode, Iterable):
        raise RuntimeError(f"{func}: a sequence of modes is not supported, but got {mode!r}")
    if not isinstance(mode, str) or mode not in _MODES:
        raise RuntimeError(f"{func}: mode must be one of {sorted(_MODES)}, but got {mode!r} "
                           f"(scipy: 'boundary mode not supported')")
    return _MODES[mode]


def _real(func, value, shown):
    """A cval as scipy's C parser reads it: a real number (NumPy complex scalars lose their
    imaginary part with a warning, as in scipy)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{func}: cval must be a real number, but got {shown!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{func}: cval must be a number (complex only for complex input), "
                      f"but got {shown!r}") from None


# ------------------------------------------------------------------------------- sums

def _index(n, before, after, mode):
    """Source index of each extended position ``-before .. n - 1 + after`` (``-1``: cval)."""
    i = np.arange(-before, n + after)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return i % n
    if mode == "reflect":                       # period 2n, the edge sample repeated
        j = i % (2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if mode == "mirror":                        # period 2n - 2, the edge sample once
        if n == 1:
            return np.zeros_like(i)
        j = i % (2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    return np.where((i >= 0) & (i < n), i, -1)  # constant


def _extend(x, wshape, origins, mode, cval):
    for axis, (o, w) in enumerate(zip(origins, wshape, strict=True)):
        before = w // 2 + o
        idx = _index(x.shape[axis], before, w - 1 - before, mode)
        x = np.take(x, np.maximum(idx, 0), axis=axis)
        if mode == "constant" and (idx < 0).any():
            index = [slice(None)] * x.ndim
            index[axis] = idx < 0
            x[tuple(index)] = cval
    return x


def _ordered(ext, w, positions=None):
    """scipy's sum, bit for bit: over the weights in C order, from 0.0, in float64; at
    every output position, or at ``positions`` (flat indices into ``ext``) only."""
    taps = [t for t in np.ndindex(*w.shape) if w[t] != 0.0]
    if positions is None:
        oshape = tuple(s - q + 1 for s, q in zip(ext.shape, w.shape, strict=True))
        acc, term = np.zeros(oshape), np.empty(oshape)
        for t in taps:
            np.multiply(ext[tuple(slice(i, i + o) for i, o in zip(t, oshape, strict=True))],
                        w[t], out=term)
            acc += term
        return acc
    flat = ext.reshape(-1)
    acc = np.zeros(positions.shape)
    for t in taps:
        acc = acc + w[t] * flat[positions + int(np.ravel_multi_index(t, ext.shape))]
    return acc


def _sums(x, w, origins, mode, cval, integer_out):
    """float64 correlation sums of ``x`` (float64) with ``w`` (float64, tiny weights
    already zero), as scipy's C loop computes them."""
    if x.size == 0:
        return np.zeros(x.shape)
    ext = _extend(x, w.shape, origins, mode, cval)
    ext = ext if ext.flags.c_contiguous else ext.copy()     # (keeps 0-d arrays 0-d)
    if x.ndim == 0:
        return _ordered(ext, w)
    taps = np.count_nonzero(w)
    if (x.ndim >= 3 or taps <= _ORDERED_TAPS or taps * x.size <= _ORDERED_WORK
            or not np.isfinite(ext).all()):
        return _ordered(ext, w)
    k = torch.from_numpy(np.array(w, order="C"))      # fresh: positive strides
    values = _valid_torch(torch.from_numpy(ext)[None], k)[0].numpy()
    if integer_out:     # the rounding of another order can cross an integer: redo those
        bound = 8 * w.size * _EPS * float(np.abs(w).sum()) * float(np.abs(ext).max())
        near = np.flatnonzero(np.abs(values - np.round(values)) <= bound + 1e-300)
        if near.size:
            pos = np.unravel_index(near, values.shape)
            starts = np.ravel_multi_index(pos, ext.shape)
            values.reshape(-1)[near] = _ordered(ext, w, starts)
    return values


def _cast(values, dtype):
    """float64 sums into ``dtype`` as scipy's C casts them on x86-64 (measured)."""
    if dtype.kind in "fc":
        return values.astype(dtype)
    v = np.trunc(values)
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.kind == "b" or dtype.itemsize < 4 or dtype == np.int32:
            ok = (v >= -2.0 ** 31) & (v < 2.0 ** 31)
            i = np.where(ok, v, -2.0 ** 31).astype(np.int64)
            return (i & 0xFF) != 0 if dtype.kind == "b" else i.astype(dtype)
        if dtype != np.uint64:
            ok = (v >= -2.0 ** 63) & (v < 2.0 ** 63)
            return np.where(ok, v, -2.0 ** 63).astype(np.int64).astype(dtype)

        def u64(x):                              # (uint64)x: cvttsd2si and its 2**63 shift
            out = np.full(x.shape, 2 ** 63, np.uint64)
            low = (x >= -2.0 ** 63) & (x < 2.0 ** 63)
            out[low] = x[low].astype(np.int64).astype(np.uint64)
            high = (x >= 2.0 ** 63) & (x < 2.0 ** 64)
            out[high] = x[high].astype(np.uint64)
            out[x >= 2.0 ** 64] = 0
            return out

        return np.where(v > -1, u64(v), np.uint64(0) - u64(-v))


# ------------------------------------------------------------------------------- main

def _correlate(func, input, weights, output, mode, cval, origin, axes, convolution):
    tensor = input if isinstance(input, torch.Tensor) else None
    input, weights = _as_array(input), _as_array(weights)
    complex_in, complex_w = input.dtype.kind == "c", weights.dtype.kind == "c"
    complex_ = complex_in or complex_w
    if complex_w and not convolution:
        weights = weights.conj()
    if complex_:
        dtype, array = _output(func, output, input, True)
        if not complex_in and np.iscomplexobj(cval):
            raise ValueError(f"{func}: a complex cval needs a complex input, but got cval "
                             f"{cval!r} for input dtype {input.dtype}")
    axes = _axes(func, axes, input.ndim)
    parts = [weights.real, weights.imag] if complex_w else [weights]
    try:
        parts = [np.asarray(p, dtype=np.float64) for p in parts]
    except (TypeError, ValueError) as e:
        raise type(e)(f"{func}: weights must be numeric, but got {weights!r}") from None
    if len(axes) < input.ndim:
        if parts[0].ndim != len(axes):
            raise RuntimeError(f"{func}: weights must have one axis per filtered axis "
                               f"({len(axes)}), but got shape {parts[0].shape}")
        missing = tuple(a for a in range(input.ndim) if a not in axes)
        parts = [np.expand_dims(p, missing) for p in parts]
    origins = _origins(func, origin, axes, input.ndim)
    if sum(s > 0 for s in parts[0].shape) != input.ndim:
        raise RuntimeError(f"{func}: weights must have one non-zero size per input axis "
                           f"({input.ndim}), but got shape {weights.shape} (scipy: 'filter "
                           f"weights array has incorrect shape')")
    wshape = parts[0].shape
    if convolution:
        parts = [p[tuple(slice(None, None, -1) for _ in wshape)] for p in parts]
        try:
            origins = [-o - (1 - w % 2) for o, w in zip(origins, wshape, strict=True)]
        except TypeError:
            raise TypeError(f"{func}: origin must be an int or a sequence of ints, but got "
                            f"{origin!r}") from None
    for o, w in zip(origins, wshape, strict=True):
        try:
            bad = not -(w // 2) <= o <= (w - 1) // 2
        except TypeError:
            raise TypeError(f"{func}: origin must be an int or a sequence of ints, but got "
                            f"{origin!r}") from None
        if bad:
            raise ValueError(f"{func}: origin must satisfy -(weights.shape[k] // 2) <= "
                             f"origin[k] <= (weights.shape[k] - 1) // 2, but got origin "
                             f"{origin!r} for weights of shape {wshape}")
    if not complex_:
        dtype, array = _output(func, output, input, False)
    name = _mode(func, mode)
    if complex_in:
        cvals = [_real(func, np.real(cval), cval), _real(func, np.imag(cval), cval)]
    else:
        cvals = [_real(func, cval, cval)]
    for o in origins:
        if isinstance(o, (bool, np.bool_)) or not isinstance(o, numbers.Integral):
            raise TypeError(f"{func}: origin must be an int or a sequence of ints, but got "
                            f"{origin!r}")
    origins = [int(o) for o in origins]
    for what, dt, cplx in (("input", input.dtype, complex_in), ("output", dtype, complex_)):
        if not _supported(dt, cplx):
            raise RuntimeError(f"{func}: {what} dtype {dt} is not supported (scipy.ndimage "
                               f"takes bool, integers, float32, float64, complex64 and "
                               f"complex128)")
    parts = [np.where(np.abs(p) > _EPS, p, 0.0) for p in parts]
    integer_out = dtype.kind in "biu"

    def corr(x, w, c):
        return _sums(x.astype(np.float64), w, origins, name, c, integer_out)

    if not complex_:
        result = _cast(corr(input, parts[0], cvals[0]), dtype)
    else:
        result = np.zeros(input.shape, dtype)
        real, imag = result.real, result.imag
        if complex_in and complex_w:
            (wr, wi), (cr, ci) = parts, cvals
            scratch = input.imag.dtype              # scipy's output=None temporaries
            real[...] = corr(input.real, wr, cr)
            real -= corr(input.imag, wi, ci).astype(scratch)
            imag[...] = corr(input.real, wi, cr)
            imag += corr(input.imag, wr, ci).astype(scratch)
        elif complex_in:
            real[...] = corr(input.real, parts[0], cvals[0])
            imag[...] = corr(input.imag, parts[0], cvals[1])
        else:
            real[...] = corr(input, parts[0], cvals[0])
            imag[...] = corr(input, parts[1], cvals[0])
    if array is None:
        if tensor is not None:                 # NumPy in, NumPy out; a tensor gets a tensor
            return torch.from_numpy(np.ascontiguousarray(result)).to(tensor.device)
        return result
    array[...] = result
    return array


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """N-D correlation (``scipy.ndimage.correlate``): ``out[i] = sum_j weights[j]
    input[i + j - (weights.shape // 2 + origin)]``, the input extended by ``mode``.

    Args:
        input: an array (NumPy, list or tensor) of bool, integers, float32/64 or complex.
        weights: an array with one axis per filtered axis (complex weights are
            conjugated, as in scipy).
        output: None (the input's dtype; complex for complex weights), a dtype (promoted
            to complex with a warning where needed), a dtype name, or an array of the
            input's shape to fill (then returned).
        mode: ``"reflect"``, ``"constant"``, ``"nearest"``, ``"mirror"``, ``"wrap"`` (or
            ``"grid-mirror"``, ``"grid-constant"``, ``"grid-wrap"``).
        cval: the value past the edges for ``"constant"``; a real number (complex only
            with complex input).
        origin: shifts the weights' centre, an int or one per filtered axis, with
            ``-(w // 2) <= origin <= (w - 1) // 2``.
        axes: the axes to filter (default all); the weights have one axis per entry.

    Returns:
        The filtered array (``output`` itself when an array was given; a tensor for a
        tensor ``input``).

    Raises:
        RuntimeError: weights of the wrong shape, an origin sequence of the wrong length,
            unknown or sequence modes, unsupported dtypes, outputs of the wrong shape or
            kind (as scipy); ValueError: an origin out of range, bad axes, a complex cval
            for real input; TypeError: a cval that is not a real number, a non-integer
            origin.

    Example:
        >>> correlate(np.arange(5.), [1., 2., 0.])
        array([ 0.,  2.,  5.,  8., 11.])
        >>> correlate(np.arange(5), [1., 1., 1.], mode="constant", cval=10)
        array([11,  3,  6,  9, 17])
    """
    return _correlate("correlate", input, weights, output, mode, cval, origin, axes, False)


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """N-D convolution (``scipy.ndimage.convolve``): :func:`correlate` with the weights
    reversed and the origin mirrored (``-origin``, and one more to the left along axes of
    even size), as in scipy; arguments, results and errors as :func:`correlate`.

    Example:
        >>> convolve(np.arange(5.), [1., 2., 0.])
        array([ 1.,  4.,  7., 10., 12.])
    """
    return _correlate("convolve", input, weights, output, mode, cval, origin, axes, True)
