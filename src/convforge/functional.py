"""The public convolution functions, with torch's signatures plus ``algorithm=``.

Cross-correlation versus convolution, stated once: every function here except
:func:`convforge.convolve2d` computes the *cross-correlation*
``y[i, j] = sum_{a,b} x[i*s + a*d, j*s + b*d] * k[a, b]`` (what deep-learning libraries
call convolution). True convolution flips the kernel on both axes first:
``convolve(x, k) == correlate(x, k[::-1, ::-1])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops
from .autograd import conv_grad_input, conv_grad_weight
from .bigimage import is_dask
from .dispatch import resolve
from .plan import autocast_cast, autocast_dtype, compute_dtype, conv_plan, grad_flags
from .spec import (
    ConvShapeError,
    as_tensor,
    check_dtypes,
    check_grad_output,
    make_spec,
    make_transpose_spec,
    pad_input,
)

__all__ = ["conv1d", "conv2d", "conv_transpose2d", "corr2d", "conv2d_input", "conv2d_weight"]


def _prepare(func, input, weight, bias):
    x, from_numpy = as_tensor(func, "input", input)
    w, _ = as_tensor(func, "weight", weight)
    b, _ = as_tensor(func, "bias", bias, allow_none=True)
    check_dtypes(func, x, w, b)
    return x, w, b, from_numpy


def _finish(out, b, dtype, batched, from_numpy):
    if b is not None:
        out = out + b.to(out.dtype).view(1, -1, 1, 1)
    out = out.to(dtype)
    if not batched:
        out = out.squeeze(0)
    return out.detach().numpy() if from_numpy else out


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", measure=None):
    """2D cross-correlation with torch's ``F.conv2d`` semantics, and more.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; tensor or NumPy array.
        weight: ``(C_out, C_in / groups, kH, kW)``.
        bias: optional ``(C_out,)``.
        stride, dilation: int or ``(sH, sW)``; positive.
        padding: int, ``(pH, pW)``, per side ``((top, bottom), (left, right))``,
            ``"valid"`` or ``"same"`` (also with stride: output ``ceil(H / sH)``, the odd
            extra row/column at the bottom/right, TensorFlow's rule).
        groups: number of blocked connections from input to output channels.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (torch's
            meanings) or ``"symmetric"`` (numpy.pad's: the edge sample repeated).
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms`.
        measure: with ``"auto"``, time the candidates once for this configuration (True),
            trust the cost model (False) or follow ``convforge.backends.benchmark`` (None).

    Returns:
        ``(N, C_out, oH, oW)`` (or ``(C_out, oH, oW)``), same dtype and kind as ``input``;
        float16/bfloat16 are computed in float32.

    Shape:
        ``oH = floor((H + top + bottom - dH (kH - 1) - 1) / sH) + 1``, likewise ``oW``.

    Raises:
        TypeError: non-array input, non-integer stride/dilation/groups, dtype mismatch.
        ValueError: any other invalid argument (shape errors are also RuntimeErrors).

    A call whose shapes, dtypes, device, layout, arguments and gradient needs were seen
    before reuses that call's checked plan (:mod:`convforge.plan`): the arguments are
    checked, and the algorithms chosen, once per configuration.

    Example:
        >>> x = torch.arange(9.).reshape(1, 1, 3, 3)
        >>> conv2d(x, torch.arange(4.).reshape(1, 1, 2, 2))
        tensor([[[[19., 25.],
                  [37., 43.]]]])
    """
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor) and (
            bias is None or isinstance(bias, torch.Tensor)):
        return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups,
                     padding_mode, algorithm, measure)
    if is_dask(input):                       # larger than memory: lazily, chunk by chunk
        from . import bigimage

        return bigimage.conv2d(input, weight, bias, stride, padding, dilation, groups,
                               padding_mode=padding_mode, algorithm=algorithm)
    x, w, b, from_numpy = _prepare("conv2d", input, weight, bias)
    out = _conv("conv2d", x, w, b, stride, padding, dilation, groups, padding_mode, algorithm,
                measure)
    return out.detach().numpy() if from_numpy else out


def _conv(func, x, w, b, stride, padding, dilation, groups, padding_mode, algorithm, measure):
    """The one forward path, through the call's cached plan (tensors in and out). Under
    ``torch.autocast`` the inputs are cast as torch casts a convolution's, and the
    algorithms run with autocast off (their own GEMMs stay in the compute dtype). Traced
    and transformed calls (torch.compile, torch.export, torch.func) go through the custom
    operator instead (:mod:`convforge.ops`)."""
    if ops.tracing(x, w, b):
        return ops.traced_conv2d(x, w, b, stride, padding, dilation, groups, padding_mode,
                                 algorithm)
    low = autocast_dtype(x)
    if low is not None:
        x, w, b = autocast_cast(low, x, w, b)
        with torch.autocast(x.device.type, enabled=False):
            return _conv(func, x, w, b, stride, padding, dilation, groups, padding_mode,
                         algorithm, measure)
    plan = conv_plan(func, x, w, b, stride, padding, dilation, groups, padding_mode,
                     algorithm, measure)
    return plan.run(x, w, b)


def _fuses_padding(spec, passes, mode):
    return passes.fused_zero_padding and (mode == "zeros" or not spec.is_padded)


def _algorithm_view(x, spec, passes, mode):
    """The input and spec the algorithms receive: padded here, unless they pad zeros."""
    if _fuses_padding(spec, passes, mode):
        return x, spec
    return pad_input(x, spec.padding, mode), spec.after_padding()  # (N, C_in, Hp, Wp)


def _one(func, name, value, minimum):
    """A 1D argument: an int or a 1-tuple, at least ``minimum``."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{func}: {name} must be an int or a 1-tuple of ints, but got {value!r}")
    if value < minimum:
        rule = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{func}: {name} must be {rule}, but got {value!r}")
    return value


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", measure=None):
    """1D cross-correlation with torch's ``F.conv1d`` semantics (a 2D one of height 1).

    Args:
        input: ``(N, C_in, L)`` or ``(C_in, L)``.
        weight: ``(C_out, C_in / groups, k)``.
        padding: int, ``(left, right)``, ``"valid"`` or ``"same"`` (also strided).
        Others as in :func:`conv2d`.

    Returns:
        ``(N, C_out, oL)`` with ``oL = floor((L + left + right - d (k - 1) - 1) / s) + 1``.

    Example:
        >>> conv1d(torch.tensor([[[1., 2., 3., 4.]]]), torch.tensor([[[1., -1.]]]))
        tensor([[[-1., -1., -1.]]])
    """
    x, w, b, from_numpy = _prepare("conv1d", input, weight, bias)
    if x.dim() not in (2, 3):
        raise ConvShapeError(
            f"conv1d: input must be 2D (C, L) or 3D (N, C, L), but got shape {tuple(x.shape)}")
    if w.dim() != 3:
        raise ConvShapeError(
            f"conv1d: weight must be 3D (out_channels, in_channels/groups, k), "
            f"but got shape {tuple(w.shape)}")
    if isinstance(padding, str):
        padding2d = padding
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        padding2d = ((0, 0), tuple(_one("conv1d", "padding", p, 0) for p in padding))
    else:
        padding2d = (0, _one("conv1d", "padding", padding, 0))
    out = _conv("conv1d", x.unsqueeze(-2), w.unsqueeze(-2), b,
                (1, _one("conv1d", "stride", stride, 1)), padding2d,
                (1, _one("conv1d", "dilation", dilation, 1)), groups, padding_mode, algorithm,
                measure)
    out = out.squeeze(-2)                                         # (N, C_out, oL)
    return out.detach().numpy() if from_numpy else out


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto"):
    """Transposed convolution with torch's ``F.conv_transpose2d`` semantics.

    It is the adjoint (input gradient) of :func:`conv2d` with the same weight, stride,
    dilation and groups, cropped by ``padding`` on each side and extended by
    ``output_padding`` at the bottom/right.

    Args:
        input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``.
        weight: ``(C_in, C_out / groups, kH, kW)``.
        output_padding: extra rows/columns at the end; smaller than stride or dilation.

    Returns:
        ``(N, C_out, oH, oW)``.

    Shape:
        ``oH = (H - 1) sH - 2 pH + dH (kH - 1) + output_padding + 1``.

    Example:
        >>> conv_transpose2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), stride=2).shape
        torch.Size([1, 1, 4, 4])
    """
    if (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)
            and ops.tracing(input, weight, bias)):
        return ops.traced_conv_transpose2d(input, weight, bias, stride, padding,
                                           output_padding, groups, dilation, algorithm)
    low = autocast_dtype(input)
    if low is not None and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_cast(low, input, weight, bias)
        with torch.autocast(input.device.type, enabled=False):
            return conv_transpose2d(input, weight, bias, stride, padding, output_padding,
                                    groups, dilation, algorithm=algorithm)
    x, w, b, from_numpy = _prepare("conv_transpose2d", input, weight, bias)
    ts = make_transpose_spec("conv_transpose2d", x.shape, w.shape, bias=b, stride=stride,
                             padding=padding, output_padding=output_padding, groups=groups,
                             dilation=dilation)
    ct = compute_dtype(x.dtype)
    # its forward is the input gradient of ts.conv; its input's gradient is the forward
    # pass (chosen always) and its weight's gradient the weight-gradient pass
    algo = resolve("conv_transpose2d", algorithm, ts.conv, ct, x.device,
                   grads=(True, grad_flags(x, w)[1]))
    xb = x if ts.batched else x.unsqueeze(0)
    full = conv_grad_input(xb.to(ct), w.to(ct), ts.conv, algo, ts.conv.padded_shape)
    (ph, pw), (oph, opw) = ts.padding, ts.output_padding
    if oph or opw:
        full = F.pad(full, (0, opw, 0, oph))                     # (N, C_out, fH+op, fW+op)
    out = full[..., ph:ph + ts.out_h, pw:pw + ts.out_w]           # (N, C_out, oH, oW)
    return _finish(out, b, x.dtype, ts.batched, from_numpy)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 *, algorithm="auto"):
    """Gradient of :func:`conv2d` with respect to its input (``torch.nn.grad.conv2d_input``).

    Example:
        >>> conv2d_input((1, 1, 3, 3), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor([[[[1., 2., 1.],
                  [2., 4., 2.],
                  [1., 2., 1.]]]])
    """
    w, _ = as_tensor("conv2d_input", "weight", weight)
    g, from_numpy = as_tensor("conv2d_input", "grad_output", grad_output)
    check_dtypes("conv2d_input", g, w)
    spec = make_spec("conv2d_input", tuple(input_size), w.shape, stride=stride,
                     padding=padding, dilation=dilation, groups=groups)
    check_grad_output(spec, g.shape)
    ct = compute_dtype(g.dtype)
    algo = resolve("conv2d_input", algorithm, spec, ct, g.device, grads=(True, False))
    gb = g if spec.batched else g.unsqueeze(0)
    if _fuses_padding(spec, algo, "zeros"):
        gx = conv_grad_input(gb.to(ct), w.to(ct), spec, algo, (spec.n, spec.c_in, spec.h, spec.w))
    else:
        gx = conv_grad_input(gb.to(ct), w.to(ct), spec.after_padding(), algo, spec.padded_shape)
        top, _, left, _ = spec.padding
        gx = gx[..., top:top + spec.h, left:left + spec.w]
    return _finish(gx, None, g.dtype, spec.batched, from_numpy)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  *, algorithm="auto"):
    """Gradient of :func:`conv2d` with respect to its weight (``torch.nn.grad.conv2d_weight``).

    Example:
        >>> conv2d_weight(torch.ones(1, 1, 3, 3), (1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor([[[[4., 4.],
                  [4., 4.]]]])
    """
    x, from_numpy = as_tensor("conv2d_weight", "input", input)
    g, _ = as_tensor("conv2d_weight", "grad_output", grad_output)
    check_dtypes("conv2d_weight", x, g)
    spec = make_spec("conv2d_weight", x.shape, tuple(weight_size), stride=stride,
                     padding=padding, dilation=dilation, groups=groups)
    check_grad_output(spec, g.shape)
    ct = compute_dtype(x.dtype)
    algo = resolve("conv2d_weight", algorithm, spec, ct, x.device, grads=(False, True))
    xb, gb = (x, g) if spec.batched else (x.unsqueeze(0), g.unsqueeze(0))
    xin, aspec = _algorithm_view(xb.to(ct), spec, algo, "zeros")
    gw = conv_grad_weight(xin, gb.to(ct), aspec, algo, spec.weight_shape)
    gw = gw.to(x.dtype)
    return gw.detach().numpy() if from_numpy else gw


def _book_dtype(t):
    """The book's corr2d writes into float32 zeros: integers become float32."""
    return t.dtype if (t.is_floating_point() or t.is_complex()) else torch.float32


def corr2d(X, K):
    """The book's 2D cross-correlation of a 2D input and a 2D kernel (stride 1, no padding).

    Args:
        X: ``(H, W)`` tensor or array.
        K: ``(kH, kW)`` tensor or array.

    Returns:
        ``(H - kH + 1, W - kW + 1)``; integer inputs give float32 (as in d2l). Differentiable.

    Example:
        >>> corr2d(torch.arange(9).reshape(3, 3), torch.arange(4).reshape(2, 2))
        tensor([[19., 25.],
                [37., 43.]])
    """
    x, from_numpy = as_tensor("corr2d", "X", X)
    k, _ = as_tensor("corr2d", "K", K)
    for name, t in (("X", x), ("K", k)):
        if t.dim() != 2:
            raise ConvShapeError(
                f"corr2d: {name} must be 2D (height, width), but got shape {tuple(t.shape)}; "
                f"for (N, C, H, W) batches use convforge.conv2d or convforge.nn.Conv2d")
    dtype = torch.promote_types(_book_dtype(x), _book_dtype(k))
    y = conv2d(x.to(dtype)[None, None], k.to(dtype)[None, None])[0, 0]
    return y.detach().numpy() if from_numpy else y
