"""Layers: drop-ins for torch's ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``, and the book's.

The drop-ins have torch's parameter names,
attributes and shapes, torch's
initialisation (Kaiming-uniform with ``a = sqrt(5)``, bias uniform in
``+-1/sqrt(fan_in)``, drawn in the same order, so a seeded layer holds the very numbers
torch's would), torch's ``extra_repr`` and ``state_dict`` keys. They add what torch lacks:
``padding="same"`` with stride, per-side padding ``((top, bottom), (left, right))``, the
``"symmetric"`` padding mode and ``algorithm=``. :class:`Corr2d` is the chapter's own layer.

Argument rules live in :mod:`convforge.spec`; the constructors validate by building a spec
for a dummy input large enough for the kernel, so every rule and message is the functional
API's.

A :class:`Conv2d` keeps the checked plan of each input configuration it has seen (shape,
dtype, device, layout, gradient needs; :mod:`convforge.plan`): a later call with the same
input is one dictionary lookup and the computation. Setting any of its arguments
(``stride``, ``padding``, ``algorithm``...) forgets the plans.

:func:`convert` turns the torch convolutions of a model into these layers in place (the
same parameter tensors, buffers and hooks) and :func:`revert` turns them back.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import init

from . import functional, functional_nd, ops
from .algorithms import REGISTRY
from .plan import ConvPlan, autocast_cast, autocast_dtype, global_state
from .spec import (
    _is_int,
    _ntuple,
    _pair,
    make_spec,
    make_spec3d,
    make_transpose_spec,
    make_transpose_spec_nd,
)

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d", "Corr2d", "convert", "revert"]

#: attributes whose change makes a layer's cached plans stale
_CONFIG = frozenset({"in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode", "algorithm", "measure",
                     "output_padding"})


def _check_channels(func, in_channels, out_channels, groups):
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not _is_int(value):
            raise TypeError(f"{func}: {name} must be an int, but got {value!r}")
        if value < 1:
            raise ValueError(f"{func}: {name} must be positive, but got {value}")
    if _is_int(groups) and groups >= 1 and out_channels % groups:
        raise ValueError(
            f"{func}: out_channels ({out_channels}) must be divisible by groups ({groups}), "
            f"but got out_channels={out_channels}, groups={groups}")


def _check_algorithm(func, algorithm):
    if algorithm != "auto" and algorithm not in REGISTRY:
        raise ValueError(
            f"{func}: algorithm must be 'auto' or one of {sorted(REGISTRY)}, "
            f"but got {algorithm!r}")


def _stored_padding(padding):
    """Padding as torch stores it: a string, a pair, or (ours) per-side pairs."""
    if isinstance(padding, str):
        return padding
    if _is_int(padding):
        return (int(padding), int(padding))
    if isinstance(padding, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in padding):
        return tuple(tuple(int(v) for v in p) for p in padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        return (int(padding[0]), int(padding[0]))
    return tuple(int(p) for p in padding)


def _dummy_size(kernel, dilation, padding):
    """A spatial size that fits the dilated kernel and any padding (for validation)."""
    flat = [0]
    if not isinstance(padding, str):
        stack = [padding]
        while stack:
            item = stack.pop()
            if isinstance(item, (tuple, list)):
                stack.extend(item)
            elif _is_int(item):
                flat.append(int(item))
    return max(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)) + 2 * max(flat) + 1


class _ConvBase(nn.Module):
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in _CONFIG:
            self.__dict__["_plans"] = {}

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else \
            self.__dict__.copy()
        state = dict(state)
        state["_plans"] = {}                 # plans hold the process's algorithm choices
        return state

    def _init_parameters(self, shape, bias, factory):
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: Kaiming-uniform (a = sqrt(5)); bias in +-1/sqrt(fan_in)."""
        with torch.no_grad():
            init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.algorithm != "auto":
            s += f", algorithm={self.algorithm}"
        return s


class Conv2d(_ConvBase):
    """A drop-in for ``torch.nn.Conv2d`` computed by :func:`convforge.conv2d`.

    Args:
        in_channels, out_channels: channel counts, positive.
        kernel_size, stride, dilation: int or pair.
        padding: int, pair, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``
            (also with stride: output ``ceil(H / stride)``).
        groups: blocked connections; divides both channel counts.
        bias: learn an additive bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` or
            ``"symmetric"``.
        device, dtype: of the parameters.
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms`.
        measure: with ``"auto"``, time the candidate algorithms once per input
            configuration (True), trust the cost model (False), or follow
            ``convforge.backends.benchmark`` (None).

    Shape:
        ``(N, C_in, H, W) -> (N, C_out, oH, oW)`` with
        ``oH = floor((H + top + bottom - dH (kH - 1) - 1) / sH) + 1``.

    Raises:
        TypeError, ValueError: invalid arguments, with the functional API's messages.

    Example:
        >>> layer = Conv2d(3, 8, 3, stride=2, padding="same")
        >>> layer(torch.randn(2, 3, 9, 9)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None, *, algorithm="auto", measure=None):
        super().__init__()
        func = type(self).__name__
        _check_channels(func, in_channels, out_channels, groups)
        kernel_size = _pair(func, "kernel_size", kernel_size, minimum=1)
        stride = _pair(func, "stride", stride, minimum=1)
        dilation = _pair(func, "dilation", dilation, minimum=1)
        _check_algorithm(func, algorithm)
        size = _dummy_size(kernel_size, dilation, padding)
        cpg = in_channels // groups if _is_int(groups) and groups >= 1 else in_channels
        make_spec(func, (1, in_channels, size, size), (out_channels, cpg, *kernel_size),
                  stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = _stored_padding(padding)
        self.groups, self.padding_mode, self.algorithm = groups, padding_mode, algorithm
        self.measure = measure
        self.transposed, self.output_padding = False, (0, 0)
        self._init_parameters((out_channels, in_channels // groups, *kernel_size), bias,
                              {"device": device, "dtype": dtype})

    def _conv_forward(self, input, weight, bias):
        if not isinstance(input, torch.Tensor):       # NumPy: the functional path
            return functional.conv2d(input, weight, bias, self.stride, self.padding,
                                     self.dilation, self.groups,
                                     padding_mode=self.padding_mode, algorithm=self.algorithm)
        if ops.tracing(input, weight, bias):     # torch.compile / export / func: the operator
            return ops.traced_conv2d(input, weight, bias, self.stride, self.padding,
                                     self.dilation, self.groups, self.padding_mode,
                                     self.algorithm)
        low = autocast_dtype(input)
        if low is not None:               # as torch's layer: computed in the autocast dtype
            input, weight, bias = autocast_cast(low, input, weight, bias)
            with torch.autocast(input.device.type, enabled=False):
                return self._conv_forward(input, weight, bias)
        grad = torch.is_grad_enabled()
        key = (input.shape, input.dtype, input.device, input.is_contiguous(), weight.shape,
               weight.dtype, bias is None, grad and input.requires_grad,
               grad and weight.requires_grad, global_state())
        plan = self._plans.get(key)
        if plan is None:
            plan = ConvPlan(type(self).__name__, input, weight, bias, self.stride,
                            self.padding, self.dilation, self.groups, self.padding_mode,
                            self.algorithm, self.measure)
            if len(self._plans) >= 64:
                self._plans.clear()
            self._plans[key] = plan
        return plan.run(input, weight, bias)

    def forward(self, input):
        """Convolve ``input`` ``(N, C_in, H, W)`` or ``(C_in, H, W)``."""
        return self._conv_forward(input, self.weight, self.bias)

    def plans(self) -> dict:
        """The algorithms this layer has planned so far: ``{(input shape, (input grad,
        weight grad)): label}``, the label as :attr:`convforge.plan.ConvPlan.label`
        (``"torch"``, or ``"torch/depthwise/depthwise"`` for forward/grad_input/grad_weight).

        Example:
            >>> layer = Conv2d(4, 4, 3, groups=4, algorithm="depthwise")
            >>> _ = layer(torch.randn(1, 4, 8, 8))
            >>> layer.plans()
            {((1, 4, 8, 8), (False, True)): 'depthwise'}
        """
        return {(tuple(k[0]), (k[7], k[8])): p.label for k, p in self._plans.items()}


class Conv1d(_ConvBase):
    """A drop-in for ``torch.nn.Conv1d`` computed by :func:`convforge.conv1d`.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as torch
            (ints or 1-tuples; stored as 1-tuples, as torch stores them).
        padding: int, ``(left, right)``, ``"valid"`` or ``"same"`` (also with stride).
        padding_mode, device, dtype, algorithm, measure: as :class:`Conv2d`.

    Shape:
        ``(N, C_in, L) -> (N, C_out, oL)`` with ``oL = floor((L + left + right -
        d (k - 1) - 1) / s) + 1``.

    Example:
        >>> Conv1d(2, 4, 3, padding="same")(torch.randn(5, 2, 10)).shape
        torch.Size([5, 4, 10])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None, *, algorithm="auto", measure=None):
        super().__init__()
        func = type(self).__name__
        _check_channels(func, in_channels, out_channels, groups)
        _check_algorithm(func, algorithm)
        single = [(name, _pair(func, name, value, minimum=m)[0]) for name, value, m in
                  (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                   ("dilation", dilation, 1))]
        (_, k), (_, st), (_, d) = single
        if isinstance(padding, str) or _is_int(padding):
            stored = padding if isinstance(padding, str) else (int(padding),)
        else:
            stored = tuple(int(p) for p in padding)
        cpg = in_channels // groups if _is_int(groups) and groups >= 1 else in_channels
        size = d * (k - 1) + 1 + 2 * max([0] + [p for p in stored if _is_int(p)]) + 1
        functional.conv1d(torch.zeros(1, in_channels, size), torch.zeros(out_channels, cpg, k),
                          stride=st, padding=stored, dilation=d, groups=groups,
                          padding_mode=padding_mode, algorithm="reference")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = (k,), (st,), (d,)
        self.padding, self.groups, self.padding_mode = stored, groups, padding_mode
        self.algorithm, self.measure = algorithm, measure
        self.transposed, self.output_padding = False, (0,)
        self._init_parameters((out_channels, in_channels // groups, k), bias,
                              {"device": device, "dtype": dtype})

    def forward(self, input):
        """Convolve ``input`` ``(N, C_in, L)`` or ``(C_in, L)``."""
        return functional.conv1d(input, self.weight, self.bias, self.stride, self.padding,
                                 self.dilation, self.groups, padding_mode=self.padding_mode,
                                 algorithm=self.algorithm, measure=self.measure)


class ConvTranspose2d(_ConvBase):
    """A drop-in for ``torch.nn.ConvTranspose2d`` computed by :func:`convforge.conv_transpose2d`.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as torch.
        padding: int or pair (cropped from each side of the full output).
        output_padding: int or pair, extra rows/columns at the bottom/right; smaller than
            stride or dilation.
        padding_mode: only ``"zeros"`` (as torch).
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms`.

    Shape:
        weight ``(C_in, C_out / groups, kH, kW)``;
        ``oH = (H - 1) sH - 2 pH + dH (kH - 1) + output_padding + 1``.

    Raises:
        TypeError, ValueError: invalid arguments; ``forward`` raises ValueError for an
        ``output_size`` no output_padding can reach.

    Example:
        >>> up = ConvTranspose2d(4, 2, 3, stride=2, padding=1)
        >>> up(torch.randn(1, 4, 5, 5), output_size=(10, 10)).shape
        torch.Size([1, 2, 10, 10])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None, *, algorithm="auto"):
        super().__init__()
        func = type(self).__name__
        _check_channels(func, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(
                f"{func}: padding_mode must be 'zeros' (as in torch), but got {padding_mode!r}")
        kernel_size = _pair(func, "kernel_size", kernel_size, minimum=1)
        _check_algorithm(func, algorithm)
        size = 1
        if not isinstance(padding, str):  # a string is refused by make_transpose_spec
            size = 2 * max(_pair(func, "padding", padding, minimum=0)) + 1
        cpg = out_channels // groups if _is_int(groups) and groups >= 1 else out_channels
        ts = make_transpose_spec(func, (1, in_channels, size, size),
                                 (in_channels, cpg, *kernel_size), stride=stride,
                                 padding=padding, output_padding=output_padding,
                                 groups=groups, dilation=dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, ts.conv.stride, ts.conv.dilation
        self.padding, self.output_padding = ts.padding, ts.output_padding
        self.groups, self.padding_mode, self.algorithm = groups, padding_mode, algorithm
        self.transposed = True
        self._init_parameters((in_channels, out_channels // groups, *kernel_size), bias,
                              {"device": device, "dtype": dtype})

    def _output_padding(self, input, output_size):
        """output_padding that makes the output ``output_size`` (torch's rule)."""
        if output_size is None:
            return self.output_padding
        output_size = [int(s) for s in output_size]
        lead = input.dim() - 2
        if len(output_size) == lead + 2:
            output_size = output_size[lead:]
        if len(output_size) != 2:
            raise ValueError(
                f"ConvTranspose2d: for {input.dim()}D input, output_size must have 2 or "
                f"{lead + 2} elements, but got {len(output_size)}")
        mins = [(input.shape[lead + a] - 1) * self.stride[a] - 2 * self.padding[a]
                + self.dilation[a] * (self.kernel_size[a] - 1) + 1 for a in (0, 1)]
        maxs = [mins[a] + self.stride[a] - 1 for a in (0, 1)]
        for a in (0, 1):
            if not mins[a] <= output_size[a] <= maxs[a]:
                raise ValueError(
                    f"ConvTranspose2d: requested an output size of {output_size}, but valid "
                    f"sizes range from {mins} to {maxs} (for an input of "
                    f"{tuple(input.shape[lead:])})")
        return tuple(output_size[a] - mins[a] for a in (0, 1))

    def forward(self, input, output_size=None):
        """Transposed convolution of ``input``; ``output_size`` picks the output_padding."""
        output_padding = self._output_padding(input, output_size)
        return functional.conv_transpose2d(input, self.weight, self.bias, self.stride,
                                           self.padding, output_padding, self.groups,
                                           self.dilation, algorithm=self.algorithm)


def _output_padding_nd(func, input, output_size, layer):
    """output_padding that makes a transposed layer's output ``output_size`` (torch's rule)."""
    nd = len(layer.kernel_size)
    if output_size is None:
        return layer.output_padding
    output_size = [int(s) for s in output_size]
    lead = input.dim() - nd
    if len(output_size) == lead + nd:
        output_size = output_size[lead:]
    if len(output_size) != nd:
        raise ValueError(
            f"{func}: for {input.dim()}D input, output_size must have {nd} or "
            f"{lead + nd} elements, but got {len(output_size)}")
    mins = [(input.shape[lead + a] - 1) * layer.stride[a] - 2 * layer.padding[a]
            + layer.dilation[a] * (layer.kernel_size[a] - 1) + 1 for a in range(nd)]
    maxs = [mins[a] + layer.stride[a] - 1 for a in range(nd)]
    for a in range(nd):
        if not mins[a] <= output_size[a] <= maxs[a]:
            raise ValueError(
                f"{func}: requested an output size of {output_size}, but valid sizes range "
                f"from {mins} to {maxs} (for an input of {tuple(input.shape[lead:])})")
    return tuple(output_size[a] - mins[a] for a in range(nd))


class Conv3d(_ConvBase):
    """A drop-in for ``torch.nn.Conv3d`` computed by :func:`convforge.conv3d`.

    Args:
        in_channels, out_channels, groups, bias, device, dtype: as torch.
        kernel_size, stride, dilation: int or triple.
        padding: int, triple, ``((front, back), (top, bottom), (left, right))``,
            ``"valid"`` or ``"same"`` (also with stride: output ``ceil(D / sD)``...).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` or
            ``"symmetric"``.
        algorithm, measure: as :class:`Conv2d` (for the 2D convolution of each depth tap).

    Shape:
        ``(N, C_in, D, H, W) -> (N, C_out, oD, oH, oW)``, each axis as in :class:`Conv2d`.

    Example:
        >>> Conv3d(2, 4, 3, stride=2, padding="same")(torch.randn(1, 2, 5, 6, 7)).shape
        torch.Size([1, 4, 3, 3, 4])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None, *, algorithm="auto", measure=None):
        super().__init__()
        func = type(self).__name__
        _check_channels(func, in_channels, out_channels, groups)
        kernel_size = _ntuple(func, "kernel_size", kernel_size, 3, minimum=1)
        stride = _ntuple(func, "stride", stride, 3, minimum=1)
        dilation = _ntuple(func, "dilation", dilation, 3, minimum=1)
        _check_algorithm(func, algorithm)
        size = _dummy_size(kernel_size, dilation, padding)
        cpg = in_channels // groups if _is_int(groups) and groups >= 1 else in_channels
        make_spec3d(func, (1, in_channels, size, size, size),
                    (out_channels, cpg, *kernel_size), stride=stride, padding=padding,
                    dilation=dilation, groups=groups, padding_mode=padding_mode)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        if isinstance(padding, str):
            self.padding = padding
        elif _is_int(padding) or all(_is_int(p) for p in padding):
            self.padding = _ntuple(func, "padding", padding, 3, minimum=0)
        else:
            self.padding = tuple(tuple(int(v) for v in p) for p in padding)
        self.groups, self.padding_mode, self.algorithm = groups, padding_mode, algorithm
        self.measure = measure
        self.transposed, self.output_padding = False, (0, 0, 0)
        self._init_parameters((out_channels, in_channels // groups, *kernel_size), bias,
                              {"device": device, "dtype": dtype})

    def forward(self, input):
        """Convolve ``input`` ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)``."""
        return functional_nd.conv3d(input, self.weight, self.bias, self.stride, self.padding,
                                    self.dilation, self.groups,
                                    padding_mode=self.padding_mode, algorithm=self.algorithm,
                                    measure=self.measure)


class _ConvTransposeNd(_ConvBase):
    _ndim = 0
    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None, *, algorithm="auto"):
        super().__init__()
        func, nd = type(self).__name__, self._ndim
        _check_channels(func, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(
                f"{func}: padding_mode must be 'zeros' (as in torch), but got {padding_mode!r}")
        kernel_size = _ntuple(func, "kernel_size", kernel_size, nd, minimum=1)
        _check_algorithm(func, algorithm)
        size = 1
        if not isinstance(padding, str):     # a string is refused by the spec
            size = 2 * max(_ntuple(func, "padding", padding, nd, minimum=0)) + 1
        cpg = out_channels // groups if _is_int(groups) and groups >= 1 else out_channels
        ts = make_transpose_spec_nd(func, nd, (1, in_channels) + (size,) * nd,
                                    (in_channels, cpg, *kernel_size), stride=stride,
                                    padding=padding, output_padding=output_padding,
                                    groups=groups, dilation=dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, ts.stride, ts.dilation
        self.padding, self.output_padding = ts.padding, ts.output_padding
        self.groups, self.padding_mode, self.algorithm = groups, padding_mode, algorithm
        self.transposed = True
        self._init_parameters((in_channels, out_channels // groups, *kernel_size), bias,
                              {"device": device, "dtype": dtype})

    def forward(self, input, output_size=None):
        """Transposed convolution of ``input``; ``output_size`` picks the output_padding."""
        output_padding = _output_padding_nd(type(self).__name__, input, output_size, self)
        return type(self)._function(input, self.weight, self.bias, self.stride, self.padding,
                                    output_padding, self.groups, self.dilation,
                                    algorithm=self.algorithm)


class ConvTranspose1d(_ConvTransposeNd):
    """A drop-in for ``torch.nn.ConvTranspose1d`` computed by
    :func:`convforge.conv_transpose1d` (arguments as :class:`ConvTranspose2d`, one axis).

    Example:
        >>> ConvTranspose1d(2, 3, 4, stride=2, padding=1)(torch.randn(1, 2, 5)).shape
        torch.Size([1, 3, 10])
    """

    _ndim = 1
    _function = staticmethod(functional_nd.conv_transpose1d)


class ConvTranspose3d(_ConvTransposeNd):
    """A drop-in for ``torch.nn.ConvTranspose3d`` computed by
    :func:`convforge.conv_transpose3d` (arguments as :class:`ConvTranspose2d`, three axes).

    Example:
        >>> ConvTranspose3d(2, 3, 2, stride=2)(torch.randn(1, 2, 2, 3, 4)).shape
        torch.Size([1, 3, 4, 6, 8])
    """

    _ndim = 3
    _function = staticmethod(functional_nd.conv_transpose3d)


class Corr2d(nn.Module):
    """The chapter's ``Conv2D`` layer: one 2D kernel and a scalar bias, on a 2D image.

    Args:
        kernel_size: int or ``(kH, kW)``.
        bias: learn a scalar bias (shape ``(1,)`` as in the book).
        device, dtype: of the parameters.

    Shape:
        ``(H, W) -> (H - kH + 1, W - kW + 1)``.

    Raises:
        ValueError: in ``forward``, for an input that is not 2D (use :class:`Conv2d` for
        ``(N, C, H, W)`` batches).

    Example:
        >>> layer = Corr2d((1, 2))
        >>> layer(torch.ones(6, 8)).shape
        torch.Size([6, 7])
    """

    def __init__(self, kernel_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.kernel_size = _pair("Corr2d", "kernel_size", kernel_size, minimum=1)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.rand(self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.zeros(1, **factory))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        """Cross-correlate the 2D image ``x`` with the kernel and add the bias."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(
                f"Corr2d: input must be a 2D (height, width) tensor, but got shape {shape}; "
                f"Corr2d is the book's single-image layer, for (N, C, H, W) batches use "
                f"convforge.nn.Conv2d (or reshape the image to 2D)")
        y = functional.corr2d(x, self.weight)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, bias={self.bias is not None}"


from ._convert import convert, revert  # noqa: E402  (they map torch's classes to these)
