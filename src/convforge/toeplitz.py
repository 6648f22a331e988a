"""The convolution as a matrix: cross-correlation of a fixed kernel is a linear map.

For a kernel ``K`` ``(kH, kW)`` and an input shape ``(H, W)``, :func:`conv_matrix` returns the
``(oH * oW, H * W)`` matrix ``M`` with ``M @ X.flatten() == conv2d(X, K).flatten()`` (one
channel, zero padding, any stride and dilation). Row ``i * oW + j`` holds the kernel laid
over the window of output ``(i, j)``: for each tap ``(a, b)`` the entry at input position
``(i sH + a dH - top, j sW + b dW - left)`` is ``K[a, b]``; taps that fall into the zero
padding are left out. With stride 1, no padding and one row per image row, ``M`` is a
block-Toeplitz matrix (hence the module's name). ``M.T`` is the transposed convolution,
the input gradient of the convolution (adjointness: ``<M x, y> == <x, M.T y>``).
"""

from __future__ import annotations

import torch

from .spec import as_tensor, make_spec

__all__ = ["conv_matrix"]


def conv_matrix(kernel, input_shape, *, stride=1, padding=0, dilation=1, sparse=False):
    """The matrix of the 2D cross-correlation with ``kernel`` on inputs of ``input_shape``.

    Args:
        kernel: ``(kH, kW)`` tensor or array (integers become float32).
        input_shape: ``(H, W)``.
        stride, dilation: int or pair, positive.
        padding: int, pair, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``
            (zeros).
        sparse: return a coalesced ``torch.sparse_coo_tensor`` instead of a dense tensor.

    Returns:
        ``M`` of shape ``(oH * oW, H * W)``, in the kernel's (floating) dtype and device,
        differentiable with respect to ``kernel``.

    Raises:
        ValueError: a kernel that is not 2D, a bad shape, stride, padding or dilation
            (the messages of :func:`convforge.conv2d`).
        TypeError: a kernel that is neither a tensor nor an array.

    Example:
        >>> conv_matrix(torch.tensor([[1.0, -1.0]]), (1, 3))
        tensor([[ 1., -1.,  0.],
                [ 0.,  1., -1.]])
    """
    k, _ = as_tensor("conv_matrix", "kernel", kernel)
    if k.dim() != 2:
        raise ValueError(
            f"conv_matrix: kernel must be 2D (kH, kW), but got shape {tuple(k.shape)}")
    if not (k.is_floating_point() or k.is_complex()):
        k = k.to(torch.float32)
    shape = tuple(input_shape)
    if len(shape) != 2:
        raise ValueError(f"conv_matrix: input_shape must be (H, W), but got {input_shape!r}")
    kh, kw = k.shape
    spec = make_spec("conv_matrix", (1, 1, *shape), (1, 1, kh, kw), stride=stride,
                     padding=padding, dilation=dilation)
    h, w = spec.h, spec.w
    oh, ow = spec.out_h, spec.out_w
    top, _, left, _ = spec.padding
    dev = k.device
    i = torch.arange(oh, device=dev).view(oh, 1, 1, 1)
    j = torch.arange(ow, device=dev).view(1, ow, 1, 1)
    a = torch.arange(kh, device=dev).view(1, 1, kh, 1)
    b = torch.arange(kw, device=dev).view(1, 1, 1, kw)
    r = i * spec.stride[0] + a * spec.dilation[0] - top          # (oH, 1, kH, 1)
    c = j * spec.stride[1] + b * spec.dilation[1] - left         # (1, oW, 1, kW)
    r, c = torch.broadcast_tensors(r, c)                         # (oH, oW, kH, kW)
    row = (i * ow + j).expand(oh, ow, kh, kw)                    # output index
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    rows, cols = row[inside], (r * w + c)[inside]                # (nnz,)
    vals = k.expand(oh, ow, kh, kw)[inside]                      # (nnz,)
    if sparse:
        idx = torch.stack((rows, cols))                          # (2, nnz)
        return torch.sparse_coo_tensor(idx, vals, (oh * ow, h * w),
                                       check_invariants=True).coalesce()
    m = torch.zeros(oh * ow, h * w, dtype=k.dtype, device=dev)
    return m.index_put((rows, cols), vals, accumulate=True)
