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
    if c_in % groups:
        raise ConvShapeError(
            f"{func}: in_channels ({c_in}) must be divisible by groups ({groups}), "
            f"but got in_channels={c_in}, groups={groups}")
    if w_in != c_in:
        raise ConvShapeError(
            f"{func}: weight.shape[0] must equal the input's channels ({c_in}), "
            f"but got weight of shape {weight_shape}")
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
