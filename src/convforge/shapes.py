"""Shape arithmetic of convolutions: pure integer maths, no torch.

Two ways of writing the output size appear in the literature and both are here:

* the book's (d2l 6.3), with the *total* padding ``p`` over both sides:
  ``floor((n - k + p + s) / s)``  (:func:`book_output_size`);
* torch's, with per-side padding and dilation:
  ``floor((n + p_before + p_after - d (k - 1) - 1) / s) + 1``  (:func:`output_size`).

They agree whenever ``p = p_before + p_after`` and ``d = 1``.
"""

from __future__ import annotations

import math
import numbers

__all__ = [
    "output_size", "book_output_size", "output_shape", "same_padding",
    "transpose_output_size", "receptive_field", "conv_flops", "conv_bytes",
]


def _to_tuple(name, value, nd=2):
    """An int (repeated ``nd`` times) or ``nd`` ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value),) * nd
    if (isinstance(value, (tuple, list)) and len(value) == nd
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        return tuple(int(v) for v in value)
    what = "an int" if nd == 1 else "a pair" if nd == 2 else f"a tuple of {nd}"
    raise TypeError(f"output_shape: {name} must be an int or {what} of ints, but got "
                    f"{value!r}")


def _to_pair(name, value):
    return _to_tuple(name, value, 2)


def output_size(n: int, k: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                dilation: int = 1) -> int:
    """Output length on one axis (torch's formula).

    Args:
        n: input length.
        k: kernel length.
        stride: step between windows.
        padding: per-side padding, or ``(before, after)``.
        dilation: spacing between kernel taps.

    Returns:
        ``floor((n + before + after - dilation * (k - 1) - 1) / stride) + 1``; a value
        below 1 means the kernel does not fit.

    Example:
        >>> output_size(8, 3, stride=2, padding=1)
        4
    """
    before, after = (padding, padding) if isinstance(padding, numbers.Integral) else padding
    return (n + before + after - dilation * (k - 1) - 1) // stride + 1


def book_output_size(n: int, k: int, total_padding: int = 0, stride: int = 1) -> int:
    """Output length with the book's formula, ``floor((n - k + p + s) / s)``.

    ``total_padding`` is the padding summed over both sides (d2l writes ``p_h``).

    Example:
        >>> book_output_size(8, 3, total_padding=2, stride=2)
        4
    """
    return (n - k + total_padding + stride) // stride


def same_padding(n: int, k: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """Per-side padding ``(before, after)`` for ``padding="same"``, also with stride.

    TensorFlow's rule: the output length is ``ceil(n / stride)``; the total padding is
    ``max((out - 1) * stride + dilation * (k - 1) + 1 - n, 0)``, with the odd extra sample
    at the end (bottom / right). With stride 1 this is torch's ``padding="same"``.

    Example:
        >>> same_padding(8, 3, stride=2)
        (0, 1)
        >>> same_padding(8, 4)
        (1, 2)
    """
    out = -(-n // stride)
    total = max((out - 1) * stride + dilation * (k - 1) + 1 - n, 0)
    return (total // 2, total - total // 2)


def _padding_per_side(padding, size, kernel, stride, dilation):
    nd = len(size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return tuple(same_padding(size[a], kernel[a], stride[a], dilation[a])
                         for a in range(nd))
        if padding == "full":
            return tuple((dilation[a] * (kernel[a] - 1),) * 2 for a in range(nd))
        raise ValueError(
            f"output_shape: padding must be an int, one int per axis, per-side pairs, "
            f"'same', 'valid' or 'full', but got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == nd
            and all(isinstance(p, (tuple, list)) for p in padding)):
        return tuple(_to_tuple("padding", p, 2) for p in padding)
    if nd == 1 and isinstance(padding, (tuple, list)) and len(padding) == 2:
        return (_to_tuple("padding", padding, 2),)          # conv1d's (left, right)
    return tuple((p, p) for p in _to_tuple("padding", padding, nd))


def _ndim(*values):
    """The number of spatial axes: the length of the first tuple among ``values`` (2 if
    every one is an int)."""
    for v in values:
        if isinstance(v, (tuple, list)):
            return len(v)
    return 2


def output_shape(input_size, kernel_size, stride=1, padding=0, dilation=1) -> tuple:
    """Spatial output shape of a 1D, 2D or 3D convolution (``(oH, oW)`` for 2D).

    Args:
        input_size: ``(H, W)``, ``(L,)`` or ``(D, H, W)``; an int is a square 2D input.
        kernel_size: one int per axis, or an int.
        stride, dilation: int or one per axis.
        padding: int or one per axis (torch's, per side), per-side pairs per axis
            (``((top, bottom), (left, right))``; 1D also ``(left, right)``), ``"valid"``,
            ``"same"`` (also strided: ``ceil(H / stride)``) or ``"full"``.

    Returns:
        One size per axis, ``floor((H + top + bottom - dH (kH - 1) - 1) / sH) + 1``.

    Raises:
        ValueError: if the kernel does not fit in the padded input.

    Example:
        >>> output_shape((8, 8), (3, 5), stride=(3, 4), padding=(0, 1))
        (2, 2)
        >>> output_shape(7, 3, stride=2, padding="same")
        (4, 4)
        >>> output_shape((16, 32, 32), 3, stride=(1, 2, 2), padding="same")
        (16, 16, 16)
        >>> output_shape((100,), (5,), padding=(4, 0))
        (100,)
    """
    nd = _ndim(input_size, kernel_size, stride, dilation)
    size = _to_tuple("input_size", input_size, nd)
    kernel = _to_tuple("kernel_size", kernel_size, nd)
    stride = _to_tuple("stride", stride, nd)
    dilation = _to_tuple("dilation", dilation, nd)
    if min(stride) < 1 or min(dilation) < 1 or min(kernel) < 1 or min(size) < 1:
        raise ValueError(
            f"output_shape: sizes, stride and dilation must be positive, but got input_size="
            f"{input_size}, kernel_size={kernel_size}, stride={stride}, dilation={dilation}")
    pads = _padding_per_side(padding, size, kernel, stride, dilation)
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"output_shape: padding must be non-negative, but got {padding!r}")
    out = tuple(output_size(size[a], kernel[a], stride[a], pads[a], dilation[a])
                for a in range(nd))
    if min(out) < 1:
        raise ValueError(
            f"output_shape: the dilated kernel must fit in the padded input, but got "
            f"input_size={size}, kernel_size={kernel}, padding={pads}, dilation={dilation}")
    return out


def transpose_output_size(n: int, k: int, stride: int = 1, padding: int = 0,
                          output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution (torch's formula).

    ``(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.

    Example:
        >>> transpose_output_size(4, 3, stride=2, padding=1, output_padding=1)
        8
    """
    return (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1


def receptive_field(layers) -> list[dict]:
    """Receptive field, jump and start of a stack of layers on one axis.

    Args:
        layers: iterable of ``(kernel, stride)`` or ``(kernel, stride, dilation)``.

    Returns:
        One dict per layer with ``rf`` (input samples one output sample sees),
        ``jump`` (input distance between neighbouring outputs) and ``kernel``,
        ``stride``, ``dilation``. ``rf_l = rf_{l-1} + d (k - 1) * jump_{l-1}``,
        ``jump_l = jump_{l-1} * s``.

    Example:
        >>> [r["rf"] for r in receptive_field([(3, 1), (3, 1), (2, 2)])]
        [3, 5, 6]
    """
    rf, jump, rows = 1, 1, []
    for layer in layers:
        k, s, d = (tuple(layer) + (1,))[:3]
        rf = rf + d * (k - 1) * jump
        jump = jump * s
        rows.append({"kernel": k, "stride": s, "dilation": d, "rf": rf, "jump": jump})
    return rows


def conv_flops(n, c_in, c_out, out_hw, kernel, groups=1) -> dict:
    """Floating-point operations (multiply and add counted separately) of one conv layer.

    Forward: ``2 N C_out oH oW (C_in / G) kH kW`` (``out_hw`` and ``kernel`` have one
    size per axis: 1D, 2D or 3D). The input gradient and the weight gradient each cost
    the same as the forward pass (each is a convolution with the same multiply-add
    count), so forward + backward is 3x the forward.

    Example:
        >>> conv_flops(1, 3, 64, (112, 112), (7, 7))["forward"]
        236027904
        >>> conv_flops(8, 32, 32, (32, 32, 32), (3, 3, 3), groups=32)["forward"]
        452984832
    """
    if len(out_hw) != len(kernel):
        raise ValueError(f"conv_flops: out_hw and kernel must have one size per axis, but got "
                         f"{tuple(out_hw)} and {tuple(kernel)}")
    fwd = 2 * n * c_out * math.prod(out_hw) * (c_in // groups) * math.prod(kernel)
    return {"forward": fwd, "grad_input": fwd, "grad_weight": fwd, "total": 3 * fwd}


def conv_bytes(n, c_in, h, w, c_out, out_hw, kernel, groups=1, itemsize=4) -> dict:
    """Minimum bytes moved: read input and weight, write output (and their gradients).

    Example:
        >>> conv_bytes(1, 1, 4, 4, 1, (2, 2), (3, 3))["forward"]
        116
    """
    oh, ow = out_hw
    kh, kw = kernel
    x, wt, y = n * c_in * h * w, c_out * (c_in // groups) * kh * kw, n * c_out * oh * ow
    fwd = (x + wt + y) * itemsize
    bwd = (2 * y + x + wt + x + wt) * itemsize  # read dy twice, read x and w, write dx, dw
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd,
            "intensity_forward": conv_flops(n, c_in, c_out, out_hw, kernel, groups)["forward"]
            / fwd}
