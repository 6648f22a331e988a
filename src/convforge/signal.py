"""``correlate2d`` / ``convolve2d`` with scipy.signal's signatures, semantics and dtypes.

The result dtype is the common type of both inputs, as in scipy (integers stay integers,
with scipy's wrap-around on overflow). Integer sums are accumulated in 64-bit integers
(exact modulo 2**64, so the final cast wraps exactly as scipy's own arithmetic does);
floating-point sums in float64/complex128 and rounded once at the end.

Mode ``"full"`` pads the first input by ``k - 1`` on each side, ``"same"`` keeps the first
input's size (centred as scipy centres it), ``"valid"`` uses no padding. Boundaries:
``"fill"`` (``fillvalue``), ``"wrap"`` (periodic), ``"symm"`` (mirrored with the edge
sample repeated).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["correlate2d", "convolve2d"]

_MODES = frozenset({"full", "same", "valid"})
_BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
               "symm": "symm", "symmetric": "symm"}


def _as_array(func, name, value):
    if isinstance(value, torch.Tensor):
        return value.detach().resolve_conj().cpu().numpy(), True
    if isinstance(value, np.ndarray):
        return value, False
    if isinstance(value, (list, tuple, numbers.Number)):
        return np.asarray(value), False
    raise TypeError(f"{func}: {name} must be an array, but got {type(value).__name__}")


def _accumulator(dtype):
    if dtype.kind in "biu":
        return np.int64
    return np.complex128 if dtype.kind == "c" else np.float64


def _pad(a, pads, boundary, fillvalue):
    (top, bottom), (left, right) = pads
    if boundary == "fill":
        return np.pad(a, pads, mode="constant", constant_values=fillvalue)
    mode = "wrap" if boundary == "wrap" else "symmetric"
    return np.pad(a, ((top, bottom), (left, right)), mode=mode)


def _valid_correlate(a, k):
    """Valid cross-correlation by one shifted multiply-add per kernel tap."""
    kh, kw = k.shape
    oh, ow = a.shape[0] - kh + 1, a.shape[1] - kw + 1
    out = np.zeros((oh, ow), dtype=np.result_type(a, k))
    for i in range(kh):
        for j in range(kw):
            if k[i, j] != 0:
                out += a[i:i + oh, j:j + ow] * k[i, j]
    return out


def _check(func, in1, in2, mode, boundary, fillvalue):
    if in1.ndim != 2 or in2.ndim != 2:
        raise ValueError(
            f"{func}: in1 and in2 must both be 2D arrays, but got shapes {in1.shape} "
            f"and {in2.shape}")
    if mode not in _MODES:
        raise ValueError(f"{func}: mode must be 'full', 'same' or 'valid', but got {mode!r}")
    if boundary not in _BOUNDARIES:
        raise ValueError(
            f"{func}: boundary must be 'fill', 'wrap' or 'symm', but got {boundary!r}")
    if np.size(fillvalue) != 1:
        raise ValueError(f"{func}: fillvalue must be a scalar or an array with one element "
                         f"(as in scipy), but got {fillvalue!r}")
    for name, a in (("in1", in1), ("in2", in2)):
        if a.dtype.kind not in "biufc":
            raise TypeError(f"{func}: {name} must be numeric, but got dtype {a.dtype}")
        if a.size == 0:
            raise ValueError(f"{func}: {name} must not be empty, but got shape {a.shape}")
    if mode == "valid":
        ok1 = all(p >= q for p, q in zip(in1.shape, in2.shape))
        ok2 = all(q >= p for p, q in zip(in1.shape, in2.shape))
        if not (ok1 or ok2):
            raise ValueError(
                f"{func}: in 'valid' mode one input must be at least as large as the other "
                f"in every dimension, but got shapes {in1.shape} and {in2.shape}")
        return not ok1
    return False


def _fill(func, fillvalue, dtype):
    """scipy's rule: the fill value is read as a complex number and cast to the output
    dtype: a complex number needs a complex output, an array a dtype that casts safely
    to the output's."""
    try:
        value = complex(np.asarray(fillvalue).reshape(()).item())
    except (TypeError, ValueError):
        raise ValueError(f"{func}: fillvalue must be a number, but got {fillvalue!r}") from None
    if isinstance(fillvalue, np.ndarray):
        castable = np.can_cast(fillvalue.dtype, dtype, casting="safe")
    else:                        # Python numbers and lists: any real value for a real output
        castable = dtype.kind == "c" or np.asarray(fillvalue).dtype.kind != "c"
    if not castable:
        raise ValueError(f"{func}: fillvalue {fillvalue!r} cannot be cast to the output dtype "
                         f"{dtype} (as in scipy: 'could not cast fillvalue directly to the "
                         f"output type')")
    return value if dtype.kind == "c" else value.real


def _correlate(func, in1, in2, mode, boundary, fillvalue, flip):
    a, a_tensor = _as_array(func, "in1", in1)
    k, _ = _as_array(func, "in2", in2)
    swap = _check(func, a, k, mode, boundary, fillvalue)
    result_dtype = np.result_type(a.dtype, k.dtype)
    if result_dtype.kind == "b" or result_dtype in (np.float16, np.longdouble, np.clongdouble):
        raise ValueError(  # as scipy: its convolve2d has no kernel for these types
            f"{func}: the inputs' common dtype must be an integer, float32/float64 or "
            f"complex64/complex128 type (as in scipy), but got {result_dtype}; "
            f"convert with .astype(np.float32)")
    fillvalue = _fill(func, fillvalue, result_dtype)
    if swap:  # scipy swaps so that the larger array is the image
        a, k = k, a
    acc = _accumulator(result_dtype)
    a, k = a.astype(acc), k.astype(acc)
    k = k[::-1, ::-1] if flip else np.conj(k)
    kh, kw = k.shape
    if mode == "full":
        pads = ((kh - 1, kh - 1), (kw - 1, kw - 1))
    elif mode == "same":  # scipy centres 'same' inside 'full'; the flip mirrors the offset
        before_h, before_w = (kh // 2, kw // 2) if flip else ((kh - 1) // 2, (kw - 1) // 2)
        pads = ((before_h, kh - 1 - before_h), (before_w, kw - 1 - before_w))
    else:
        pads = ((0, 0), (0, 0))
    fill = np.real(fillvalue) if acc is np.int64 else fillvalue
    out = _valid_correlate(_pad(a, pads, _BOUNDARIES[boundary], fill), k)
    if swap and not flip:
        out = out[::-1, ::-1]
    out = out.astype(result_dtype)
    return torch.from_numpy(np.ascontiguousarray(out)) if a_tensor else out


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Cross-correlate two 2D arrays (``scipy.signal.correlate2d``).

    Args:
        in1: the image, ``(M1, N1)``.
        in2: the kernel, ``(M2, N2)``; complex kernels are conjugated, as in scipy.
        mode: ``"full"`` (``M1 + M2 - 1``), ``"same"`` (``M1``) or ``"valid"``
            (``M1 - M2 + 1``; the inputs are swapped if ``in2`` is the larger).
        boundary: ``"fill"``, ``"wrap"`` or ``"symm"``.
        fillvalue: the value outside the image for ``"fill"``.

    Returns:
        A NumPy array of the inputs' common dtype (a tensor if ``in1`` is a tensor).

    Example:
        >>> correlate2d(np.arange(9).reshape(3, 3), np.arange(4).reshape(2, 2), mode="valid")
        array([[19, 25],
               [37, 43]])
    """
    return _correlate("correlate2d", in1, in2, mode, boundary, fillvalue, flip=False)


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Convolve two 2D arrays (``scipy.signal.convolve2d``): correlation with a flipped kernel.

    Example:
        >>> convolve2d(np.array([[1, 2], [3, 4]]), np.array([[0, 1]]))
        array([[0, 1, 2],
               [0, 3, 4]])
    """
    return _correlate("convolve2d", in1, in2, mode, boundary, fillvalue, flip=True)
