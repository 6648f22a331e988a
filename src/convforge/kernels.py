"""A zoo of classic image kernels, as torch tensors ready for correlation.

Conventions (the same as OpenCV's, so ``filter2d(img, sobel("x"))`` equals
``cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3)``):

* kernels are applied by **cross-correlation** (what :func:`convforge.conv2d`,
  :func:`convforge.filter2d` and ``cv2.filter2D`` compute), anchored at
  ``(kH // 2, kW // 2)``;
* ``"x"`` is the column axis (left to right), ``"y"`` the row axis (top to bottom); an x
  derivative is **positive where intensity increases to the right**, a y derivative where it
  increases downwards;
* ``"diagonal"`` points down-right (+y, +x), ``"antidiagonal"`` up-right (-y, +x);
* the book's edge detector ``[[1, -1]]`` computes ``x[j] - x[j+1]``: 1 marks a white->black
  edge, so it is the *negative* forward difference.

Every factory takes keyword-only ``dtype`` (default: torch's default float dtype) and
``device``. :func:`get` builds a kernel from a spec string such as ``"gaussian:sigma=2"``;
:func:`names` lists the accepted names.
"""

from __future__ import annotations

import math

import torch

from .stencils import deriv_1d, finite_difference_weights, rotate45

__all__ = [
    "finite_difference", "finite_difference_weights", "sobel", "scharr", "prewitt",
    "laplacian", "log", "gaussian", "gaussian_1d", "box", "sharpen", "emboss", "integral",
    "identity", "book_edge", "diagonal_edge", "get", "names",
]

_AXES = ("x", "y")
_DIRECTIONS = ("x", "y", "diagonal", "antidiagonal")


def _out(values, dtype, device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64)
    return t.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _check_int(func, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}: {name} must be an int, but got {value!r}")
    if value < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, but got {value}")


def _check_choice(func, name, value, choices):
    if value not in choices:
        raise ValueError(f"{func}: {name} must be one of {list(choices)}, but got {value!r}")


def _oriented(row: list, axis: str) -> list:
    """A 1D stencil laid out along ``axis``: (1, n) for x, (n, 1) for y."""
    return [row] if axis == "x" else [[v] for v in row]


# --------------------------------------------------------------------------------------
# finite differences (weights solved exactly in convforge.stencils)
# --------------------------------------------------------------------------------------

def finite_difference(order: int = 1, axis: str = "x", accuracy: int = 2, *, size=None,
                      dtype=None, device=None) -> torch.Tensor:
    """Finite-difference kernel of any derivative order, exact on polynomials.

    The taps sit at offsets ``i - size // 2`` from the anchor (OpenCV's centre), so odd sizes
    give the central stencils ([-1/2, 0, 1/2], [1, -2, 1], ...) and even sizes lean left.

    Args:
        order: derivative order ``d >= 0``.
        axis: ``"x"`` (along columns, shape ``(1, size)``) or ``"y"`` (``(size, 1)``).
        accuracy: even order of accuracy of the central stencil used when ``size`` is None:
            ``size = 2 * ((d + 1) // 2) - 1 + accuracy``.
        size: number of taps; the minimum for order ``d`` is ``d + 1``.

    Returns:
        The kernel; applied by correlation to samples of a polynomial of degree
        ``< size`` (unit spacing) it returns the exact ``d``-th derivative at the anchor.

    Raises:
        ValueError: ``size < order + 1``, odd or non-positive ``accuracy``, unknown axis.

    Example:
        >>> finite_difference(1, "x", dtype=torch.float64)
        tensor([[-0.5000,  0.0000,  0.5000]], dtype=torch.float64)
    """
    func = "finite_difference"
    _check_int(func, "order", order, 0)
    _check_choice(func, "axis", axis, _AXES)
    if size is None:
        _check_int(func, "accuracy", accuracy, 2)
        if accuracy % 2:
            raise ValueError(f"{func}: accuracy must be even (central stencil), "
                             f"but got {accuracy}")
        size = 2 * ((order + 1) // 2) - 1 + accuracy
    _check_int(func, "size", size, 1)
    if size < order + 1:
        raise ValueError(f"{func}: the minimum size for a derivative of order {order} is "
                         f"{order + 1}, but got size={size}")
    weights = finite_difference_weights(order, [i - size // 2 for i in range(size)])
    return _out(_oriented([float(w) for w in weights], axis), dtype, device)


# --------------------------------------------------------------------------------------
# gradient operators (3x3 and larger), with 45-degree rotations
# --------------------------------------------------------------------------------------

def _gradient(func, smooth, direction, dtype, device):
    _check_choice(func, "direction", direction, _DIRECTIONS)
    deriv = [-1, 0, 1]
    kx = [[s * d for d in deriv] for s in smooth]          # (3, 3): smooth rows, diff columns
    if direction == "x":
        k = kx
    elif direction == "y":
        k = [list(col) for col in zip(*kx)]
    else:
        k = rotate45(kx, 1 if direction == "diagonal" else -1)
    return _out(k, dtype, device)


def sobel(direction: str = "x", size: int = 3, *, order: int = 1, normalize: bool = False,
          dtype=None, device=None) -> torch.Tensor:
    """Sobel operator: a derivative along one axis, binomial smoothing along the other.

    Args:
        direction: ``"x"``, ``"y"``, ``"diagonal"`` (down-right) or ``"antidiagonal"``
            (up-right); diagonals only for ``size=3, order=1``.
        size: odd kernel size 3, 5, 7, ... (OpenCV's ``ksize``).
        order: derivative order (``< size``), as OpenCV's ``dx`` / ``dy``.
        normalize: divide by ``2 ** (2 size - order - 2)``, OpenCV's ``normalize=True`` in
            ``getDerivKernels`` (for 3x3, the sum of absolute weights: 8).

    Returns:
        ``(size, size)``; ``outer(smooth, deriv)`` for ``"x"`` (``cv2.getDerivKernels``).

    Example:
        >>> sobel("x", dtype=torch.int64)
        tensor([[-1,  0,  1],
                [-2,  0,  2],
                [-1,  0,  1]])
    """
    func = "sobel"
    _check_choice(func, "direction", direction, _DIRECTIONS)
    _check_int(func, "size", size, 3)
    _check_int(func, "order", order, 1)
    if size % 2 == 0 or order >= size:
        raise ValueError(f"{func}: size must be odd and larger than order, "
                         f"but got size={size}, order={order}")
    if direction in ("diagonal", "antidiagonal") and (size, order) != (3, 1):
        raise ValueError(f"{func}: diagonal directions exist for size=3, order=1 only, "
                         f"but got size={size}, order={order}")
    if size == 3 and order == 1:
        k = _gradient(func, [1, 2, 1], direction, torch.float64, None)
    else:
        smooth, deriv = deriv_1d(0, size), deriv_1d(order, size)
        k = torch.tensor([[s * d for d in deriv] for s in smooth], dtype=torch.float64)
        k = k if direction == "x" else k.t().contiguous()
    if normalize:
        k = k / 2 ** (2 * size - order - 2)
    return k.to(dtype=dtype or torch.get_default_dtype(), device=device)


def scharr(direction: str = "x", *, dtype=None, device=None) -> torch.Tensor:
    """Scharr operator (``cv2.Scharr``): smoothing ``[3, 10, 3]``, difference ``[-1, 0, 1]``.

    Example:
        >>> scharr("y", dtype=torch.int64)[0]
        tensor([ -3, -10,  -3])
    """
    return _gradient("scharr", [3, 10, 3], direction, dtype, device)


def prewitt(direction: str = "x", *, dtype=None, device=None) -> torch.Tensor:
    """Prewitt operator: smoothing ``[1, 1, 1]``, difference ``[-1, 0, 1]``.

    Example:
        >>> prewitt("diagonal", dtype=torch.int64)
        tensor([[-1, -1,  0],
                [-1,  0,  1],
                [ 0,  1,  1]])
    """
    return _gradient("prewitt", [1, 1, 1], direction, dtype, device)


def book_edge(axis: str = "x", *, dtype=None, device=None) -> torch.Tensor:
    """The book's edge detector ``[[1, -1]]`` (``"x"``, vertical edges) or its transpose.

    Example:
        >>> book_edge("y", dtype=torch.int64)
        tensor([[ 1],
                [-1]])
    """
    _check_choice("book_edge", "axis", axis, _AXES)
    return _out(_oriented([1, -1], axis), dtype, device)


def diagonal_edge(direction: str = "diagonal", *, dtype=None, device=None) -> torch.Tensor:
    """2x2 diagonal edge detectors (Roberts cross), in the book's ``x[p] - x[next]`` sign.

    ``"diagonal"``: ``[[1, 0], [0, -1]]``; ``"antidiagonal"``: ``[[0, 1], [-1, 0]]``.

    Example:
        >>> diagonal_edge(dtype=torch.int64)
        tensor([[ 1,  0],
                [ 0, -1]])
    """
    _check_choice("diagonal_edge", "direction", direction, ("diagonal", "antidiagonal"))
    k = [[1, 0], [0, -1]] if direction == "diagonal" else [[0, 1], [-1, 0]]
    return _out(k, dtype, device)


# --------------------------------------------------------------------------------------
# second derivatives, smoothing and effects
# --------------------------------------------------------------------------------------

def laplacian(neighbours: int = 4, *, dtype=None, device=None) -> torch.Tensor:
    """Discrete Laplacian: 4-neighbour ``[[0,1,0],[1,-4,1],[0,1,0]]`` or 8-neighbour.

    The 4-neighbour kernel is ``cv2.Laplacian(ksize=1)``'s and ``scipy.ndimage.laplace``'s.

    Example:
        >>> laplacian(8, dtype=torch.int64)[1]
        tensor([ 1, -8,  1])
    """
    _check_choice("laplacian", "neighbours", neighbours, (4, 8))
    k = [[0, 1, 0], [1, -4, 1], [0, 1, 0]] if neighbours == 4 else \
        [[1, 1, 1], [1, -8, 1], [1, 1, 1]]
    return _out(k, dtype, device)


def _check_sigma(func, sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"{func}: sigma must be a positive number, but got {sigma!r}")


def _size_for(func, size, sigma):
    if size is None:
        return 2 * math.ceil(3 * sigma) + 1
    _check_int(func, "size", size, 1)
    return size


def gaussian_1d(size: int, sigma: float | None = None, *, dtype=None, device=None):
    """Sampled, normalised 1D Gaussian of ``size`` taps (``cv2.getGaussianKernel``).

    ``sigma=None`` uses OpenCV's rule ``0.3 ((size - 1) / 2 - 1) + 0.8`` (OpenCV itself
    substitutes fixed binomial-like tables for small sizes when sigma <= 0; pass sigma
    explicitly to compare).

    Example:
        >>> gaussian_1d(3, 1.0, dtype=torch.float64).sum().item()
        1.0
    """
    _check_int("gaussian_1d", "size", size, 1)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    _check_sigma("gaussian_1d", sigma)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype or torch.get_default_dtype(), device=device)


def gaussian(size: int | None = None, sigma: float | None = None, *, dtype=None,
             device=None) -> torch.Tensor:
    """Separable Gaussian blur ``outer(g, g)`` with ``g = gaussian_1d(size, sigma)``.

    Args:
        size: taps per side; default ``2 ceil(3 sigma) + 1``.
        sigma: standard deviation in pixels; default 1 when ``size`` is also None, else
            OpenCV's rule from ``size``.

    Example:
        >>> gaussian(sigma=1.0).shape
        torch.Size([7, 7])
    """
    if size is None and sigma is None:
        sigma = 1.0
    if sigma is not None:
        _check_sigma("gaussian", sigma)
    size = _size_for("gaussian", size, sigma)
    g = gaussian_1d(size, sigma, dtype=torch.float64)
    return torch.outer(g, g).to(dtype=dtype or torch.get_default_dtype(), device=device)


def log(size: int | None = None, sigma: float = 1.0, *, zero_sum: bool = False, dtype=None,
        device=None) -> torch.Tensor:
    """Laplacian of Gaussian: ``G(y, x) (x^2 + y^2 - 2 sigma^2) / sigma^4``.

    ``G`` is the sampled Gaussian normalised to sum 1 (the discretisation of
    ``scipy.ndimage.gaussian_laplace``); negative at the centre like :func:`laplacian`.

    Args:
        size: odd; default ``2 ceil(3 sigma) + 1``.
        zero_sum: subtract the mean so that flat regions give exactly 0.

    Example:
        >>> bool(log(sigma=1.0)[3, 3] < 0)
        True
    """
    _check_sigma("log", sigma)
    size = _size_for("log", size, sigma)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    g = torch.exp(-r2 / (2 * sigma ** 2))
    k = g / g.sum() * (r2 - 2 * sigma ** 2) / sigma ** 4
    if zero_sum:
        k = k - k.mean()
    return k.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _pair_size(func, size):
    if isinstance(size, (tuple, list)) and len(size) == 2:
        for s in size:
            _check_int(func, "size", s, 1)
        return int(size[0]), int(size[1])
    _check_int(func, "size", size, 1)
    return size, size


def box(size=3, *, normalize: bool = True, dtype=None, device=None) -> torch.Tensor:
    """Box (mean) filter of ``size`` (int or ``(kH, kW)``); unnormalised: all ones.

    Example:
        >>> box(2)
        tensor([[0.2500, 0.2500],
                [0.2500, 0.2500]])
    """
    kh, kw = _pair_size("box", size)
    k = torch.ones(kh, kw, dtype=torch.float64)
    k = k / (kh * kw) if normalize else k
    return k.to(dtype=dtype or torch.get_default_dtype(), device=device)


def integral(size: int = 3, axis: str = "x", *, dtype=None, device=None) -> torch.Tensor:
    """The exercise's summing kernel: ones over ``size`` samples (a discrete integral).

    ``axis`` is ``"x"`` (``(1, size)``), ``"y"`` (``(size, 1)``) or ``"both"``
    (``(size, size)``, the sum over a window). Correlated with a signal it returns the
    rectangle-rule integral over the window (unit spacing).

    Example:
        >>> integral(3, dtype=torch.int64)
        tensor([[1, 1, 1]])
    """
    _check_int("integral", "size", size, 1)
    _check_choice("integral", "axis", axis, ("x", "y", "both"))
    if axis == "both":
        return box(size, normalize=False, dtype=dtype, device=device)
    return _out(_oriented([1] * size, axis), dtype, device)


def identity(size: int = 3, *, dtype=None, device=None) -> torch.Tensor:
    """The delta kernel: 1 at the anchor ``(size // 2, size // 2)``, 0 elsewhere.

    Example:
        >>> identity(3, dtype=torch.int64)[1]
        tensor([0, 1, 0])
    """
    _check_int("identity", "size", size, 1)
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1
    return k.to(dtype=dtype or torch.get_default_dtype(), device=device)


def sharpen(amount: float = 1.0, *, dtype=None, device=None) -> torch.Tensor:
    """Unsharp sharpening ``identity - amount * laplacian(4)``; amount 1 gives the classic
    ``[[0,-1,0],[-1,5,-1],[0,-1,0]]``. Sums to 1 (flat regions unchanged).

    Example:
        >>> sharpen(dtype=torch.int64)[1]
        tensor([-1,  5, -1])
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"sharpen: amount must be a number, but got {amount!r}")
    k = identity(3, dtype=torch.float64) - amount * laplacian(4, dtype=torch.float64)
    return k.to(dtype=dtype or torch.get_default_dtype(), device=device)


def emboss(*, dtype=None, device=None) -> torch.Tensor:
    """Emboss ``[[-2,-1,0],[-1,1,1],[0,1,2]]``: relief lit from the bottom-right; sums to 1.

    Example:
        >>> float(emboss().sum())
        1.0
    """
    return _out([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype, device)


# --------------------------------------------------------------------------------------
# registry: "name[-variant][:arg,key=value,...]" (the table lives in kernel_specs.py)
# --------------------------------------------------------------------------------------

def names() -> list[str]:
    """Every base spec accepted by :func:`get` (options go after a colon).

    Example:
        >>> "sobel-x" in names() and "gaussian" in names()
        True
    """
    from .kernel_specs import spec_names

    return spec_names()


def get(spec: str, *, dtype=None, device=None) -> torch.Tensor:
    """Build a kernel from a spec string ``name[-variant][:arg,key=value,...]``.

    Examples of specs: ``sobel-x``, ``sobel-diagonal``, ``sobel-x:5``, ``laplacian:8``,
    ``gaussian:sigma=2``, ``gaussian:size=7,sigma=1.5``, ``box:5``, ``log:sigma=1.4``,
    ``finite_difference:order=2,axis=x``, ``edge-y``, ``integral:5``. Positional values fill
    the factory's first parameter (``size``, ``order``, ``neighbours``, ``amount``).

    Raises:
        ValueError: unknown name or variant, malformed or unknown options.
        TypeError: ``spec`` is not a string.

    Example:
        >>> get("laplacian:8", dtype=torch.int64)[1]
        tensor([ 1, -8,  1])
    """
    from .kernel_specs import build

    return build(spec, dtype=dtype, device=device)
