"""Filtering real images with a kernel: ``cv2.filter2D``'s semantics on top of ``conv2d``.

:func:`filter2d` correlates every channel of an image with a kernel (shared, or one per
channel), keeps the image's size, layout and kind (tensor or NumPy array), and anchors the
kernel at ``(kH // 2, kW // 2)`` as OpenCV does (also for even sizes: a 2-tap kernel reads
the pixel and its left neighbour). It is one depthwise :func:`convforge.conv2d` call with
per-side padding ``((aH, kH - 1 - aH), (aW, kW - 1 - aW))``.

Border modes and their names elsewhere:

============  ============================  ===============  ==========  ==============
border        OpenCV                        scipy.ndimage    numpy.pad   torch F.pad
============  ============================  ===============  ==========  ==============
zeros         BORDER_CONSTANT (value 0)     constant (0)     constant    constant
constant      (alias of zeros)
reflect       BORDER_REFLECT_101 (default)  mirror           reflect     reflect
replicate     BORDER_REPLICATE              nearest          edge        replicate
circular      BORDER_WRAP                   wrap             wrap        circular
symmetric     BORDER_REFLECT                reflect          symmetric   --
============  ============================  ===============  ==========  ==============

(``cv2.filter2D`` rejects BORDER_WRAP in OpenCV 4.x/5.x; ``circular`` is checked against
``scipy.ndimage.correlate(mode="wrap")`` and against ``cv2.copyMakeBorder(BORDER_WRAP)``.)

Layouts: ``layout="auto"`` reads a 2D array as ``HW``; a 3D array as ``HWC`` when its last
dimension is 1, 3 or 4 and its first is not, else as ``CHW``; a 4D array as ``NCHW``. Pass
the layout explicitly when an image could be read both ways (e.g. ``(3, 64, 3)``).

Dtypes: integer images (uint8, uint16, int16, ...) are computed in float64 (exact for any
kernel of float32 weights on 8/16-bit data); float32 in float32, float64 in float64.
``output="float"`` returns the unrounded response (float32 for integer input unless
``dtype`` says otherwise); ``output="same"`` returns the input's dtype, rounding half to even
and saturating to the dtype's range, as OpenCV's ``saturate_cast`` (``cvRound``) does.
"""

from __future__ import annotations

import numpy as np
import torch

from . import kernels as _k
from .bigimage import is_dask
from .functional import conv2d

__all__ = ["filter2d", "gradient_magnitude", "gradient_direction", "sharpen", "blur",
           "resolve_layout"]

BORDERS = ("zeros", "constant", "reflect", "replicate", "circular", "symmetric")
LAYOUTS = ("auto", "HW", "HWC", "CHW", "NCHW")
_CHANNEL_COUNTS = (1, 3, 4)
_TORCH_OF_NUMPY = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                   np.dtype(np.float64): torch.float64}


def resolve_layout(shape, layout: str = "auto", func: str = "filter2d") -> str:
    """The layout name for an image of ``shape`` (the ``layout="auto"`` rule above).

    Example:
        >>> resolve_layout((512, 512, 3)), resolve_layout((3, 64, 64)), resolve_layout((8, 8))
        ('HWC', 'CHW', 'HW')
    """
    if layout not in LAYOUTS:
        raise ValueError(f"{func}: layout must be one of {list(LAYOUTS)}, but got {layout!r}")
    ndim = len(shape)
    if layout == "auto":
        if ndim == 2:
            return "HW"
        if ndim == 3:
            hwc = shape[-1] in _CHANNEL_COUNTS and shape[0] not in _CHANNEL_COUNTS
            return "HWC" if hwc else "CHW"
        if ndim == 4:
            return "NCHW"
        raise ValueError(f"{func}: image must be 2D, 3D or 4D, but got shape {tuple(shape)}")
    if ndim != len(layout):
        raise ValueError(f"{func}: layout {layout} needs a {len(layout)}D image, "
                         f"but got shape {tuple(shape)}")
    return layout


def _to_nchw(x, layout):
    if layout == "HW":
        return x[None, None]
    if layout == "HWC":
        return x.permute(2, 0, 1)[None]
    return x[None] if layout == "CHW" else x


def _from_nchw(y, layout):
    if layout == "HW":
        return y[0, 0]
    if layout == "HWC":
        return y[0].permute(1, 2, 0)
    return y[0] if layout == "CHW" else y


def _image_tensor(func, image):
    """(tensor, numpy dtype or None, torch dtype); integers are read exactly."""
    if isinstance(image, torch.Tensor):
        dt = image.dtype
        if dt == torch.bool or dt.is_complex:
            raise TypeError(f"{func}: image must be real numeric, but got dtype {dt}")
        return image.detach(), None, dt
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "uif":
            raise TypeError(f"{func}: image must be a numeric array, but got dtype "
                            f"{image.dtype}")
        if image.dtype.kind in "ui":
            return torch.from_numpy(image.astype(np.float64)), image.dtype, None
        return torch.from_numpy(np.ascontiguousarray(image)), image.dtype, None
    raise TypeError(f"{func}: image must be a torch.Tensor or numpy.ndarray, but got "
                    f"{type(image).__name__}")


def _is_integer(np_dtype, torch_dtype):
    if np_dtype is not None:
        return np_dtype.kind in "ui"
    return not torch_dtype.is_floating_point


def _kernel_tensor(func, kernel, channels):
    if isinstance(kernel, np.ndarray):
        kernel = torch.from_numpy(np.ascontiguousarray(kernel))
    elif isinstance(kernel, (list, tuple)):
        kernel = torch.tensor(kernel, dtype=torch.float64)
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"{func}: kernel must be a tensor, array or nested list, but got "
                        f"{type(kernel).__name__}")
    if kernel.dtype == torch.bool or kernel.dtype.is_complex:
        raise TypeError(f"{func}: kernel must be real numeric, but got dtype {kernel.dtype}")
    if kernel.dim() == 2:
        return kernel.detach().expand(channels, *kernel.shape)           # (C, kH, kW)
    if kernel.dim() == 3 and kernel.shape[0] in (1, channels):
        return kernel.detach().expand(channels, *kernel.shape[1:])
    raise ValueError(f"{func}: kernel must be (kH, kW) or (C={channels}, kH, kW), but got "
                     f"shape {tuple(kernel.shape)}")


def _padding(func, kshape, anchor, border, h, w):
    kh, kw = kshape
    if anchor is None:
        anchor = (kh // 2, kw // 2)
    if (not isinstance(anchor, (tuple, list)) or len(anchor) != 2
            or not all(isinstance(a, int) and not isinstance(a, bool) for a in anchor)
            or not (0 <= anchor[0] < kh and 0 <= anchor[1] < kw)):
        raise ValueError(f"{func}: anchor must be (row, col) inside the {kh}x{kw} kernel, "
                         f"but got {anchor!r}")
    top, left = anchor
    bottom, right = kh - 1 - top, kw - 1 - left
    limit_h, limit_w = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(border, (None,) * 2)
    if limit_h is not None and (max(top, bottom) > limit_h or max(left, right) > limit_w):
        raise ValueError(f"{func}: a {kh}x{kw} kernel needs more {border} border than the "
                         f"{h}x{w} image has, but got image size ({h}, {w})")
    return (top, bottom), (left, right)


def filter2d(image, kernel, *, border: str = "reflect", output: str = "float",
             layout: str = "auto", anchor=None, dtype=None, algorithm: str = "auto"):
    """Correlate an image with a kernel, keeping its size: ``cv2.filter2D`` on tensors.

    Args:
        image: ``(H, W)``, ``(H, W, C)``, ``(C, H, W)`` or ``(N, C, H, W)``; uint8, uint16,
            other integers or floats; tensor or NumPy array.
        kernel: ``(kH, kW)`` shared by all channels, or ``(C, kH, kW)`` one per channel.
        border: ``"reflect"`` (OpenCV's default, BORDER_REFLECT_101), ``"zeros"`` /
            ``"constant"``, ``"replicate"``, ``"circular"`` or ``"symmetric"`` (see the
            module's table).
        output: ``"float"`` (the unrounded response) or ``"same"`` (the input's dtype,
            rounded half to even and saturated, as OpenCV with ``ddepth=-1``).
        layout: ``"auto"``, ``"HW"``, ``"HWC"``, ``"CHW"`` or ``"NCHW"``.
        anchor: ``(row, col)`` of the kernel tap over the output pixel; default
            ``(kH // 2, kW // 2)``. (OpenCV's ``anchor`` is a Point ``(x, y) = (col, row)``.)
        dtype: torch dtype of a float result; default float32 for integer images, else the
            image's dtype.
        algorithm: passed to :func:`convforge.conv2d` (``"auto"`` or a name from
            :func:`convforge.algorithms`).

    Returns:
        Same shape, layout and kind (tensor / array) as ``image``:
        ``out[i, j] = sum_{a, b} k[a, b] * img[i + a - aH, j + b - aW]``.

    Raises:
        TypeError: non-numeric image or kernel.
        ValueError: unknown border / output / layout, bad kernel shape or anchor, or a kernel
            wider than the image for ``reflect`` / ``circular`` borders.

    Example:
        >>> img = torch.tensor([[0, 0, 9, 9]], dtype=torch.uint8)
        >>> filter2d(img, [[-1.0, 1.0]], border="replicate")
        tensor([[0., 0., 9., 0.]])
    """
    func = "filter2d"
    if is_dask(image):                       # larger than memory: lazily, chunk by chunk
        from . import bigimage

        return bigimage.filter2d(image, kernel, border=border, output=output, layout=layout,
                                 anchor=anchor, dtype=dtype, algorithm=algorithm)
    if border not in BORDERS:
        raise ValueError(f"{func}: border must be one of {list(BORDERS)}, but got {border!r}")
    return _filter(func, image, kernel, border, output, layout, anchor, dtype, algorithm)


def _filter(func, image, kernel, border, output, layout, anchor, dtype, algorithm):
    """filter2d's computation; ``border=None``: no border, the valid windows only (the
    image shrinks by the kernel's size less one; a chunk of a larger image, see
    :mod:`convforge.bigimage`)."""
    if output not in ("float", "same"):
        raise ValueError(f"{func}: output must be 'float' or 'same', but got {output!r}")
    x, np_dtype, t_dtype = _image_tensor(func, image)
    lay = resolve_layout(tuple(x.shape), layout, func)
    integer = _is_integer(np_dtype, t_dtype)
    src_float = x.dtype if not integer and np_dtype is None else _TORCH_OF_NUMPY.get(np_dtype)
    compute = torch.float64 if integer or src_float == torch.float64 else torch.float32
    xb = _to_nchw(x, lay).to(compute)                                    # (N, C, H, W)
    n, c, h, w = xb.shape
    k = _kernel_tensor(func, kernel, c)                                  # (C, kH, kW)
    if border is None:
        pads, mode = ((0, 0), (0, 0)), "zeros"
    else:
        pads = _padding(func, tuple(k.shape[1:]), anchor, border, h, w)
        mode = "zeros" if border == "constant" else border
    weight = k.to(device=xb.device, dtype=compute).reshape(c, 1, *k.shape[1:])
    y = conv2d(xb, weight, padding=pads, groups=c, padding_mode=mode,
               algorithm=algorithm)                                  # (N, C, H, W)
    y = _from_nchw(y, lay)
    if output == "float":
        out_dtype = dtype or (torch.float32 if integer else src_float)
        y = y.to(out_dtype)
        return y.numpy() if np_dtype is not None else y
    if not integer:
        y = y.to(src_float)
        return y.numpy() if np_dtype is not None else y
    if np_dtype is not None:
        info = np.iinfo(np_dtype)
        return np.clip(np.rint(y.numpy()), info.min, info.max).astype(np_dtype)
    info = torch.iinfo(t_dtype)
    return torch.round(y).clamp(info.min, info.max).to(t_dtype)


def _gradients(func, image, operator, border, layout):
    if operator not in ("sobel", "scharr", "prewitt"):
        raise ValueError(f"{func}: operator must be 'sobel', 'scharr' or 'prewitt', "
                         f"but got {operator!r}")
    factory = getattr(_k, operator)
    gx = filter2d(image, factory("x", dtype=torch.float64), border=border, layout=layout,
                  dtype=torch.float64)
    gy = filter2d(image, factory("y", dtype=torch.float64), border=border, layout=layout,
                  dtype=torch.float64)
    return gx, gy


def _result_dtype(image):
    dt = image.dtype
    if isinstance(image, np.ndarray):
        return np.float64 if dt == np.float64 else np.float32
    return torch.float64 if dt == torch.float64 else torch.float32


def gradient_magnitude(image, *, operator: str = "sobel", border: str = "reflect",
                       layout: str = "auto"):
    """Gradient magnitude ``sqrt(gx^2 + gy^2)`` with 3x3 Sobel (or Scharr / Prewitt) kernels.

    Returns float32 (float64 for float64 images), same layout; ``cv2.magnitude`` of
    ``cv2.Sobel`` x and y responses.

    Example:
        >>> ramp = torch.arange(5.).repeat(5, 1)           # intensity +1 per column
        >>> gradient_magnitude(ramp)[2, 2].item()          # Sobel gain is 8
        8.0
    """
    gx, gy = _gradients("gradient_magnitude", image, operator, border, layout)
    mag = (gx ** 2 + gy ** 2) ** 0.5
    return mag.astype(_result_dtype(image)) if isinstance(mag, np.ndarray) \
        else mag.to(_result_dtype(image))


def gradient_direction(image, *, operator: str = "sobel", border: str = "reflect",
                       layout: str = "auto"):
    """Gradient direction ``atan2(gy, gx)`` in radians, in ``[-pi, pi]``.

    0 points right (intensity rising to the right), ``pi / 2`` points *down* (image rows
    grow downwards); add ``2 pi`` to negative values for ``cv2.phase``'s ``[0, 2 pi)``.

    Example:
        >>> down = torch.arange(5.)[:, None].repeat(1, 5)   # intensity rising downwards
        >>> round(gradient_direction(down)[2, 2].item(), 4)
        1.5708
    """
    gx, gy = _gradients("gradient_direction", image, operator, border, layout)
    if isinstance(gx, np.ndarray):
        return np.arctan2(gy, gx).astype(_result_dtype(image))
    return torch.atan2(gy, gx).to(_result_dtype(image))


def sharpen(image, amount: float = 1.0, *, border: str = "reflect", output: str = "same",
            layout: str = "auto"):
    """Sharpen with :func:`convforge.kernels.sharpen` (``identity - amount * laplacian``).

    Example:
        >>> sharpen(torch.full((3, 3), 7, dtype=torch.uint8))[1, 1].item()   # flat: unchanged
        7
    """
    k = _k.sharpen(amount, dtype=torch.float64)
    return filter2d(image, k, border=border, output=output, layout=layout)


def blur(image, sigma: float = 1.0, size: int | None = None, *, border: str = "reflect",
         output: str = "same", layout: str = "auto"):
    """Gaussian blur with :func:`convforge.kernels.gaussian` (``cv2.GaussianBlur``'s kernel).

    Example:
        >>> blur(torch.full((9, 9), 100, dtype=torch.uint8), sigma=1.5)[4, 4].item()
        100
    """
    k = _k.gaussian(size, sigma, dtype=torch.float64)
    return filter2d(image, k, border=border, output=output, layout=layout)
