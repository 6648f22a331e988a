"""Argument checking and normalisation for every convolution entry point.

Every public function builds one :class:`ConvSpec` through :func:`make_spec` (or
:func:`make_transpose_spec`); nothing below the public API checks arguments again.
:func:`pad_input` is the only place where an input is padded.

Errors follow one pattern, ``"<function>: <rule>, but got <value>"``. Errors that torch
raises as ``RuntimeError`` at run time (shape and dtype mismatches) are raised as
:class:`ConvShapeError` / :class:`ConvDTypeError`, which are both a ``ValueError`` /
``TypeError`` *and* a ``RuntimeError``, so code written against torch keeps working.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from . import shapes

_VALID_PADDING_MODES = frozenset({"zeros", "reflect", "replicate", "circular", "symmetric"})
_VALID_PADDING_STRINGS = frozenset({"same", "valid"})
_FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_COMPLEX_DTYPES = frozenset({torch.complex64, torch.complex128})
#: dtypes that are computed in float32 and returned in their own dtype
_LOW_PRECISION = frozenset({torch.float16, torch.bfloat16})


class ConvShapeError(ValueError, RuntimeError):
    """A shape rule was broken (a ``ValueError`` that is also torch's ``RuntimeError``)."""


class ConvDTypeError(TypeError, RuntimeError):
    """A dtype rule was broken (a ``TypeError`` that is also torch's ``RuntimeError``)."""


@dataclass(frozen=True)
class ConvSpec:
    """The canonical, validated description of one 2D convolution.

    Spatial sizes are those of the *unpadded* input; ``padding`` is per side
    ``(top, bottom, left, right)``. Algorithms see the padded input and read only
    ``stride``, ``dilation`` and ``groups``.
    """

    func: str
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    padding_mode: str = "zeros"
    batched: bool = True

    @property
    def padded_h(self) -> int:
        return self.h + self.padding[0] + self.padding[1]

    @property
    def padded_w(self) -> int:
        return self.w + self.padding[2] + self.padding[3]

    @property
    def out_h(self) -> int:
        return shapes.output_size(self.padded_h, self.kh, self.stride[0], 0, self.dilation[0])

    @property
    def out_w(self) -> int:
        return shapes.output_size(self.padded_w, self.kw, self.stride[1], 0, self.dilation[1])

    @property
    def padded_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_in, self.padded_h, self.padded_w)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in // self.groups, self.kh, self.kw)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_out, self.out_h, self.out_w)

    @property
    def is_padded(self) -> bool:
        return any(self.padding)

    def after_padding(self) -> ConvSpec:
        """The same convolution seen from the padded input: padding applied, none left."""
        return replace(self, h=self.padded_h, w=self.padded_w, padding=(0, 0, 0, 0))

    def flops(self) -> int:
        """Real multiply-adds x 2 of the forward pass."""
        return 2 * self.n * self.c_out * self.out_h * self.out_w * (
            self.c_in // self.groups) * self.kh * self.kw


# --------------------------------------------------------------------------------------
# small normalisers
# --------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(func: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints, each >= minimum."""
    if _is_int(value):
        items = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        items = (int(value[0]), int(value[1]))
    elif isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        items = (int(value[0]), int(value[0]))
    else:
        raise TypeError(f"{func}: {name} must be an int or a pair of ints, but got {value!r}")
    if min(items) < minimum:
        rule = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{func}: {name} must be {rule}, but got {value!r}")
    return items


def _normalise_padding(func, padding, kernel, stride, dilation, size):
    """Return per-side padding (top, bottom, left, right) for any accepted form."""
    if isinstance(padding, str):
        if padding not in _VALID_PADDING_STRINGS:
            raise ValueError(
                f"{func}: padding must be an int, a pair, ((top, bottom), (left, right)), "
                f"'same' or 'valid', but got {padding!r}")
        if padding == "valid":
            return (0, 0, 0, 0)
        top, bottom = shapes.same_padding(size[0], kernel[0], stride[0], dilation[0])
        left, right = shapes.same_padding(size[1], kernel[1], stride[1], dilation[1])
        return (top, bottom, left, right)
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        (top_bottom, left_right) = padding
        top, bottom = _pair(func, "padding", top_bottom, minimum=0)
        left, right = _pair(func, "padding", left_right, minimum=0)
        if len(top_bottom) != 2 or len(left_right) != 2:
            raise TypeError(
                f"{func}: per-side padding must be ((top, bottom), (left, right)), "
                f"but got {padding!r}")
        return (top, bottom, left, right)
    if (isinstance(padding, (tuple, list)) and len(padding) == 4
            and all(_is_int(p) for p in padding)):
        raise TypeError(
            f"{func}: per-side padding is written ((top, bottom), (left, right)), "
            f"but got the flat 4-tuple {padding!r}")
    ph, pw = _pair(func, "padding", padding, minimum=0)
    return (ph, ph, pw, pw)


def _check_groups(func, groups):
    if not _is_int(groups):
        raise TypeError(f"{func}: groups must be an int, but got {groups!r}")
    if groups < 1:
        raise ValueError(f"{func}: groups must be positive, but got {groups}")
    return int(groups)


def _check_padding_mode(func, padding_mode):
    if padding_mode not in _VALID_PADDING_MODES:
        raise ValueError(
            f"{func}: padding_mode must be one of {sorted(_VALID_PADDING_MODES)}, "
            f"but got {padding_mode!r}")


def check_dtypes(func, input, weight, bias=None):
    """Both operands (and bias) share one floating-point or complex dtype."""
    if input.dtype not in _FLOAT_DTYPES | _COMPLEX_DTYPES:
        raise ConvDTypeError(
            f"{func}: input must be a floating-point or complex tensor, but got {input.dtype}")
    if weight.dtype != input.dtype:
        raise ConvDTypeError(
            f"{func}: weight must have the input's dtype ({input.dtype}), "
            f"but got {weight.dtype}")
    if bias is not None and bias.dtype != input.dtype:
        raise ConvDTypeError(
            f"{func}: bias must have the input's dtype ({input.dtype}), but got {bias.dtype}")
    if input.device != weight.device or (bias is not None and bias.device != input.device):
        devices = [str(input.device), str(weight.device)]
        if bias is not None:
            devices.append(str(bias.device))
        raise ConvShapeError(f"{func}: all tensors must be on one device, but got {devices}")


def _check_bias(func, bias, c_out):
    if bias is None:
        return
    if bias.dim() != 1 or bias.shape[0] != c_out:
        raise ConvShapeError(
            f"{func}: bias must be a 1D tensor of length out_channels ({c_out}), "
            f"but got shape {tuple(bias.shape)}")


def _check_input_dims(func, input_shape, weight_shape, weight_ndim=4):
    if len(weight_shape) != weight_ndim:
        raise ConvShapeError(
            f"{func}: weight must be 4D (out_channels, in_channels/groups, kH, kW), "
            f"but got shape {tuple(weight_shape)}")
    if len(input_shape) not in (3, 4):
        raise ConvShapeError(
            f"{func}: input must be 3D (C, H, W) or 4D (N, C, H, W), "
            f"but got shape {tuple(input_shape)}")
    if min(weight_shape[1:]) < 1:
        raise ConvShapeError(
            f"{func}: weight's in_channels/groups, kH and kW must be positive, "
            f"but got shape {tuple(weight_shape)}")
    if min(input_shape[-2:]) < 1:
        raise ConvShapeError(
            f"{func}: input height and width must be positive, "
            f"but got shape {tuple(input_shape)}")


# --------------------------------------------------------------------------------------
# the specs
# --------------------------------------------------------------------------------------

def _check_channel_groups(func, c_in, c_out, c_per_group, groups, weight_shape):
    """torch's channel rules of a convolution with ``groups`` (any dimension)."""
    if c_in % groups:
        raise ConvShapeError(
            f"{func}: in_channels ({c_in}) must be divisible by groups ({groups}), "
            f"but got in_channels={c_in}, groups={groups}")
    if c_out % groups:
        raise ConvShapeError(
            f"{func}: out_channels ({c_out}) must be divisible by groups ({groups}), "
            f"but got out_channels={c_out}, groups={groups}")
    if c_per_group * groups != c_in:
        raise ConvShapeError(
            f"{func}: weight.shape[1] * groups must equal the input's channels ({c_in}), "
            f"but got weight of shape {weight_shape} and groups={groups}")


def _check_transpose_channels(func, c_in, w_in, groups, weight_shape):
    """torch's channel rules of a transposed convolution (any dimension)."""
    if c_in % groups:
        raise ConvShapeError(
            f"{func}: in_channels ({c_in}) must be divisible by groups ({groups}), "
            f"but got in_channels={c_in}, groups={groups}")
    if w_in != c_in:
        raise ConvShapeError(
            f"{func}: weight.shape[0] must equal the input's channels ({c_in}), "
            f"but got weight of shape {weight_shape}")


def make_spec(func, input_shape, weight_shape, *, bias=None, stride=1, padding=0,
              dilation=1, groups=1, padding_mode="zeros") -> ConvSpec:
    """Validate the arguments of a forward convolution and return its :class:`ConvSpec`."""
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    _check_input_dims(func, input_shape, weight_shape)
    batched = len(input_shape) == 4
    n, c_in, h, w = input_shape if batched else (1,) + input_shape
    c_out, c_per_group, kh, kw = weight_shape
    groups = _check_groups(func, groups)
    stride = _pair(func, "stride", stride, minimum=1)
    dilation = _pair(func, "dilation", dilation, minimum=1)
    _check_padding_mode(func, padding_mode)
    _check_channel_groups(func, c_in, c_out, c_per_group, groups, weight_shape)
    pads = _normalise_padding(func, padding, (kh, kw), stride, dilation, (h, w))
    _check_bias(func, bias, c_out)
    spec = ConvSpec(func, n, c_in, h, w, c_out, kh, kw, stride, pads, dilation, groups,
                    padding_mode, batched)
    eff_kh, eff_kw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if eff_kh > spec.padded_h or eff_kw > spec.padded_w:
        raise ConvShapeError(
            f"{func}: the dilated kernel ({eff_kh}, {eff_kw}) must fit in the padded input "
            f"({spec.padded_h}, {spec.padded_w}), but got input {tuple(input_shape)}, "
            f"kernel ({kh}, {kw}), dilation {dilation}, padding {pads}")
    _check_pad_width(func, padding_mode, pads, h, w)
    return spec


def check_grad_output(spec: ConvSpec, shape) -> None:
    """A gradient of the output has exactly the output's shape (batched or not)."""
    expected = spec.output_shape if spec.batched else spec.output_shape[1:]
    if tuple(shape) != expected:
        raise ConvShapeError(
            f"{spec.func}: grad_output must have the convolution's output shape {expected}, "
            f"but got {tuple(shape)}")


def _check_pad_width(func, mode, pads, h, w):
    top, bottom, left, right = pads
    if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        raise ValueError(
            f"{func}: reflect padding must be smaller than the input size on each axis, "
            f"but got padding (top, bottom, left, right)={pads} for input size ({h}, {w})")
    if mode == "circular" and (max(top, bottom) > h or max(left, right) > w):
        raise ValueError(
            f"{func}: circular padding must not exceed the input size on each axis, "
            f"but got padding (top, bottom, left, right)={pads} for input size ({h}, {w})")


@dataclass(frozen=True)
class TransposeSpec:
    """A transposed convolution: the adjoint of ``conv`` followed by a crop.

    ``conv`` describes the forward convolution whose input has the *uncropped* output's
    size (``full_h``, ``full_w``) and whose output has the transposed input's size.
    """

    conv: ConvSpec
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    batched: bool

    @property
    def out_h(self) -> int:
        return self.conv.h + self.output_padding[0] - 2 * self.padding[0]

    @property
    def out_w(self) -> int:
        return self.conv.w + self.output_padding[1] - 2 * self.padding[1]


def make_transpose_spec(func, input_shape, weight_shape, *, bias=None, stride=1, padding=0,
                        output_padding=0, groups=1, dilation=1) -> TransposeSpec:
    """Validate the arguments of a transposed convolution (torch's rules)."""
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    _check_input_dims(func, input_shape, weight_shape)
    batched = len(input_shape) == 4
    n, c_in, h, w = input_shape if batched else (1,) + input_shape
    groups = _check_groups(func, groups)
    stride = _pair(func, "stride", stride, minimum=1)
    dilation = _pair(func, "dilation", dilation, minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"{func}: padding must be an int or a pair of ints, but got {padding!r}")
    padding = _pair(func, "padding", padding, minimum=0)
    output_padding = _pair(func, "output_padding", output_padding, minimum=0)
    for axis in (0, 1):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"{func}: output_padding must be smaller than stride or dilation, but got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    w_in, c_out_per_group, kh, kw = weight_shape
    _check_transpose_channels(func, c_in, w_in, groups, weight_shape)
    c_out = c_out_per_group * groups
    _check_bias(func, bias, c_out)
    full_h = (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1
    full_w = (w - 1) * stride[1] + dilation[1] * (kw - 1) + 1
    out_h = full_h + output_padding[0] - 2 * padding[0]
    out_w = full_w + output_padding[1] - 2 * padding[1]
    # torch: the output must be at least 1x1, except that an empty batch may give 0x0
    if min(out_h, out_w) < (0 if n == 0 else 1):
        raise ConvShapeError(
            f"{func}: the output size must be positive (zero only for an empty batch), "
            f"but got ({out_h}, {out_w}) from "
            f"input {tuple(input_shape)}, kernel ({kh}, {kw}), stride {stride}, "
            f"padding {padding}, output_padding {output_padding}, dilation {dilation}")
    # the equivalent forward convolution: input (N, C_out, full_h, full_w), weight as given
    conv = ConvSpec(func, n, c_out, full_h, full_w, c_in, kh, kw, stride, (0, 0, 0, 0),
                    dilation, groups, "zeros", batched)
    return TransposeSpec(conv, padding, output_padding, batched)


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------

def as_tensor(func, name, value, *, allow_none=False):
    """Accept a tensor or a NumPy array; return (tensor, came_from_numpy)."""
    if value is None and allow_none:
        return None, False
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind not in "biufc":
            raise TypeError(f"{func}: {name} must be a numeric array, but got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value)), True
    raise TypeError(
        f"{func}: {name} must be a torch.Tensor or numpy.ndarray, but got {type(value).__name__}")


def _index_map(size: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Source index, for each padded position, under a non-zero padding mode."""
    i = torch.arange(-before, size + after)
    if mode == "replicate":
        return i.clamp(0, size - 1)
    if mode == "circular":
        return i.remainder(size)
    if mode == "reflect":  # edge sample not repeated: period 2(size-1)
        if size == 1:
            return torch.zeros_like(i)
        period = 2 * (size - 1)
        m = i.remainder(period)
        return torch.where(m >= size, period - m, m)
    if mode == "symmetric":  # edge sample repeated (numpy.pad 'symmetric'): period 2 size
        period = 2 * size
        m = i.remainder(period)
        return torch.where(m >= size, period - 1 - m, m)
    raise ValueError(f"pad_input: unknown padding mode {mode!r}")


def pad_input(x: torch.Tensor, padding: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad the last two dimensions per side; the only place padding happens.

    Differentiable through torch autograd (padding is a gather, its gradient a scatter-add).
    """
    top, bottom, left, right = padding
    if not any(padding):
        return x
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    h, w = x.shape[-2:]
    rows = _index_map(h, top, bottom, mode).to(x.device)
    cols = _index_map(w, left, right, mode).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


# --------------------------------------------------------------------------------------
# 1D and 3D (issue 12): conv3d, conv_transpose1d, conv_transpose3d
# --------------------------------------------------------------------------------------
#
# These run on the 2D core (convforge.functional_nd), but their own arguments are checked
# here, once, with torch's rules. Where torch raises a RuntimeError for a bad value
# (non-positive stride, a tuple of the wrong length, an unknown padding string, too much
# reflect padding), these raise ConvShapeError, which is a ValueError like the 2D
# functions' errors *and* torch's RuntimeError; wrong types are TypeErrors, as in torch.

_AXES = {1: ("length",), 3: ("depth", "height", "width")}


def _ntuple(func, name, value, n, *, minimum):
    """An int or ``n`` ints (a 1-tuple is broadcast, as torch does), each >= ``minimum``."""
    if _is_int(value):
        items = (int(value),) * n
    elif isinstance(value, (tuple, list)) and value and all(_is_int(v) for v in value):
        if len(value) not in (1, n):
            raise ConvShapeError(
                f"{func}: {name} must be an int or {n} ints, but got {tuple(value)!r}")
        items = tuple(int(v) for v in value) * (n if len(value) == 1 else 1)
    else:
        what = "an int" if n == 1 else f"an int or a tuple of {n} ints"
        raise TypeError(f"{func}: {name} must be {what}, but got {value!r}")
    if min(items) < minimum:
        rule = "positive" if minimum == 1 else "non-negative"
        raise ConvShapeError(f"{func}: {name} must be {rule}, but got {value!r}")
    return items


def _check_groups_nd(func, groups):
    if not _is_int(groups):
        raise TypeError(f"{func}: groups must be an int, but got {groups!r}")
    if groups < 1:
        raise ConvShapeError(f"{func}: groups must be positive, but got {groups}")
    return int(groups)


def _check_dims_nd(func, ndim, input_shape, weight_shape, weight_names):
    if len(weight_shape) != ndim + 2:
        raise ConvShapeError(
            f"{func}: weight must be {ndim + 2}D ({weight_names}), "
            f"but got shape {tuple(weight_shape)}")
    if len(input_shape) not in (ndim + 1, ndim + 2):
        letters = {1: "L", 3: "D, H, W"}[ndim]
        raise ConvShapeError(
            f"{func}: input must be {ndim + 1}D (C, {letters}) or {ndim + 2}D "
            f"(N, C, {letters}), but got shape {tuple(input_shape)}")
    if min(weight_shape[1:], default=1) < 1:
        raise ConvShapeError(
            f"{func}: weight's sizes after the first must be positive, "
            f"but got shape {tuple(weight_shape)}")
    if min(input_shape[-ndim:]) < 1:
        raise ConvShapeError(
            f"{func}: input's {', '.join(_AXES[ndim])} must be positive, "
            f"but got shape {tuple(input_shape)}")


def _normalise_padding3d(func, padding, kernel, stride, dilation, size):
    """Per-side padding ``(front, back, top, bottom, left, right)`` for any accepted form:
    an int, a triple, per side ``((front, back), (top, bottom), (left, right))`` (2D's
    nested convention with one more pair), ``"valid"`` or ``"same"`` (also strided)."""
    if isinstance(padding, str):
        if padding not in _VALID_PADDING_STRINGS:
            raise ConvShapeError(
                f"{func}: padding must be an int, a triple, ((front, back), (top, bottom), "
                f"(left, right)), 'same' or 'valid', but got {padding!r}")
        if padding == "valid":
            return (0,) * 6
        return sum((shapes.same_padding(size[a], kernel[a], stride[a], dilation[a])
                    for a in range(3)), ())
    if (isinstance(padding, (tuple, list)) and len(padding) == 3
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = ()
        for axis, pair in zip(_AXES[3], padding, strict=True):
            if len(pair) != 2 or not all(_is_int(v) for v in pair):
                raise TypeError(
                    f"{func}: per-side padding must be ((front, back), (top, bottom), "
                    f"(left, right)) of ints, but got {padding!r} ({axis}: {pair!r})")
            pads += tuple(int(v) for v in pair)
        if min(pads) < 0:
            raise ConvShapeError(f"{func}: padding must be non-negative, but got {padding!r}")
        return pads
    if (isinstance(padding, (tuple, list)) and len(padding) == 6
            and all(_is_int(p) for p in padding)):
        raise ConvShapeError(
            f"{func}: per-side padding is written ((front, back), (top, bottom), "
            f"(left, right)), but got the flat 6-tuple {tuple(padding)!r}")
    pd, ph, pw = _ntuple(func, "padding", padding, 3, minimum=0)
    return (pd, pd, ph, ph, pw, pw)


@dataclass(frozen=True)
class ConvSpec3d:
    """The canonical, validated description of one 3D convolution (:func:`make_spec3d`).

    Sizes are those of the unpadded input; ``padding`` is per side
    ``(front, back, top, bottom, left, right)``.
    """

    func: str
    n: int
    c_in: int
    d: int
    h: int
    w: int
    c_out: int
    kd: int
    kh: int
    kw: int
    stride: tuple[int, int, int]
    padding: tuple[int, int, int, int, int, int]
    dilation: tuple[int, int, int]
    groups: int
    padding_mode: str = "zeros"
    batched: bool = True

    @property
    def padded(self) -> tuple[int, int, int]:
        p = self.padding
        return (self.d + p[0] + p[1], self.h + p[2] + p[3], self.w + p[4] + p[5])

    @property
    def kernel(self) -> tuple[int, int, int]:
        return (self.kd, self.kh, self.kw)

    @property
    def out(self) -> tuple[int, int, int]:
        """``(oD, oH, oW)``."""
        return tuple(shapes.output_size(n, k, s, 0, d) for n, k, s, d in
                     zip(self.padded, self.kernel, self.stride, self.dilation, strict=True))

    @property
    def weight_shape(self) -> tuple[int, int, int, int, int]:
        return (self.c_out, self.c_in // self.groups, self.kd, self.kh, self.kw)

    @property
    def output_shape(self) -> tuple[int, int, int, int, int]:
        return (self.n, self.c_out, *self.out)

    @property
    def plane_padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The height/width padding in conv2d's per-side form ``((top, bottom), (left,
        right))``."""
        p = self.padding
        return ((p[2], p[3]), (p[4], p[5]))

    def flops(self) -> int:
        """Real multiply-adds x 2 of the forward pass."""
        od, oh, ow = self.out
        return 2 * self.n * self.c_out * od * oh * ow * (self.c_in // self.groups) * (
            self.kd * self.kh * self.kw)


def make_spec3d(func, input_shape, weight_shape, *, bias=None, stride=1, padding=0,
                dilation=1, groups=1, padding_mode="zeros") -> ConvSpec3d:
    """Validate the arguments of a 3D convolution (torch's ``F.conv3d`` rules, plus
    per-side padding, strided ``"same"`` and the padding modes) and return its spec.

    Example:
        >>> make_spec3d("conv3d", (2, 4, 8, 9, 10), (6, 2, 3, 3, 3), groups=2,
        ...             padding="same", stride=2).out
        (4, 5, 5)
    """
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    _check_dims_nd(func, 3, input_shape, weight_shape,
                   "out_channels, in_channels/groups, kD, kH, kW")
    batched = len(input_shape) == 5
    n, c_in, d, h, w = input_shape if batched else (1,) + input_shape
    c_out, c_per_group, kd, kh, kw = weight_shape
    groups = _check_groups_nd(func, groups)
    stride = _ntuple(func, "stride", stride, 3, minimum=1)
    dilation = _ntuple(func, "dilation", dilation, 3, minimum=1)
    _check_padding_mode(func, padding_mode)
    _check_channel_groups(func, c_in, c_out, c_per_group, groups, weight_shape)
    kernel, size = (kd, kh, kw), (d, h, w)
    pads = _normalise_padding3d(func, padding, kernel, stride, dilation, size)
    _check_bias(func, bias, c_out)
    spec = ConvSpec3d(func, n, c_in, d, h, w, c_out, kd, kh, kw, stride, pads, dilation,
                      groups, padding_mode, batched)
    eff = tuple(dl * (k - 1) + 1 for k, dl in zip(kernel, dilation, strict=True))
    if any(e > p for e, p in zip(eff, spec.padded, strict=True)):
        raise ConvShapeError(
            f"{func}: the dilated kernel {eff} must fit in the padded input {spec.padded}, "
            f"but got input {input_shape}, kernel {kernel}, dilation {dilation}, "
            f"padding {pads}")
    for axis, (before, after), n_axis in zip(_AXES[3], (pads[0:2], pads[2:4], pads[4:6]),
                                             size, strict=True):
        if padding_mode == "reflect" and max(before, after) >= n_axis:
            raise ConvShapeError(
                f"{func}: reflect padding must be smaller than the input size on each axis, "
                f"but got padding {pads} for input size {size} ({axis})")
        if padding_mode == "circular" and max(before, after) > n_axis:
            raise ConvShapeError(
                f"{func}: circular padding must not exceed the input size on each axis, "
                f"but got padding {pads} for input size {size} ({axis})")
    return spec


@dataclass(frozen=True)
class TransposeSpecNd:
    """A validated 1D or 3D transposed convolution (:func:`make_transpose_spec_nd`):
    sizes per axis, ``padding`` cropped from both sides, ``output_padding`` at the end."""

    func: str
    n: int
    c_in: int
    size: tuple[int, ...]
    c_out: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    batched: bool = True

    @property
    def out(self) -> tuple[int, ...]:
        """The output size per axis (torch's formula)."""
        return tuple(shapes.transpose_output_size(*a) for a in zip(
            self.size, self.kernel, self.stride, self.padding, self.output_padding,
            self.dilation, strict=True))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n, self.c_out, *self.out)


def make_transpose_spec_nd(func, ndim, input_shape, weight_shape, *, bias=None, stride=1,
                           padding=0, output_padding=0, groups=1,
                           dilation=1) -> TransposeSpecNd:
    """Validate the arguments of a 1D (``ndim=1``) or 3D transposed convolution with
    torch's rules (``padding`` is an int or one int per axis, as in torch).

    Example:
        >>> make_transpose_spec_nd("conv_transpose3d", 3, (1, 4, 3, 4, 5), (4, 2, 3, 3, 3),
        ...                        stride=2, padding=1, output_padding=1).out
        (6, 8, 10)
    """
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    letters = {1: "k", 3: "kD, kH, kW"}[ndim]
    _check_dims_nd(func, ndim, input_shape, weight_shape,
                   f"in_channels, out_channels/groups, {letters}")
    batched = len(input_shape) == ndim + 2
    n, c_in, *size = input_shape if batched else (1,) + input_shape
    groups = _check_groups_nd(func, groups)
    stride = _ntuple(func, "stride", stride, ndim, minimum=1)
    dilation = _ntuple(func, "dilation", dilation, ndim, minimum=1)
    if isinstance(padding, str):
        raise TypeError(f"{func}: padding must be an int or {ndim} ints (a transposed "
                        f"convolution has no padding strings, as in torch), but got {padding!r}")
    padding = _ntuple(func, "padding", padding, ndim, minimum=0)
    output_padding = _ntuple(func, "output_padding", output_padding, ndim, minimum=0)
    for axis in range(ndim):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ConvShapeError(
                f"{func}: output_padding must be smaller than stride or dilation, but got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    w_in, c_out_per_group, *kernel = weight_shape
    _check_transpose_channels(func, c_in, w_in, groups, weight_shape)
    c_out = c_out_per_group * groups
    _check_bias(func, bias, c_out)
    spec = TransposeSpecNd(func, n, c_in, tuple(size), c_out, tuple(kernel), stride, padding,
                           output_padding, dilation, groups, batched)
    if min(spec.out) < (0 if n == 0 else 1):
        raise ConvShapeError(
            f"{func}: the output size must be positive (zero only for an empty batch), "
            f"but got {spec.out} from input {input_shape}, kernel {tuple(kernel)}, stride "
            f"{stride}, padding {padding}, output_padding {output_padding}, "
            f"dilation {dilation}")
    return spec


def depth_index_map(size: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Source index of each padded position on one more axis (the depth of a 3D input),
    with :func:`pad_input`'s semantics for every padding mode but ``"zeros"``."""
    return _index_map(size, before, after, mode)
