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

The sums are computed by convforge's convolutions in float64 (complex128 for complex
input or weights) on the extended input, then cast to the output dtype as scipy casts:
truncated toward zero and wrapped for integers (bool as an unsigned byte: nonzero after
truncation and wrapping). ``convolve`` is
``correlate`` with the weights reversed and the origin mirrored (``-origin``, one more to
the left for an even size), as in scipy.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import torch

from .signal_nd import _valid_torch

__all__ = ["correlate", "convolve"]

_MODES = {"reflect": "reflect", "grid-mirror": "reflect", "mirror": "mirror",
          "nearest": "nearest", "wrap": "wrap", "grid-wrap": "wrap",
          "constant": "constant", "grid-constant": "constant"}
_SUPPORTED = "bool, integers, float32, float64, complex64 and complex128"


def _check_dtype(func, name, dtype):
    if dtype.kind not in "biufc" or dtype == np.float16 or (
            dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c"
                                                           and dtype.itemsize > 16):
        raise RuntimeError(f"{func}: {name} dtype {dtype} is not supported (scipy.ndimage "
                           f"supports {_SUPPORTED})")


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


def _origins(func, origin, ndim):
    if isinstance(origin, numbers.Integral) and not isinstance(origin, bool):
        return [int(origin)] * ndim
    if isinstance(origin, Iterable) and not isinstance(origin, str):
        items = list(origin)
        if len(items) != ndim:
            raise RuntimeError(f"{func}: origin must be an int or one int per input axis "
                               f"({ndim}), but got {origin!r}")
        if all(isinstance(o, numbers.Integral) and not isinstance(o, bool) for o in items):
            return [int(o) for o in items]
    raise TypeError(f"{func}: origin must be an int or a sequence of ints, but got "
                    f"{origin!r}")


def _output(func, output, input, complex_needed):
    """(dtype, array to fill or None), with scipy's rules."""
    if output is None:
        dtype = np.promote_types(input.dtype, np.complex64) if complex_needed else input.dtype
        return np.dtype(dtype), None
    if isinstance(output, np.ndarray):
        if output.shape != input.shape:
            raise RuntimeError(f"{func}: output must have the input's shape {input.shape}, "
                               f"but got {output.shape}")
        dtype, array = output.dtype, output
    else:
        try:
            dtype, array = np.dtype(output), None
        except TypeError:
            raise TypeError(f"{func}: output must be None, a dtype or an array, but got "
                            f"{output!r}") from None
    _check_dtype(func, "output", dtype)
    if complex_needed and dtype.kind != "c":
        raise RuntimeError(f"{func}: complex input or weights need a complex output, but got "
                           f"output dtype {dtype}")
    if not complex_needed and dtype.kind == "c":
        raise RuntimeError(f"{func}: a complex output needs complex input or weights (as in "
                           f"scipy: 'array type not supported'), but got output dtype {dtype}")
    return dtype, array


def _cast(values, dtype):
    """float64/complex128 sums to ``dtype`` as scipy's C loops cast them."""
    if dtype.kind == "b":          # C's cast to an unsigned char: truncated, then wrapped
        with np.errstate(invalid="ignore", over="ignore"):
            return np.trunc(values.real).astype(np.int64).astype(np.uint8) != 0
    if dtype.kind in "iu":
        with np.errstate(invalid="ignore", over="ignore"):
            return np.trunc(values).astype(np.int64).astype(dtype)
    return values.astype(dtype)


def _correlate(func, input, weights, output, mode, cval, origin, convolution):
    input = np.asarray(input.detach().cpu().numpy() if isinstance(input, torch.Tensor)
                       else input)
    weights = np.asarray(weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor)
                         else weights)
    _check_dtype(func, "input", input.dtype)
    _check_dtype(func, "weights", weights.dtype)
    if weights.ndim != input.ndim or 0 in weights.shape:
        raise RuntimeError(f"{func}: weights must have one non-zero size per input axis "
                           f"({input.ndim}), but got shape {weights.shape} (scipy: 'filter "
                           f"weights array has incorrect shape')")
    if isinstance(mode, str):
        if mode not in _MODES:
            raise RuntimeError(f"{func}: mode must be one of {sorted(_MODES)}, but got "
                               f"{mode!r} (scipy: 'boundary mode not supported')")
    elif isinstance(mode, Iterable):
        raise RuntimeError(f"{func}: a sequence of modes is not supported, but got {mode!r}")
    else:
        raise RuntimeError(f"{func}: mode must be a string, but got {mode!r}")
    if isinstance(cval, (bool, np.bool_)) or not isinstance(cval, numbers.Real):
        raise TypeError(f"{func}: cval must be a real number, but got {cval!r}")
    origins = _origins(func, origin, input.ndim)
    complex_needed = input.dtype.kind == "c" or weights.dtype.kind == "c"
    if convolution:
        weights = weights[tuple(slice(None, None, -1) for _ in range(weights.ndim))]
        origins = [-o - (1 - w % 2) for o, w in zip(origins, weights.shape, strict=True)]
    elif complex_needed:
        weights = weights.conj()
    for o, w in zip(origins, weights.shape, strict=True):
        if not -(w // 2) <= o <= (w - 1) // 2:
            raise ValueError(f"{func}: origin must satisfy -(weights.shape[k] // 2) <= "
                             f"origin[k] <= (weights.shape[k] - 1) // 2, but got origin "
                             f"{tuple(origins) if not convolution else origin!r} for "
                             f"weights of shape {weights.shape}")
    dtype, array = _output(func, output, input, complex_needed)
    kind = np.complex128 if complex_needed else np.float64
    extended = input.astype(kind)
    name = _MODES[mode]
    for axis, (o, w) in enumerate(zip(origins, weights.shape, strict=True)):
        before = w // 2 + o
        idx = _index(input.shape[axis], before, w - 1 - before, name)
        extended = np.take(extended, np.maximum(idx, 0), axis=axis)
        if name == "constant" and (idx < 0).any():
            index = [slice(None)] * input.ndim
            index[axis] = idx < 0
            extended[tuple(index)] = cval
    k = torch.from_numpy(np.array(weights, dtype=kind, order="C"))  # fresh: positive strides
    if input.ndim == 0:
        values = np.asarray(input.astype(kind) * k.numpy())
    elif input.size == 0:
        values = np.zeros(input.shape, kind)
    else:
        values = _valid_torch(torch.from_numpy(np.ascontiguousarray(extended))[None], k)
        values = values[0].numpy()
    result = _cast(values, dtype)
    if array is None:
        return result
    array[...] = result
    return array


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0):
    """N-D correlation (``scipy.ndimage.correlate``): ``out[i] = sum_j weights[j]
    input[i + j - (weights.shape // 2 + origin)]``, the input extended by ``mode``.

    Args:
        input: an array (NumPy, list or tensor) of bool, integers, floats or complex.
        weights: an array with the input's ndim (complex weights are conjugated, as in
            scipy).
        output: None (the input's dtype; complex128 / complex64 for complex weights), a
            dtype, or an array of the input's shape to fill (then returned).
        mode: ``"reflect"``, ``"constant"``, ``"nearest"``, ``"mirror"``, ``"wrap"`` (or
            ``"grid-mirror"``, ``"grid-constant"``, ``"grid-wrap"``).
        cval: the value past the edges for ``"constant"``; a real number.
        origin: shifts the weights' centre, an int or one per axis, with
            ``-(w // 2) <= origin <= (w - 1) // 2``.

    Raises:
        RuntimeError: weights of the wrong ndim, unknown or sequence modes, unsupported
            dtypes (as scipy); ValueError: an origin out of range; TypeError: a cval that
            is not a real number.

    Example:
        >>> correlate(np.arange(5.), [1., 2., 0.])
        array([ 0.,  2.,  5.,  8., 11.])
        >>> correlate(np.arange(5), [1., 1., 1.], mode="constant", cval=10)
        array([11,  3,  6,  9, 17])
    """
    return _correlate("correlate", input, weights, output, mode, cval, origin, False)


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0):
    """N-D convolution (``scipy.ndimage.convolve``): :func:`correlate` with the weights
    reversed and the origin mirrored (``-origin``, and one more to the left along axes of
    even size), as in scipy.

    Example:
        >>> convolve(np.arange(5.), [1., 2., 0.])
        array([ 1.,  4.,  7., 10., 12.])
    """
    return _correlate("convolve", input, weights, output, mode, cval, origin, True)
