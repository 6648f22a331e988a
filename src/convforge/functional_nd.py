"""``conv3d``, ``conv_transpose3d`` and ``conv_transpose1d`` on the 2D core.

There is no 3D algorithm here: a 3D cross-correlation is a sum over the depth taps of 2D
ones,

    out[:, :, od] = sum_k conv2d(x[:, :, od*sD + k*dD - front], w[:, :, k])

where ``conv2d`` gets the height/width stride, padding, dilation, groups, padding mode and
algorithm, and does what it does for 2D: checks, plans, tiles under the workspace limit,
chooses an algorithm per pass and differentiates (its three autograd Functions, so
gradients of every order come from the 2D core).

**Batching the depth taps.** The input is copied once into *depth-major* order, ``(N, C,
D, H, W) -> (D, N, C, H, W)`` (with stride ``sD > 1``: one block per phase ``d mod sD``).
For tap ``k`` the input depths that the output depths ``od`` read, ``od*sD + k*dD -
front``, are then one contiguous range of one block: it is reshaped, without a copy, into a
batch of ``m*N`` planes ``(m*N, C, H, W)`` and convolved by *one* ``conv2d`` call, whose
``(m*N, C_out, oH, oW)`` result is added into the output depths ``[lo, lo + m)`` of a
depth-major output ``(oD, N, C_out, oH, oW)``. Zero depth padding costs nothing: the taps
that would read the padding are skipped (each tap's range is cut to the input); other
padding modes gather the depth-padded copy in the same single copy (``pad_input``'s index
maps: reflect, replicate, circular, symmetric), and the height/width padding of every mode
is ``conv2d``'s.

**Costs.** Besides the 2D convolutions (``kD`` calls, on batches of up to ``oD*N`` planes):
one copy of the input into depth-major order (two for non-zero padding modes with a
depth stride that does not divide the padded depth), ``kD - 1`` additions of an
output-sized slab, and one copy of the output back to ``(N, C_out, oD, oH, oW)``. For a
non-zero height/width padding mode ``conv2d`` pads each tap's slab (one copy of the slab per
tap). The backward pass mirrors this: the 2D gradients of each tap, plus the adds of the
slabs' input gradients into one depth-major buffer and one copy back. The relayouts are
autograd Functions whose backward is the inverse relayout, so each pass makes its layout
copy once rather than once per tap.

``conv_transpose3d`` is the same sum read backwards: tap ``k`` of input depth ``id``
lands on output depth ``id*sD + k*dD - padD``, so each tap is one
:func:`convforge.conv_transpose2d` call on a batch of input depths whose results are added
into one phase (``o mod sD``) of a phase-blocked output. ``conv_transpose1d`` is a
height-1 :func:`convforge.conv_transpose2d`, as :func:`convforge.conv1d` is a height-1
``conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _compile, functional, ops
from .algorithms import REGISTRY, _depthwise3d
from .functional import _prepare
from .plan import autocast_cast, autocast_dtype, compute_dtype
from .spec import (
    depth_index_map,
    make_spec3d,
    make_transpose_spec_nd,
)

__all__ = ["conv3d", "conv_transpose1d", "conv_transpose3d"]


def _check_algorithm(func, algorithm):
    if not isinstance(algorithm, str):
        raise TypeError(f"{func}: algorithm must be a string, but got {algorithm!r}")
    if algorithm != "auto" and algorithm not in REGISTRY:
        raise ValueError(f"{func}: algorithm must be 'auto' or one of {sorted(REGISTRY)}, "
                         f"but got {algorithm!r}")


def _renamed(func, inner, exc):
    """``exc`` raised by the 2D function ``inner``, as raised by ``func`` (same type)."""
    msg = str(exc)
    if msg.startswith(f"{inner}: "):
        msg = f"{func}: {msg[len(inner) + 2:]}"
    try:
        return type(exc)(msg)
    except TypeError:                         # an exception type with another signature
        return exc


def _autocast(x, fn, *args):
    """Under torch.autocast: cast as torch casts a convolution's operands, then run ``fn``
    with autocast off (the 2D calls inside then compute in that dtype). None otherwise."""
    low = autocast_dtype(x)
    if low is None or not isinstance(args[0], torch.Tensor):
        return None
    cast = autocast_cast(low, x, *args[:2])
    with torch.autocast(x.device.type, enabled=False):
        return fn(*cast, *args[2:])


class _Permute(torch.autograd.Function):
    """``x.permute(dims).contiguous()`` whose gradient is contiguous in ``x``'s order: the
    per-tap gradient slabs are then views, and the relayout is copied once per pass."""

    generate_vmap_rule = True                # torch.func transforms compose with it

    @staticmethod
    def forward(x, dims):
        return x.permute(dims).contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dims = inputs[1]

    @staticmethod
    def backward(ctx, g):
        inverse = tuple(sorted(range(len(ctx.dims)), key=ctx.dims.__getitem__))
        return _Permute.apply(g, inverse), None


class _Slabs(torch.autograd.Function):
    """The slabs ``x[a:b]`` of one tensor for several ranges (views); the backward adds their
    gradients into one zero buffer (instead of one input-sized buffer per slab)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, ranges):
        return tuple(x[a:b] for a, b in ranges)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ranges = inputs
        ctx.ranges, ctx.shape = ranges, x.shape

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for (a, b), g in zip(ctx.ranges, grads, strict=True):
            if g is None:
                continue
            if out is None:
                out = g.new_zeros(ctx.shape)
            out[a:b] += g
        return out, None


def _depth_major(x, spec):
    """``x`` ``(N, C, D, H, W)`` as ``(sD * Q, N, C, H, W)``: block ``p`` (rows ``p*Q`` to
    ``p*Q + Q``) holds the depth-padded input's depths ``p, p + sD, ...``; the depth
    padding is applied here for non-zero modes (the returned offset is then 0)."""
    sd = spec.stride[0]
    front, back = spec.padding[0], spec.padding[1]
    if spec.padding_mode != "zeros" and (front or back):
        idx = depth_index_map(spec.d, front, back, spec.padding_mode).to(x.device)
        x = x.index_select(2, idx)                          # (N, C, Dp, H, W)
        front = 0
    depth = x.shape[2]
    q = -(-depth // sd)
    if sd == 1:
        return _Permute.apply(x, (2, 0, 1, 3, 4)), front, q
    if q * sd != depth:
        x = F.pad(x, (0, 0, 0, 0, 0, q * sd - depth))        # never read: rows past Dp
    n, c, _, h, w = x.shape
    x = x.reshape(n, c, q, sd, h, w)
    return _Permute.apply(x, (3, 2, 0, 1, 4, 5)).reshape(sd * q, n, c, h, w), front, q


def _volume_path(spec, x, w, b, algorithm):
    """Whether the call runs on the depthwise 3D loops (:mod:`._depthwise3d`) rather than
    per depth tap: explicitly (``algorithm="depthwise"``) or under "auto" once their
    kernels are compiled (queued for the background thread otherwise); never inside a
    trace (the per-tap path goes through convforge's operators there)."""
    if algorithm not in ("auto", "depthwise") or ops.tracing(x, w, b):
        return False
    if _depthwise3d.applies(spec, x, w) is not None:
        return False
    return algorithm == "depthwise" or bool(_compile.available(["depthwise"], x.dtype,
                                                               ["depthwise"]))


def _torch_path(spec, x, algorithm):
    """Whether "auto" hands a dense or grouped 3D convolution to torch's ``F.conv3d``: its
    kernels beat the per-depth-tap path there (8 ms against 14 ms forward for 4 x 16 x
    24^3 -> 32 channels, 3x3x3, measured), while on depthwise layers, whose backward pass
    torch computes slowly, the per-tap path runs on convforge's depthwise loops."""
    return (algorithm == "auto" and spec.groups != spec.c_in
            and x.dtype in (torch.float32, torch.float64)
            and (spec.padding_mode == "zeros" or not any(spec.padding)))


def _torch_conv3d(x, w, b, spec):
    """``F.conv3d`` for a zero-padded spec (per-side padding as an explicit ``F.pad``)."""
    f, bk, t, bt, lf, r = spec.padding
    kw = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
    if (f, t, lf) == (bk, bt, r):
        return F.conv3d(x, w, b, padding=(f, t, lf), **kw)
    return F.conv3d(F.pad(x, (lf, r, t, bt, f, bk)), w, b, **kw)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", measure=None):
    """3D cross-correlation with torch's ``F.conv3d`` semantics, on the 2D core.

    Args:
        input: ``(N, C_in, D, H, W)`` or unbatched ``(C_in, D, H, W)``; tensor or NumPy.
        weight: ``(C_out, C_in / groups, kD, kH, kW)``.
        bias: optional ``(C_out,)``.
        stride, dilation: int or ``(sD, sH, sW)``; positive.
        padding: int, ``(pD, pH, pW)``, per side ``((front, back), (top, bottom), (left,
            right))``, ``"valid"`` or ``"same"`` (also with stride: output ``ceil(D /
            sD)`` etc., the odd extra sample at the back/bottom/right).
        groups: blocked connections from input to output channels.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` or
            ``"symmetric"``, on all three axes.
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms`, for the 2D
            convolution of every depth tap (each must support that 2D sub-problem).
        measure: as :func:`convforge.conv2d`'s, for each tap's 2D call.

    Returns:
        ``(N, C_out, oD, oH, oW)`` (or unbatched), same dtype and kind as ``input``.

    Shape:
        ``oD = floor((D + front + back - dD (kD - 1) - 1) / sD) + 1``, likewise oH, oW.

    How: one ``conv2d`` per depth tap on a batch of depth slices (module docstring: one
    depth-major copy of the input, ``kD - 1`` output-sized adds, one output copy); a
    depthwise layer with stride 1 and zero padding (``C_out = C_in = groups``) runs on
    compiled 3D loops instead (:mod:`convforge.algorithms._depthwise3d`), with
    ``algorithm="depthwise"`` or "auto"; "auto" runs dense and grouped (not depthwise)
    layers with zero padding on torch's ``F.conv3d``, faster there. An explicit
    ``algorithm`` names the 2D algorithm of every depth tap.

    Example:
        >>> conv3d(torch.ones(1, 1, 3, 3, 3), torch.ones(1, 1, 2, 2, 2)).shape
        torch.Size([1, 1, 2, 2, 2])
    """
    func = "conv3d"
    out = _autocast(input, lambda x, w, b: conv3d(
        x, w, b, stride, padding, dilation, groups, padding_mode=padding_mode,
        algorithm=algorithm, measure=measure), weight, bias)
    if out is not None:
        return out
    x, w, b, from_numpy = _prepare(func, input, weight, bias)
    spec = make_spec3d(func, x.shape, w.shape, bias=b, stride=stride, padding=padding,
                       dilation=dilation, groups=groups, padding_mode=padding_mode)
    _check_algorithm(func, algorithm)
    dtype, ct = x.dtype, compute_dtype(x.dtype)
    x, w = x.to(ct), w.to(ct)
    b = None if b is None else b.to(ct)
    xb = x if spec.batched else x.unsqueeze(0)
    if _volume_path(spec, xb, w, b, algorithm):
        return _done(_depthwise3d.conv3d(xb, w, b, spec), dtype, spec.batched, from_numpy)
    if _torch_path(spec, xb, algorithm):
        return _done(_torch_conv3d(xb, w, b, spec), dtype, spec.batched, from_numpy)
    n, od, (oh, ow) = spec.n, spec.out[0], spec.out[1:]
    sd, dd = spec.stride[0], spec.dilation[0]
    xd, front, q = _depth_major(xb, spec)                     # (sD * Q, N, C, H, W)
    depth = spec.d if spec.padding_mode == "zeros" else spec.padded[0]
    # (k, first output depth, count, first input row): output depth o reads input depth
    # o sD + k dD - front
    taps = _depth_taps(spec.kd, dd, front, sd, od, depth, q)
    plane = dict(stride=spec.stride[1:], padding=spec.plane_padding,
                 dilation=spec.dilation[1:], groups=spec.groups, padding_mode=padding_mode,
                 algorithm=algorithm, measure=measure)
    slabs = _Slabs.apply(xd, tuple((r, r + m) for _, _, m, r in taps))
    # the first tap that covers every output depth starts the sum (and adds the bias)
    full = next((i for i, (_, lo, m, _) in enumerate(taps) if lo == 0 and m == od), None)
    order = ([full] if full is not None else []) + [i for i in range(len(taps)) if i != full]
    acc = None
    if full is None:
        acc = xd.new_zeros((od, n, spec.c_out, oh, ow))
        if b is not None:
            acc = acc + b.view(1, 1, -1, 1, 1)
    for i in order:
        k, lo, m, _ = taps[i]
        planes = slabs[i].reshape(m * n, spec.c_in, *slabs[i].shape[3:])
        y = _conv2d(func, planes, w[:, :, k], b if i == full else None, plane)
        y = y.reshape(m, n, spec.c_out, oh, ow)
        if acc is None:
            # the sum is made in place: a view returned by the 2D autograd Functions may
            # not be modified in place, so it starts from a copy when taps follow
            acc = y.clone() if len(taps) > 1 else y
        else:
            acc[lo:lo + m] += y
    out = _Permute.apply(acc, (1, 2, 0, 3, 4))                # (N, C_out, oD, oH, oW)
    return _done(out, dtype, spec.batched, from_numpy)


def _depth_taps(kd, dilation, offset, stride, span, reach, q):
    """The depth taps of a 3D (transposed) convolution as ranges of 2D batches: for tap
    ``k``, the indices ``j`` in ``[0, span)`` whose partner ``j stride + k dilation -
    offset`` lies in ``[0, reach)`` are one range ``[lo, lo + m)``; their partners are
    rows ``r, r + 1, ...`` of a phase-blocked layout (phase ``p mod stride`` first, ``q``
    rows per phase). Returns ``[(k, lo, m, r)]``; one empty tap when none reaches (it
    keeps the output differentiable in both operands)."""
    taps = []
    for k in range(kd):
        start = k * dilation - offset        # the partner of index 0 for tap k
        lo = max(0, -(start // stride))
        hi = min(span, (reach - 1 - start) // stride + 1)
        if hi > lo:
            p = lo * stride + start
            taps.append((k, lo, hi - lo, (p % stride) * q + p // stride))
    return taps or [(0, 0, 0, 0)]


def _done(out, dtype, batched, from_numpy):
    """A result in the input's dtype, unbatched and NumPy as the input was."""
    out = out.to(dtype)
    if not batched:
        out = out.squeeze(0)
    return out.detach().numpy() if from_numpy else out


def _conv2d(func, x, w, b, kw):
    """One tap: ``convforge.conv2d``'s own path (its plan cache), its errors named ``func``."""
    return functional._conv(func, x, w, b, kw["stride"], kw["padding"], kw["dilation"],
                            kw["groups"], kw["padding_mode"], kw["algorithm"], kw["measure"])


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto"):
    """Transposed 3D convolution with torch's ``F.conv_transpose3d`` semantics.

    The adjoint (input gradient) of :func:`conv3d` with the same weight, stride, dilation
    and groups, cropped by ``padding`` on each side and extended by ``output_padding`` at
    the back/bottom/right; computed as one :func:`convforge.conv_transpose2d` per depth
    tap on a batch of input depth slices, each added into the output depths it reaches.

    Args:
        input: ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)``.
        weight: ``(C_in, C_out / groups, kD, kH, kW)``.
        stride, padding, output_padding, dilation: int or triple (``padding`` >= 0, no
            strings, as in torch); ``output_padding`` smaller than stride or dilation.
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms` for each tap's
            2D transposed convolution.

    Returns:
        ``(N, C_out, oD, oH, oW)`` with ``oD = (D - 1) sD - 2 pD + dD (kD - 1) +
        output_padding + 1``.

    Costs: one depth-major copy of the input, ``kD`` 2D transposed convolutions, ``kD``
    output-sized adds, one copy of the output back to ``(N, C_out, oD, oH, oW)``.

    Example:
        >>> conv_transpose3d(torch.ones(1, 2, 2, 2, 2), torch.ones(2, 1, 2, 2, 2),
        ...                  stride=2).shape
        torch.Size([1, 1, 4, 4, 4])
    """
    func = "conv_transpose3d"
    out = _autocast(input, lambda x, w, b: conv_transpose3d(
        x, w, b, stride, padding, output_padding, groups, dilation, algorithm=algorithm),
        weight, bias)
    if out is not None:
        return out
    x, w, b, from_numpy = _prepare(func, input, weight, bias)
    ts = make_transpose_spec_nd(func, 3, x.shape, w.shape, bias=b, stride=stride,
                                padding=padding, output_padding=output_padding,
                                groups=groups, dilation=dilation)
    _check_algorithm(func, algorithm)
    dtype, ct = x.dtype, compute_dtype(x.dtype)
    x, w = x.to(ct), w.to(ct)
    b = None if b is None else b.to(ct)
    xb = x if ts.batched else x.unsqueeze(0)
    n, (d, h, wd), (od, oh, ow) = ts.n, ts.size, ts.out
    sd, pd, dd = ts.stride[0], ts.padding[0], ts.dilation[0]
    q = -(-od // sd)                          # output depths per phase o mod sD
    xd = _Permute.apply(xb, (2, 0, 1, 3, 4))                  # (D, N, C_in, H, W)
    # (k, first input depth, count, first output row in the phase blocks): input depth i
    # lands on output depth i sD + k dD - pD
    taps = _depth_taps(ts.kernel[0], dd, pd, sd, d, od, q)
    slabs = _Slabs.apply(xd, tuple((lo, lo + m) for _, lo, m, _ in taps))
    shape = (sd * q, n, ts.c_out, oh, ow)                     # phase blocks of output rows
    acc = xd.new_zeros(shape)
    if b is not None:
        acc = acc + b.view(1, 1, -1, 1, 1)
    for (k, _, m, r), slab in zip(taps, slabs, strict=True):
        planes = slab.reshape(m * n, ts.c_in, h, wd)
        try:
            y = functional.conv_transpose2d(
                planes, w[:, :, k], None, ts.stride[1:], ts.padding[1:],
                ts.output_padding[1:], groups, ts.dilation[1:], algorithm=algorithm)
        except (TypeError, ValueError, MemoryError) as e:
            raise _renamed(func, "conv_transpose2d", e) from None
        acc[r:r + m] += y.reshape(m, n, ts.c_out, oh, ow)
    if sd == 1:
        out = _Permute.apply(acc, (1, 2, 0, 3, 4))             # (N, C_out, oD, oH, oW)
    else:
        acc = acc.view(sd, q, n, ts.c_out, oh, ow)
        out = _Permute.apply(acc, (2, 3, 1, 0, 4, 5)).reshape(n, ts.c_out, q * sd, oh, ow)
        if q * sd != od:
            out = out[:, :, :od].contiguous()
    return _done(out, dtype, ts.batched, from_numpy)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto"):
    """Transposed 1D convolution with torch's ``F.conv_transpose1d`` semantics: a
    height-1 :func:`convforge.conv_transpose2d`.

    Args:
        input: ``(N, C_in, L)`` or ``(C_in, L)``.
        weight: ``(C_in, C_out / groups, k)``.
        stride, padding, output_padding, dilation: ints (or 1-tuples).
        algorithm: as :func:`convforge.conv_transpose2d`'s.

    Returns:
        ``(N, C_out, oL)`` with ``oL = (L - 1) s - 2 p + d (k - 1) + output_padding + 1``.

    Example:
        >>> conv_transpose1d(torch.ones(1, 1, 3), torch.ones(1, 1, 2), stride=2)
        tensor([[[1., 1., 1., 1., 1., 1.]]])
    """
    func = "conv_transpose1d"
    x, w, b, from_numpy = _prepare(func, input, weight, bias)
    ts = make_transpose_spec_nd(func, 1, x.shape, w.shape, bias=b, stride=stride,
                                padding=padding, output_padding=output_padding,
                                groups=groups, dilation=dilation)
    _check_algorithm(func, algorithm)
    try:
        y = functional.conv_transpose2d(
            x.unsqueeze(-2), w.unsqueeze(-2), b, (1,) + ts.stride, (0,) + ts.padding,
            (0,) + ts.output_padding, groups, (1,) + ts.dilation, algorithm=algorithm)
    except (TypeError, ValueError, MemoryError) as e:
        raise _renamed(func, "conv_transpose2d", e) from None
    y = y.squeeze(-2)                                          # (N, C_out, oL)
    return y.detach().numpy() if from_numpy else y
