"""Learning a kernel from (input, output) pairs: exactly, or by gradient descent that converges.

The chapter learns the edge kernel ``[[1, -1]]`` from ``X`` and ``Y = corr2d(X, K)`` by
gradient descent on ``L(w, b) = sum((conv(X, w) + b - Y)^2)`` with the step size 0.03, and
readers found that adding a bias makes it diverge. The loss is quadratic in ``theta = (w, b)``:
with ``A`` the design matrix (one row per output pixel, the window of ``X`` it sees, and a
1 for the bias), ``L = ||A theta - y||^2`` and its Hessian is the constant ``H = 2 A^T A``.
Gradient descent with step ``lr`` multiplies the error along each eigenvector of ``H`` by
``1 - lr * lambda``; it converges iff ``lr < 2 / lambda_max``. The bias column adds a large
eigenvalue (the mean of the image), which pushes ``2 / lambda_max`` below 0.03.

:func:`fit_kernel` offers both roads: ``method="lstsq"`` solves ``A theta = y`` exactly
(float64 ``torch.linalg.lstsq``) and reports the rank of ``A`` against the number of
unknowns; ``method="gd"`` finds ``lambda_max`` by power iteration on the Hessian-vector
product ``H v = 2 J^T J v`` (``J`` the convolution, ``J^T`` its weight gradient
:func:`convforge.conv2d_weight`) and takes ``lr = 1 / lambda_max`` by default.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .functional import conv2d, conv2d_weight
from .spec import _pair, as_tensor, make_spec, pad_input

__all__ = ["FitResult", "fit_kernel"]

_METHODS = ("lstsq", "gd")
#: largest design matrix (elements) built for the rank diagnostics of method="gd"
_MAX_DESIGN = 1 << 24


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_kernel` found.

    Attributes:
        weight: the kernel, ``(kH, kW)`` for 2D data, ``(C_out, C_in, kH, kW)`` for 4D.
        bias: ``None``, a scalar tensor (2D data) or ``(C_out,)``.
        loss: ``sum((conv(X) + b - Y)^2)`` at the result ("lstsq"), or the history of it
            for "gd": ``loss[t]`` after ``t`` steps, ``loss[0]`` at the initial kernel.
        residual: ``||conv(X) + b - Y||_2`` at the result.
        rank: rank of the design matrix (``C_out`` copies), or None if not computed.
        n_unknowns: number of fitted numbers (kernel entries and biases).
        identifiable: ``rank == n_unknowns`` (one exact solution), or None.
        lr: the step size used ("gd"), else None.
        lambda_max: the largest eigenvalue of the loss's Hessian ``2 A^T A``.
        converged: "lstsq": True; "gd": the loss stopped decreasing within ``tol``.
        method: ``"lstsq"`` or ``"gd"``.
        steps: gradient steps taken (0 for "lstsq").
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    loss: float | list
    residual: float
    rank: int | None
    n_unknowns: int
    identifiable: bool | None
    lr: float | None
    lambda_max: float
    converged: bool
    method: str
    steps: int = 0


def _as_batches(X, Y):
    x, _ = as_tensor("fit_kernel", "X", X)
    y, _ = as_tensor("fit_kernel", "Y", Y)
    if x.dim() != y.dim() or x.dim() not in (2, 4):
        raise ValueError(
            "fit_kernel: X and Y must be both 2D (H, W) or both 4D (N, C, H, W), "
            f"but got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 4 and x.shape[0] != y.shape[0]:
        raise ValueError(
            f"fit_kernel: X and Y must hold the same number of samples, "
            f"but got {x.shape[0]} and {y.shape[0]}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    two_d = x.dim() == 2
    if two_d:
        x, y = x[None, None], y[None, None]
    return x.to(torch.float64), y.to(torch.float64), dtype, two_d


def _design(x, spec, bias):
    """A (N*L, C_in*kH*kW [+1]): row = the window one output pixel sees."""
    xp = pad_input(x, spec.padding, "zeros")
    cols = F.unfold(xp, (spec.kh, spec.kw), dilation=spec.dilation,
                    stride=spec.stride)                            # (N, C_in*kH*kW, L)
    a = cols.transpose(1, 2).reshape(-1, cols.shape[1])            # (N*L, C_in*kH*kW)
    if bias:
        a = torch.cat((a, torch.ones(a.shape[0], 1, dtype=a.dtype)), 1)
    return a


def _rank(a):
    s = torch.linalg.svdvals(a)
    tol = s.max() * max(a.shape) * torch.finfo(a.dtype).eps
    return int((s > tol).sum()), float(s.max()) ** 2 * 2


def _power_iteration(x, w_shape, c_out, bias, conv_kw, iters, seed):
    """Largest eigenvalue of H = 2 J^T J, J(w, b) = conv2d(x, w) + b, by power iteration."""
    gen = torch.Generator().manual_seed(seed)
    v_w = torch.randn(w_shape, generator=gen, dtype=torch.float64)
    v_b = torch.randn(c_out, generator=gen, dtype=torch.float64) if bias else None
    lam = 0.0
    for _ in range(iters):
        norm = math.sqrt(float((v_w ** 2).sum()) + (float((v_b ** 2).sum()) if bias else 0.0))
        if norm == 0.0:
            return 0.0
        v_w = v_w / norm
        v_b = v_b / norm if bias else None
        r = conv2d(x, v_w, v_b, **conv_kw)                          # J v: (N, C_out, oH, oW)
        h_w = 2 * conv2d_weight(x, w_shape, r, **conv_kw)           # 2 J^T J v, kernel part
        h_b = 2 * r.sum((0, 2, 3)) if bias else None                # bias part
        new = float((v_w * h_w).sum()) + (float((v_b * h_b).sum()) if bias else 0.0)
        v_w, v_b = h_w, h_b
        if abs(new - lam) <= 1e-13 * abs(new):
            return new
        lam = new
    return lam


def _loss(x, y, w, b, conv_kw):
    return ((conv2d(x, w, b, **conv_kw) - y) ** 2).sum()


def _gd(x, y, w, b, lr, steps, tol, conv_kw):
    """Plain gradient descent, as in the book; returns (w, b, history, converged)."""
    history, converged = [], False
    scale = float((y ** 2).sum())
    with torch.enable_grad():
        for t in range(steps + 1):
            w.requires_grad_(True)
            if b is not None:
                b.requires_grad_(True)
            loss = _loss(x, y, w, b, conv_kw)
            value = loss.item()
            history.append(value)
            if not math.isfinite(value):
                break
            prev = history[-2] if t else math.inf
            if value <= tol * scale or (t and 0 <= prev - value <= tol * prev):
                converged = True
                break
            if t == steps:
                break
            grads = torch.autograd.grad(loss, [w] if b is None else [w, b])
            with torch.no_grad():
                w = (w - lr * grads[0]).detach()
                b = None if b is None else (b - lr * grads[1]).detach()
    return w.detach(), None if b is None else b.detach(), history, converged


def fit_kernel(X, Y, kernel_size, *, bias=False, method="lstsq", lr=None, steps=1000,
               tol=1e-12, stride=1, padding=0, dilation=1, init=None, power_iters=500,
               seed=0) -> FitResult:
    """Find the kernel (and bias) that maps ``X`` to ``Y`` by cross-correlation.

    Args:
        X: ``(H, W)`` (the book's corr2d) or ``(N, C_in, H, W)`` (conv2d); tensor or array.
        Y: ``(oH, oW)`` or ``(N, C_out, oH, oW)``.
        kernel_size: int or ``(kH, kW)``.
        bias: also fit one bias per output channel.
        method: ``"lstsq"`` (exact, float64) or ``"gd"`` (gradient descent).
        lr: "gd" step size; default ``1 / lambda_max``. Above ``2 / lambda_max`` it warns.
        steps: most "gd" steps.
        tol: "gd" stops when the loss falls below ``tol * sum(Y^2)`` or decreases by
            less than ``tol`` relative in one step.
        stride, padding, dilation: passed to :func:`convforge.conv2d` (zero padding).
        init: "gd" starting kernel (shape of the result's weight); default zeros.
        power_iters: most power-iteration steps for ``lambda_max``.
        seed: seed of the power iteration's random start.

    Returns:
        A :class:`FitResult` (weight and bias in ``X``'s floating dtype, float32 for
        integers).

    Raises:
        ValueError: mismatched shapes, an unknown method, a non-positive lr or steps, or
            an all-zero ``X`` with "gd" (a flat loss has no step size).
        TypeError: inputs that are neither tensors nor arrays.

    Warns:
        UserWarning: the kernel is not identifiable (rank < unknowns; the minimum-norm
        solution is returned), or ``lr >= 2 / lambda_max`` (gradient descent diverges).

    Example:
        >>> X = torch.ones(6, 8); X[:, 2:6] = 0
        >>> Y = torch.tensor([[0., 1, 0, 0, 0, -1, 0]]).expand(6, 7)
        >>> fit_kernel(X, Y, (1, 2)).weight
        tensor([[ 1., -1.]])
    """
    if method not in _METHODS:
        raise ValueError(f"fit_kernel: method must be one of {_METHODS}, but got {method!r}")
    x, y, dtype, two_d = _as_batches(X, Y)
    kh, kw = _pair("fit_kernel", "kernel_size", kernel_size, minimum=1)
    c_in, c_out = x.shape[1], y.shape[1]
    w_shape = (c_out, c_in, kh, kw)
    spec = make_spec("fit_kernel", x.shape, w_shape, stride=stride, padding=padding,
                     dilation=dilation)
    if tuple(y.shape[2:]) != (spec.out_h, spec.out_w):
        raise ValueError(
            f"fit_kernel: Y must have the convolution's output size {(spec.out_h, spec.out_w)}, "
            f"but got {tuple(y.shape[2:])}")
    conv_kw = {"stride": spec.stride, "padding": ((spec.padding[0], spec.padding[1]),
                                                  (spec.padding[2], spec.padding[3])),
               "dilation": spec.dilation}
    per_channel = c_in * kh * kw + int(bool(bias))
    n_unknowns = c_out * per_channel
    rank = identifiable = None
    a = None
    if method == "lstsq" or (x.shape[0] * spec.out_h * spec.out_w * per_channel <= _MAX_DESIGN):
        a = _design(x, spec, bias)
        rank_a, lam_exact = _rank(a)
        rank, identifiable = c_out * rank_a, rank_a == per_channel
        if not identifiable:
            warnings.warn(
                f"fit_kernel: the kernel is not identifiable from these data: the design "
                f"matrix has rank {rank} < {n_unknowns} unknowns; the minimum-norm "
                f"solution is returned", stacklevel=2)

    if method == "lstsq":
        b_mat = y.reshape(y.shape[0], c_out, -1).transpose(1, 2).reshape(-1, c_out)
        sol = torch.linalg.lstsq(a, b_mat, driver="gelsd").solution  # (unknowns, C_out)
        w = sol[:c_in * kh * kw].T.reshape(w_shape).contiguous()
        b = sol[-1].contiguous() if bias else None
        loss = float(_loss(x, y, w, b, conv_kw))
        lam, history, converged, used_lr, taken = lam_exact, loss, True, None, 0
    else:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"fit_kernel: steps must be a positive int, but got {steps!r}")
        lam = _power_iteration(x, w_shape, c_out, bias, conv_kw, power_iters, seed)
        if lam <= 0:
            raise ValueError("fit_kernel: the loss is flat (lambda_max = 0, X is all zeros), "
                             f"but got X with sum of squares {float((x ** 2).sum())}")
        used_lr = 1.0 / lam if lr is None else float(lr)
        if used_lr <= 0 or not math.isfinite(used_lr):
            raise ValueError(f"fit_kernel: lr must be positive, but got {lr!r}")
        if used_lr >= 2.0 / lam:
            warnings.warn(
                f"fit_kernel: lr={used_lr:.6g} is at or above the stability bound "
                f"2/lambda_max={2.0 / lam:.6g} (lambda_max={lam:.6g}, the largest eigenvalue "
                f"of the loss's Hessian): gradient descent diverges unless the start's error "
                f"has no component along the Hessian's top eigenvector", stacklevel=2)
        w0 = torch.zeros(w_shape, dtype=torch.float64) if init is None else \
            as_tensor("fit_kernel", "init", init)[0].to(torch.float64).reshape(w_shape)
        b0 = torch.zeros(c_out, dtype=torch.float64) if bias else None
        w, b, history, converged = _gd(x, y, w0, b0, used_lr, steps, tol, conv_kw)
        loss, taken = history[-1], len(history) - 1
    residual = math.sqrt(loss) if math.isfinite(loss) else math.inf
    weight = w.reshape(kh, kw) if two_d else w
    if b is not None and two_d:
        b = b.reshape(())
    return FitResult(weight.to(dtype), None if b is None else b.to(dtype), history, residual,
                     rank, n_unknowns, identifiable, used_lr, lam, converged, method, taken)
