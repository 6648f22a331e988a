"""Images and volumes larger than memory: :func:`convforge.filter2d` and
:func:`convforge.conv2d` on ``dask.array`` inputs (``pip install convforge[dask]``).

The result is a lazy dask array. Each output chunk is computed by convforge's own
in-memory function on one *region* of the input: the chunk's rows and columns plus exactly
the kernel's reach (``d (k - 1)`` with the anchor's or the padding's split, stride
included), read from the input extended by the border rule. The extension is built once,
lazily, from index maps (the same maps the in-memory padding uses), so every border mode is
exact at the image's edges however small the image or its chunks are; a region that spans
several input chunks (chunks smaller than the halo) merges them. The result therefore equals
the in-memory result, chunk edges included, up to the floating-point summation order of the
algorithm chosen per region.

Output chunks: those of the input along the spatial axes (for ``conv2d`` with a stride,
the input's chunk boundaries divided by the stride), one chunk along the channel axis
(the input's channel chunks are merged: every output channel reads all input channels of
its group), and the input's chunks along the batch axis.

Everything the dask graph holds is plain NumPy and picklable, so the arrays compute on the
threaded or process scheduler or on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import numpy as np
import torch

_EXTRA = "pip install convforge[dask]"


def is_dask(x) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (without importing dask)."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "dask") and hasattr(x, "chunks")


def require_dask(func):
    """``dask.array``, or an ImportError naming the extra."""
    try:
        import dask.array as da
    except ImportError:
        raise ImportError(f"{func}: dask arrays need dask: {_EXTRA}") from None
    return da


def _extend(da, x, axis, before, after, mode):
    """``x`` extended along ``axis`` by ``before`` / ``after`` samples under ``mode``
    (``zeros`` or a padding mode of :func:`convforge.spec.pad_input`)."""
    if before == 0 and after == 0:
        return x
    n = x.shape[axis]
    if mode == "zeros":
        width = [(0, 0)] * x.ndim
        width[axis] = (before, after)
        return da.pad(x, width, mode="constant")
    from .spec import _index_map

    idx = _index_map(n, before, after, mode).numpy()
    parts = []
    index = [slice(None)] * x.ndim
    if before:
        index[axis] = idx[:before]
        parts.append(x[tuple(index)])
    parts.append(x)
    if after:
        index[axis] = idx[before + n:]
        parts.append(x[tuple(index)])
    return da.concatenate(parts, axis=axis)


def _out_bounds(chunks, size_out, stride):
    """Output chunk boundaries: the input's chunk boundaries divided by the stride."""
    edges, total = [0], 0
    for c in chunks:
        total += c
        edges.append(min(size_out, -(-total // stride)))
    edges[-1] = size_out
    edges = sorted(set(edges))
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _regions(da, ext, axes, bounds, strides, reach, func, chunks_of, dtype):
    """Assemble the output from one task per (row band, column band): ``func`` on the
    extended input's region of each output chunk."""
    (ah, aw), (rows, cols), (sh, sw), (eh, ew) = axes, bounds, strides, reach
    row_parts = []
    for r0, r1 in rows:
        col_parts = []
        for c0, c1 in cols:
            index = [slice(None)] * ext.ndim
            index[ah] = slice(r0 * sh, (r1 - 1) * sh + eh)
            index[aw] = slice(c0 * sw, (c1 - 1) * sw + ew)
            region = ext[tuple(index)].rechunk({ah: -1, aw: -1})
            out_chunks = chunks_of(region, r1 - r0, c1 - c0)
            col_parts.append(region.map_blocks(func, chunks=out_chunks, dtype=dtype,
                                               meta=np.empty((0,) * ext.ndim, dtype)))
        row_parts.append(da.concatenate(col_parts, axis=aw))
    return da.concatenate(row_parts, axis=ah)


# ---------------------------------------------------------------------------- filter2d

class _FilterRegion:
    """The in-memory filter2d's valid windows of one region (picklable): its dtype rules,
    no border (the region carries its halo)."""

    def __init__(self, kernel, layout, options):
        self.kernel, self.layout, self.options = kernel, layout, options

    def __call__(self, block):
        from .filters import _filter

        out = _filter("filter2d", block, self.kernel, None, self.options["output"],
                      self.layout, None, self.options["dtype"], self.options["algorithm"])
        return np.ascontiguousarray(out)


_SPATIAL = {"HW": (0, 1), "HWC": (0, 1), "CHW": (1, 2), "NCHW": (2, 3)}
_CHANNEL = {"HW": None, "HWC": 2, "CHW": 0, "NCHW": 1}


class FilterSetup:
    """What a chunked filter2d needs, checked and derived once from the image's shape and
    dtype (the in-memory function's own checks and messages): the layout and its axes, the
    kernel as float64 (C, kH, kW), the halo per side, the border's padding mode, the result
    dtype and the per-region function."""

    def __init__(self, func, shape, dtype_in, kernel, border, output, layout, anchor, dtype,
                 algorithm):
        from . import filters

        if border not in filters.BORDERS:
            raise ValueError(f"{func}: border must be one of {list(filters.BORDERS)}, but got "
                             f"{border!r}")
        if output not in ("float", "same"):
            raise ValueError(f"{func}: output must be 'float' or 'same', but got {output!r}")
        if np.dtype(dtype_in).kind not in "uif":
            raise TypeError(f"{func}: image must be a numeric array, but got dtype {dtype_in}")
        self.layout = lay = filters.resolve_layout(tuple(shape), layout, func)
        self.ah, self.aw = ah, aw = _SPATIAL[lay]
        self.ch = ch = _CHANNEL[lay]
        h, w = shape[ah], shape[aw]
        k = filters._kernel_tensor(func, kernel, 1 if ch is None else shape[ch])
        self.kh, self.kw = kh, kw = k.shape[1:]
        (top, bottom), (left, right) = filters._padding(func, (kh, kw), anchor, border, h, w)
        self.pads = (top, bottom, left, right)
        self.mode = "zeros" if border in ("zeros", "constant") else border
        kernel_np = np.ascontiguousarray(k.to(torch.float64).numpy())          # (C, kH, kW)
        # the result dtype, as the in-memory function gives it (probed on a 1x1 image)
        probe = np.zeros([1 if a in (ah, aw) else s for a, s in enumerate(shape)], dtype_in)
        self.out_dtype = filters.filter2d(probe, kernel_np, border="zeros", output=output,
                                          layout=lay, anchor=(top, left), dtype=dtype).dtype
        options = dict(output=output, dtype=dtype, algorithm=algorithm)
        self.region = _FilterRegion(kernel_np, lay, options)


def filter2d(image, kernel, *, border="reflect", output="float", layout="auto", anchor=None,
             dtype=None, algorithm="auto"):
    """:func:`convforge.filter2d` of a dask array: a lazy dask array with the image's
    chunks (the channel axis in one chunk), each chunk computed from its region plus the
    kernel's reach under ``border``."""
    da = require_dask("filter2d")
    s = FilterSetup("filter2d", image.shape, image.dtype, kernel, border, output, layout,
                    anchor, dtype, algorithm)
    ah, aw, (top, bottom, left, right) = s.ah, s.aw, s.pads
    h, w = image.shape[ah], image.shape[aw]
    x = image if s.ch is None else image.rechunk({s.ch: -1})
    ext = _extend(da, _extend(da, x, ah, top, bottom, s.mode), aw, left, right, s.mode)
    bounds = (_out_bounds(x.chunks[ah], h, 1), _out_bounds(x.chunks[aw], w, 1))

    def chunks_of(region, rows, cols):
        return tuple((rows,) if a == ah else (cols,) if a == aw else region.chunks[a]
                     for a in range(region.ndim))

    return _regions(da, ext, (ah, aw), bounds, (1, 1), (s.kh, s.kw), s.region, chunks_of,
                    s.out_dtype)


# ------------------------------------------------------------------------------ conv2d

class _ConvRegion:
    """The in-memory valid conv2d of one region (picklable)."""

    def __init__(self, weight, bias, stride, dilation, groups, algorithm):
        self.weight, self.bias, self.stride = weight, bias, stride
        self.dilation, self.groups, self.algorithm = dilation, groups, algorithm

    def __call__(self, block):
        from .functional import conv2d

        out = conv2d(np.ascontiguousarray(block), self.weight, self.bias, self.stride, 0,
                     self.dilation, self.groups, algorithm=self.algorithm)
        return np.ascontiguousarray(out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto"):
    """:func:`convforge.conv2d` of an ``(N, C, H, W)`` or ``(C, H, W)`` dask array with a
    tensor (or NumPy) weight: a lazy dask array, chunked as the input along the batch and
    (divided by the stride) the spatial axes, one chunk along the channels."""
    from .spec import make_spec

    func = "conv2d"
    da = require_dask(func)
    if np.dtype(input.dtype) not in (np.float32, np.float64):
        raise TypeError(f"{func}: a dask input must be float32 or float64, but got "
                        f"{input.dtype}")
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    b = None if bias is None else (bias.detach().cpu().numpy() if isinstance(bias, torch.Tensor)
                                   else np.asarray(bias))
    w = w.astype(input.dtype)
    b = None if b is None else b.astype(input.dtype)
    spec = make_spec(func, tuple(input.shape), w.shape,
                     bias=None if b is None else torch.from_numpy(b), stride=stride,
                     padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode)
    batched = input.ndim == 4
    ah, aw, ch = (2, 3, 1) if batched else (1, 2, 0)
    top, bottom, left, right = spec.padding
    x = input.rechunk({ch: -1})
    ext = _extend(da, _extend(da, x, ah, top, bottom, padding_mode), aw, left, right,
                  padding_mode)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    reach = (dh * (spec.kh - 1) + 1, dw * (spec.kw - 1) + 1)
    bounds = (_out_bounds(x.chunks[ah], spec.out_h, sh), _out_bounds(x.chunks[aw],
                                                                      spec.out_w, sw))
    fn = _ConvRegion(w, b, spec.stride, spec.dilation, spec.groups, algorithm)

    def chunks_of(region, rows, cols):
        return tuple((rows,) if a == ah else (cols,) if a == aw else
                     (spec.c_out,) if a == ch else region.chunks[a] for a in range(region.ndim))

    return _regions(da, ext, (ah, aw), bounds, (sh, sw), reach, fn, chunks_of,
                    np.dtype(input.dtype))
