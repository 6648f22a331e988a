"""im2col + GEMM: the exercise "cross-correlation as matrix multiplication", made fast.

The padded input is viewed (no copy) as ``(N, C, kH, kW, oH, oW)`` windows with
``as_strided``; one reshape lays them out as columns ``(N, G, Cg*kH*kW, oH*oW)`` and the
convolution becomes the batched matrix product ``W (G, Og, Cg*kH*kW) @ columns``. Samples
are processed in chunks so that the columns stay within ``_CHUNK_BYTES`` (memory and
cache), and each chunk's product is written straight into the output.

Layouts:

* 1x1 layers need no columns: a strided slice of the input is already the matrix. With
  a channels_last input the whole layer is one GEMM ``(N*oH*oW, C_in) @ (C_in, C_out)``
  and the output is channels_last, as torch's; otherwise a batched GEMM per sample.
* channels_last columns ``(N*oH*oW, kH*kW*C_in)`` are used for channels_last inputs and
  for few-channel strided layers (the 7x7 stride-2 stem, C_in = 3): their gather copies
  contiguous runs of kW*C_in values instead of single strided floats.

Backward passes are the two transposed products. The weight gradient is one GEMM per
chunk over all its samples' positions, ``(G, Og, n*L) @ (G, n*L, K)``, accumulated in
place (no per-sample weight copies). The input gradient folds the column gradient back
with torch's col2im (``F.fold``); complex tensors, which fold does not take on every
backend, use one strided add per kernel tap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LazyModule, cols_chunk, counts, out_size, tap_slices

_col2im_kernels = LazyModule(__package__ + "._col2im_kernels")  # Numba: on first use

#: upper bound on the columns materialised at once (bytes)
_CHUNK_BYTES = 16 << 20


def supports(spec, dtype, device):
    return None


def _chunk(n, per_sample_elems, itemsize):
    return max(1, min(n, _CHUNK_BYTES // max(1, per_sample_elems * itemsize)))


def _windows(x, spec, oh, ow):
    """Zero-copy view ``(N, C, kH, kW, oH, oW)`` of every kernel window."""
    sn, sc, sh, sw = x.stride()
    (s1, s2), (d1, d2) = spec.stride, spec.dilation
    n, c = x.shape[:2]
    return x.as_strided((n, c, spec.kh, spec.kw, oh, ow),
                        (sn, sc, sh * d1, sw * d2, sh * s1, sw * s2), x.storage_offset())


def _is_pointwise(spec):
    return spec.kh == spec.kw == 1


def _channels_last_columns(x, spec):
    """Use (N*L, kH*kW*C) columns: channels_last input, or a few-channel strided stem."""
    if spec.groups != 1 or x.is_complex():
        return False
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return True
    return spec.c_in <= 4 and spec.stride != (1, 1) and spec.kh * spec.kw >= 9


COMPILED = True            # col2im (grad_input) is a Numba kernel, compiled on first use
FUSED_BIAS = True


def forward(x, w, spec, bias=None):
    """Columns times weights; a bias is added by the GEMM itself where it is one GEMM (1x1
    layers, channels_last columns), else in place."""
    x, w = x.resolve_conj(), w.resolve_conj()
    n, c_in, hp, wp = x.shape
    c_out, g = w.shape[0], spec.groups
    oh, ow = out_size(spec, hp, wp)
    if _channels_last_columns(x, spec):
        return _forward_nhwc(x, w, spec, oh, ow, bias)
    wm = w.reshape(g, c_out // g, -1)                             # (G, Og, K)
    if _is_pointwise(spec):
        (s1, s2) = spec.stride
        xs = x[..., :s1 * (oh - 1) + 1:s1, :s2 * (ow - 1) + 1:s2]  # (N, C, oH, oW)
        if g == 1 and bias is not None:                          # out = b + W @ x, one GEMM
            cols = xs.reshape(n, c_in, oh * ow)                  # (N, C_in, L)
            out = torch.baddbmm(bias.view(1, c_out, 1), wm.expand(n, c_out, c_in), cols)
            return out.view(n, c_out, oh, ow)
        out = torch.matmul(wm, xs.reshape(n, g, c_in // g, oh * ow)).view(n, c_out, oh, ow)
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))
    win = _windows(x, spec, oh, ow)                               # (N, C, kH, kW, oH, oW)
    k = wm.shape[-1]
    out = x.new_empty((n, g, c_out // g, oh * ow))
    step = _chunk(n, c_in * spec.kh * spec.kw * oh * ow, x.element_size())
    for n0 in range(0, n, step):
        cols = win[n0:n0 + step].reshape(-1, g, k, oh * ow)       # (n, G, K, L)
        torch.matmul(wm, cols, out=out[n0:n0 + step])             # (n, G, Og, L)
    out = out.view(n, c_out, oh, ow)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def _forward_nhwc(x, w, spec, oh, ow, bias=None):
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    wt = w.permute(0, 2, 3, 1).reshape(c_out, -1).t()             # (kH*kW*C, C_out)
    xl = x.contiguous(memory_format=torch.channels_last)
    out = x.new_empty((n, oh, ow, c_out))                         # channels_last storage
    def gemm(cols, dst):                                          # dst = cols @ wt (+ b)
        if bias is None:
            torch.mm(cols, wt, out=dst)
        else:
            torch.addmm(bias, cols, wt, out=dst)
    if _is_pointwise(spec):
        (s1, s2) = spec.stride
        xs = xl.permute(0, 2, 3, 1)[:, :s1 * (oh - 1) + 1:s1, :s2 * (ow - 1) + 1:s2]
        gemm(xs.reshape(-1, c_in), out.view(-1, c_out))
        return out.permute(0, 3, 1, 2)                            # (N, C_out, oH, oW)
    win = _windows(xl, spec, oh, ow).permute(0, 4, 5, 2, 3, 1)   # (N, oH, oW, kH, kW, C)
    step = _chunk(n, c_in * spec.kh * spec.kw * oh * ow, x.element_size())
    for n0 in range(0, n, step):
        cols = win[n0:n0 + step].reshape(-1, wt.shape[0])         # (n*L, kH*kW*C)
        gemm(cols, out[n0:n0 + step].view(-1, c_out))
    return out.permute(0, 3, 1, 2)                                # (N, C_out, oH, oW)


def grad_weight(x, grad_out, spec, w_shape):
    x, grad_out = x.resolve_conj(), grad_out.resolve_conj()
    n, c_out, oh, ow = grad_out.shape
    if _channels_last_columns(x, spec):
        return _grad_weight_nhwc(x, grad_out, spec, w_shape)
    c_in, g = x.shape[1], spec.groups
    k, og, length = (c_in // g) * spec.kh * spec.kw, c_out // g, oh * ow
    win = _windows(x, spec, oh, ow)                               # (N, C, kH, kW, oH, oW)
    gy = grad_out.reshape(n, g, og, length)                       # (N, G, Og, L)
    gw = None
    step = _chunk(n, c_in * spec.kh * spec.kw * length, x.element_size())
    for n0 in range(0, n, step):
        nb = min(step, n - n0)
        cols = win[n0:n0 + nb].reshape(nb * g, k, length)         # as in forward (a view for 1x1)
        # one product per (sample, group), then the sum over samples: no copy of grad_out
        part = torch.bmm(gy[n0:n0 + nb].reshape(nb * g, og, length), cols.transpose(1, 2))
        part = part.view(nb, g, og, k).sum(0)                     # (G, Og, K)
        gw = part if gw is None else gw.add_(part)
    if gw is None:                                                # an empty batch
        return grad_out.new_zeros(w_shape)
    return gw.reshape(w_shape)


def _grad_weight_nhwc(x, grad_out, spec, w_shape):
    """Weight gradient from (N*L, kH*kW*C) columns: per sample ``g[n] (O, L) @ cols``."""
    n, c_out, oh, ow = grad_out.shape
    c_in, length = x.shape[1], oh * ow
    xl = x.contiguous(memory_format=torch.channels_last)
    win = _windows(xl, spec, oh, ow).permute(0, 4, 5, 2, 3, 1)   # (N, oH, oW, kH, kW, C)
    k = spec.kh * spec.kw * c_in
    gy = grad_out.reshape(n, c_out, length)
    gw = None
    step = _chunk(n, k * length, x.element_size())
    for n0 in range(0, n, step):
        nb = min(step, n - n0)
        cols = win[n0:n0 + nb].reshape(nb, length, k)             # (n, L, kH*kW*C)
        part = torch.bmm(gy[n0:n0 + nb], cols).sum(0)             # (C_out, kH*kW*C)
        gw = part if gw is None else gw.add_(part)
    if gw is None:                                                # an empty batch
        return grad_out.new_zeros(w_shape)
    return gw.view(c_out, spec.kh, spec.kw, c_in).permute(0, 3, 1, 2).contiguous()


def grad_input(grad_out, w, spec, x_shape):
    grad_out, w = grad_out.resolve_conj(), w.resolve_conj()
    n, c_in, hp, wp = x_shape
    c_out, cg, kh, kw = w.shape
    g = spec.groups
    oh, ow = grad_out.shape[-2:]
    wt = w.reshape(g, c_out // g, cg * kh * kw).transpose(1, 2)   # (G, K, Og)
    gy = grad_out.reshape(n, g, c_out // g, oh * ow)              # (N, G, Og, L)
    if _is_pointwise(spec) and spec.stride == (1, 1):
        return torch.matmul(wt, gy).view(x_shape)                 # (N, C_in, Hp, Wp)
    gx = grad_out.new_empty(tuple(x_shape))
    step = _chunk(n, c_in * kh * kw * oh * ow, grad_out.element_size())
    for n0 in range(0, n, step):
        dcols = torch.matmul(wt, gy[n0:n0 + step])                # (n, G, K, L)
        gx[n0:n0 + step] = _col2im(dcols.reshape(-1, c_in * kh * kw, oh * ow), spec,
                                   (hp, wp), (oh, ow))
    return gx


def _col2im(dcols, spec, size, out_hw):
    """Sum the column gradient ``(n, C*kH*kW, L)`` back into ``(n, C, Hp, Wp)``."""
    if _col2im_kernels.usable(dcols):
        return _col2im_kernels.fold(dcols, size, spec, out_hw)
    if not dcols.is_complex():
        return F.fold(dcols, size, (spec.kh, spec.kw), dilation=spec.dilation,
                      stride=spec.stride)
    n, ckk, _ = dcols.shape
    oh, ow = out_hw
    c = ckk // (spec.kh * spec.kw)
    d = dcols.view(n, c, spec.kh, spec.kw, oh, ow)
    gx = dcols.new_zeros((n, c) + tuple(size))
    for i in range(spec.kh):
        for j in range(spec.kw):
            rows, cols = tap_slices(spec, i, j, oh, ow)
            gx[..., rows, cols] += d[:, :, i, j]
    return gx


def workspace_bytes(spec, dtype, pass_):
    """The columns of one batch chunk (at least one sample's: C_in kH kW oH oW values),
    plus, per pass, what the chunk's product or fold allocates and the layout copies of
    the channels_last paths."""
    inp, _, out, weight = counts(spec)
    b = dtype.itemsize
    length = spec.out_h * spec.out_w
    if spec.kh == spec.kw == 1:
        per = spec.c_in * length * b                          # a strided slice, copied
        if pass_ == "forward":
            return 0 if spec.stride == (1, 1) else cols_chunk(spec.n, per, spec.n * per)
        if pass_ == "grad_input" and spec.stride == (1, 1):
            return 0
    per = spec.c_in * spec.kh * spec.kw * length * b
    cols = cols_chunk(spec.n, per, _CHUNK_BYTES)
    samples = cols // per
    stem = (spec.groups == 1 and spec.c_in <= 4 and spec.stride != (1, 1)
            and spec.kh * spec.kw >= 9)            # channels_last columns of an NCHW input
    layout = b * (inp + out) if stem else 0
    if pass_ == "forward":
        return cols + layout
    if pass_ == "grad_input":
        return cols + samples * spec.c_in * spec.h * spec.w * b
    return cols + layout + (samples + 1) * weight * b


def cost(spec, dtype, device):
    """Estimated seconds: GEMM flops plus moving the columns (forward pass)."""
    if _is_pointwise(spec):
        cols_bytes = spec.n * spec.c_in * spec.out_h * spec.out_w * 4
    else:
        cols_bytes = spec.n * spec.c_in * spec.kh * spec.kw * spec.out_h * spec.out_w * 4 * 2
    return spec.flops() / 150e9 + cols_bytes / 8e9 + 2e-5
