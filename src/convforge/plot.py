"""Figures a learner wants: image / kernel / response, kernel galleries, loss curves.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas directly (no
pyplot, no global state, no display needed), returns it, and saves it when ``path`` is
given (the format from the extension, PNG by default). Signed data (kernels, edge
responses) use a diverging colour map centred at 0 (``RdBu_r``: blue negative, white 0,
red positive; limits ``+-max|k|`` for kernels, ``+-`` the 99.5th percentile of ``|v|`` for
pictures); non-negative images use grey.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["filter_figure", "kernel_gallery", "loss_figure", "image_grid", "save"]

DIVERGING = "RdBu_r"


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _array(func, name, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)                                        # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"{func}: {name} must be 2D (H, W) or 3D (H, W, C), but got shape "
                         f"{a.shape}")
    return a


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(fig, path) -> Path:
    """Save ``fig`` atomically (temporary file in the same folder, then ``os.replace``).

    Example:
        >>> import tempfile, os
        >>> p = save(loss_figure([3.0, 1.0, 0.5]), os.path.join(tempfile.mkdtemp(), "l.png"))
        >>> p.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _limit(a, robust):
    """Colour limit of a signed array: max |a|, or its 99.5th percentile for pictures (so
    that a few extreme pixels do not wash the rest out)."""
    mags = np.abs(a[np.isfinite(a)])
    if mags.size == 0:
        return 1.0
    m = float(np.percentile(mags, 99.5)) if robust else float(mags.max())
    return m or float(mags.max()) or 1.0


def _show(ax, a, title, signed=None, annotate=False):
    """Draw ``a``: diverging around 0 if signed (default: has negative values), else grey.

    Kernels (``annotate``) use ``+-max|k|`` and get their values written in when at most
    5x5; pictures use ``+-`` the 99.5th percentile of ``|a|``.
    """
    signed = bool(np.nanmin(a) < 0) if signed is None else signed
    if a.ndim == 3:                                                     # colour image
        shown = a / 255.0 if a.max() > 1 else a
        im = ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
    elif signed:
        m = _limit(a, robust=not annotate)
        im = ax.imshow(a, cmap=DIVERGING, vmin=-m, vmax=m, interpolation="nearest")
    else:
        im = ax.imshow(a, cmap="gray", interpolation="nearest")
    if annotate and a.ndim == 2 and max(a.shape) <= 5:
        m = float(np.abs(a).max()) or 1.0
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center",
                    fontsize=8 if max(a.shape) <= 3 else 6,
                    color="white" if abs(v) > 0.6 * m else "black")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def filter_figure(image, kernel, response=None, *, title=None, border="reflect", path=None):
    """Image, kernel and response side by side (the response computed if not given).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` (``(C, H, W)`` is transposed for display).
        kernel: ``(kH, kW)``; shown with its values when at most 5x5.
        response: the filtered image; default :func:`convforge.filter2d` of a float copy.
        title: figure title.
        border: border mode when the response is computed here.
        path: save the figure there too.

    Returns:
        The Figure; its three axes hold image, kernel (``RdBu_r``, limits ``+-max|k|``) and
        response (the same diverging map, limits ``+-`` the 99.5th percentile of ``|r|``,
        if it has negative values).

    Example:
        >>> fig = filter_figure(torch.rand(16, 16), [[1.0, -1.0]])
        >>> len(fig.axes) >= 3
        True
    """
    from .filters import filter2d

    img = _array("filter_figure", "image", image)
    k = _array("filter_figure", "kernel", kernel)
    if response is None:
        response = filter2d(img.astype(np.float64), k, border=border, dtype=torch.float64)
    resp = _array("filter_figure", "response", response)
    if resp.ndim == 3:                                                  # show the mean response
        resp = resp.mean(axis=2)
    fig = _figure((11, 4))
    axes = fig.subplots(1, 3, width_ratios=[4, 2, 4])
    _show(axes[0], img, "image", signed=False)
    kim = _show(axes[1], k, f"kernel {k.shape[0]}x{k.shape[1]}", signed=True, annotate=True)
    fig.colorbar(kim, ax=axes[1], shrink=0.6)
    rim = _show(axes[2], resp, "response")
    fig.colorbar(rim, ax=axes[2], shrink=0.8)
    if title:
        fig.suptitle(title)
    if path is not None:
        save(fig, path)
    return fig


def kernel_gallery(kernels, *, ncols=4, title="kernel gallery", path=None):
    """A grid of kernels, each on a diverging map centred at 0 with its values written in.

    Args:
        kernels: mapping ``name -> (kH, kW)`` kernel, or a list of spec strings for
            :func:`convforge.kernels.get` (e.g. ``["sobel-x", "laplacian:8"]``).
        ncols: kernels per row.

    Example:
        >>> len(kernel_gallery(["sobel-x", "sobel-y", "laplacian"]).axes) >= 3
        True
    """
    from . import kernels as zoo

    if not isinstance(kernels, dict):
        kernels = {spec: zoo.get(spec, dtype=torch.float64) for spec in kernels}
    if not kernels:
        raise ValueError("kernel_gallery: kernels must not be empty, but got none")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"kernel_gallery: ncols must be a positive int, but got {ncols!r}")
    return _grid("kernel_gallery", kernels, ncols, (2.4, 2.4), title, path,
                 signed=True, annotate=True)


def loss_figure(losses, *, log=True, relative=False, title="loss while learning the kernel",
                path=None):
    """Loss curves of learned kernels (e.g. ``fit_kernel(..., method="gd").loss``).

    Args:
        losses: one sequence (``losses[t]`` after ``t`` steps) or ``{label: sequence}``.
        log: logarithmic y axis (when all plotted values are positive).
        relative: plot ``loss / loss[0]`` so that curves of different scales compare.

    Example:
        >>> loss_figure([8.8, 1.7, 0.37, 0.1]).axes[0].get_yscale()
        'log'
    """
    curves = losses if isinstance(losses, dict) else {"loss": losses}
    fig = _figure((6, 4))
    ax = fig.subplots()
    positive = True
    for label, values in curves.items():
        y = np.asarray([float(v) for v in values], dtype=np.float64)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"loss_figure: losses must be non-empty sequences, but got "
                             f"{values!r} for {label!r}")
        if relative and y[0] != 0:
            y = y / y[0]
        positive = positive and bool(np.all(y > 0))
        ax.plot(np.arange(y.size), y, marker="o" if y.size <= 30 else None, markersize=3,
                label=label)
    if log and positive:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss / initial loss" if relative else "loss (sum of squared errors)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    if path is not None:
        save(fig, path)
    return fig


def image_grid(images, *, ncols=3, title=None, path=None):
    """Several images or responses with titles: ``{"name": array}``; signed ones diverging.

    Example:
        >>> len(image_grid({"a": torch.rand(8, 8), "b": torch.randn(8, 8)}).axes) >= 2
        True
    """
    if not isinstance(images, dict) or not images:
        raise ValueError(f"image_grid: images must be a non-empty dict, but got "
                         f"{type(images).__name__}")
    return _grid("image_grid", images, ncols, (3.6, 3.4), title, path)


def _grid(func, items, ncols, cell, title, path, **show):
    """A figure of ``items`` ({name: 2D array}) in rows of ``ncols`` cells of ``cell`` inches."""
    n = len(items)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig = _figure((cell[0] * cols, cell[1] * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, a) in zip(axes, items.items()):
        _show(ax, _array(func, name, a), name, **show)
    for ax in axes[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    if path is not None:
        save(fig, path)
    return fig
