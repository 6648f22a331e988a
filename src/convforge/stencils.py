"""Exact stencil arithmetic (no torch): finite-difference weights in rationals, OpenCV's
Sobel stencils as integer polynomials, and the 45-degree ring rotation of a 3x3 kernel.

Used by :mod:`convforge.kernels`; everything here is integers or
:class:`fractions.Fraction`, so the results are exact.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["finite_difference_weights", "poly_mul", "deriv_1d", "rotate45"]


def finite_difference_weights(order: int, offsets) -> list[Fraction]:
    """Exact weights ``w`` with ``sum_i w_i f(o_i) = f^(order)(0)`` for polynomials of degree
    below ``len(offsets)``.

    Solves ``sum_i w_i o_i^m = m! [m == order]`` for ``m = 0 .. n-1`` by Gaussian elimination
    in :class:`fractions.Fraction` (the Taylor expansion of ``f(o)`` around 0).

    Example:
        >>> [str(w) for w in finite_difference_weights(2, [-1, 0, 1])]
        ['1', '-2', '1']
    """
    offs = [Fraction(o) for o in offsets]
    n = len(offs)
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"finite_difference_weights: order must be a non-negative int, "
                         f"but got {order!r}")
    if n < order + 1 or len(set(offs)) != n:
        raise ValueError(
            f"finite_difference_weights: a derivative of order {order} needs at least "
            f"{order + 1} distinct offsets, but got {list(offsets)}")
    rows = [[o ** m for o in offs] + [Fraction(math.factorial(m) if m == order else 0)]
            for m in range(n)]
    for c in range(n):  # Gauss-Jordan; a Vandermonde matrix of distinct nodes is regular
        p = next(r for r in range(c, n) if rows[r][c] != 0)
        rows[c], rows[p] = rows[p], rows[c]
        piv = rows[c][c]
        rows[c] = [v / piv for v in rows[c]]
        for r in range(n):
            if r != c and rows[r][c] != 0:
                f = rows[r][c]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[c])]
    return [rows[i][n] for i in range(n)]


def poly_mul(a, b):
    """Product of two polynomials given by coefficient lists (a full 1D convolution).

    Example:
        >>> poly_mul([1, 1], [1, 1])
        [1, 2, 1]
    """
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def deriv_1d(order: int, size: int) -> list[int]:
    """OpenCV's Sobel stencil: ``size - order - 1`` smoothings ``[1, 1]`` times ``order``
    differences ``[-1, 1]`` (``cv2.getDerivKernels``).

    Example:
        >>> deriv_1d(1, 5)
        [-1, -2, 0, 2, 1]
    """
    k = [1]
    for _ in range(size - order - 1):
        k = poly_mul(k, [1, 1])
    for _ in range(order):
        k = poly_mul(k, [-1, 1])
    return k


_RING = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]  # clockwise


def rotate45(k, steps: int):
    """Shift the outer ring of a 3x3 kernel by ``steps`` positions clockwise (45 degrees each).

    Example:
        >>> rotate45([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], 1)
        [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]]
    """
    out = [row[:] for row in k]
    for i, (r, c) in enumerate(_RING):
        rr, cc = _RING[(i + steps) % 8]
        out[rr][cc] = k[r][c]
    return out
