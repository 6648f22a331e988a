"""Plans: everything about a call that does not depend on the values, worked out once.

A :class:`ConvPlan` (called as ``plan.run(x, w, b)``) holds a checked
:class:`~convforge.spec.ConvSpec`, the algorithm of each pass (``dispatch.choose_plan``),
the compute dtype and how the input is padded. It is built on the first call of a
configuration (every argument check of :mod:`convforge.spec` runs then, and every error
is raised then) and kept: a later call with the same shapes, dtypes, device, layout,
arguments, gradient needs and torch thread count is a dictionary lookup and the
computation itself. ``convforge.conv2d`` keeps plans in one table keyed by
the whole call; a layer (``convforge.nn.Conv2d``) keeps its own, keyed by its input only.

When torch's kernels run every pass a call needs, the plan calls ``F.conv2d`` directly
(``native``): torch's own autograd and fused backward, as ``torch.nn.Conv2d`` would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _compile, backends, workspace
from .autograd import conv_forward, forward_values
from .dispatch import _needed, resolve
from .spec import _LOW_PRECISION, check_dtypes, make_spec, pad_input

_MAX_PLANS = 1024


def compute_dtype(dtype):
    """float16/bfloat16 are computed in float32; every other dtype in itself."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def grad_flags(x, w) -> tuple[bool, bool]:
    """(input gradient needed, weight gradient needed) for a call made now."""
    if not torch.is_grad_enabled():
        return (False, False)
    return (x.requires_grad, w.requires_grad)


_any_autocast = torch._C._is_any_autocast_enabled       # the quick test (torch >= 2.5)


def autocast_dtype(x):
    """The dtype autocast runs a convolution of ``x`` in (torch puts convolutions in its
    lower-precision list), or None when autocast is off for ``x``'s device."""
    if not isinstance(x, torch.Tensor) or not _any_autocast():
        return None
    device_type = x.device.type
    return (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
            else None)


def autocast_cast(dtype, *tensors):
    """As autocast casts an op's inputs: floating tensors other than float64 to ``dtype``
    (differentiably: the float32 parameters get float32 gradients)."""
    return tuple(t.to(dtype) if t is not None and t.is_floating_point()
                 and t.dtype != torch.float64 else t for t in tensors)


def global_state() -> tuple:
    """What besides a call's own arguments decides its plan: part of every plan cache key
    (the functions' and the layers'), so that changing any of it re-plans."""
    return (backends.benchmark, backends.forced_token(), torch.get_num_threads(),
            _compile.generation, backends.background_compile, workspace.get_workspace_limit())


def is_channels_last(x) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


class ConvPlan:
    """One checked configuration of a 2D convolution and the algorithms of its passes."""

    __slots__ = ("spec", "passes", "aspec", "ct", "native", "pad_first", "padding_mode",
                 "grads", "run")

    def __init__(self, func, x, w, b, stride, padding, dilation, groups, padding_mode,
                 algorithm, measure=None):
        check_dtypes(func, x, w, b)
        spec = make_spec(func, x.shape, w.shape, bias=b, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, padding_mode=padding_mode)
        self.spec, self.ct, self.padding_mode = spec, compute_dtype(x.dtype), padding_mode
        self.grads = grads = grad_flags(x, w)
        self.passes = resolve(func, algorithm, spec, self.ct, x.device, grads=grads,
                              measure=measure, channels_last=is_channels_last(x))
        passes = _needed(grads)
        needed = [getattr(self.passes, p) for p in passes]
        first = self.passes.forward
        self.native = first.native if all(a is first for a in needed) else None
        if self.native is not None and not workspace.untiled(first, spec, self.ct, passes):
            self.native = None                # torch's kernels too, tiled under the limit
        fused = (self.passes.fused_zero_padding if self.native is None
                 else first.fused_zero_padding)
        # non-zero padding modes get a padded input; so do algorithms that do not pad
        # zeros, unless the padded copy would not fit the workspace limit (then each pass
        # pads its tiles: convforge.workspace)
        self.pad_first = spec.is_padded and not (fused and padding_mode == "zeros")
        if self.pad_first and padding_mode == "zeros" and not workspace.pad_first_fits(
                self.passes, spec, self.ct, passes):
            self.pad_first = False
        self.aspec = spec.after_padding() if self.pad_first else spec
        self.run = self._general
        top, bottom, left, right = self.aspec.padding
        if (self.native is not None and first.name == "torch" and self.ct == x.dtype
                and not self.pad_first and top == bottom and left == right):
            # torch's layer, as torch.nn.Conv2d would call it (unbatched inputs included)
            self.run = _native_call(spec.stride, (top, left), spec.dilation, spec.groups)

    @property
    def label(self) -> str:
        """The algorithm of each pass, as ``Passes.label`` (``"torch"``, ``"torch/depthwise/
        depthwise"``)."""
        return self.passes.label

    def _general(self, x, w, b):
        """``run(x, w, b)``: the convolution of ``x`` (of the plan's configuration) with
        ``w`` and bias ``b``; for torch's kernels on their own, ``F.conv2d`` itself. The
        output's memory layout is torch's: channels_last for a channels_last input,
        NCHW-contiguous otherwise, whatever layout the algorithm computes in."""
        ct, dtype = self.ct, x.dtype
        fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        if not self.spec.batched:
            x = x.unsqueeze(0)
        if dtype != ct:
            x, w = x.to(ct), w.to(ct)
            b = None if b is None else b.to(ct)
        if self.pad_first:
            x = pad_input(x, self.spec.padding, self.padding_mode)  # (N, C_in, Hp, Wp)
        if self.native is not None:
            out = self.native(x, w, b, self.aspec)
        elif self.grads != (False, False) or (b is not None and b.requires_grad
                                              and torch.is_grad_enabled()):
            out = conv_forward(x, w, self.aspec, self.passes, b)  # (N, C_out, oH, oW)
        else:                               # nothing to differentiate: no autograd node
            out = forward_values(x, w, b, self.aspec, self.passes)
        if dtype != ct:
            out = out.to(dtype)
        out = out.contiguous(memory_format=fmt)          # no copy when already so laid out
        return out if self.spec.batched else out.squeeze(0)


def _native_call(stride, padding, dilation, groups):
    """``F.conv2d`` with the arguments passed by position, as ``torch.nn.Conv2d`` passes
    them (keyword arguments cost torch's argument parser a few microseconds more)."""
    def run(x, w, b, _conv=F.conv2d):
        return _conv(x, w, b, stride, padding, dilation, groups)
    return run


_PLANS: dict = {}


def _descr(t):
    return None if t is None else (t.shape, t.dtype, t.device)


def conv_plan(func, x, w, b, stride, padding, dilation, groups, padding_mode, algorithm,
              measure=None):
    """The cached plan of a ``conv2d`` call (built, and checked, on first use)."""
    grads = grad_flags(x, w)
    try:
        key = (func, x.shape, x.dtype, x.device, is_channels_last(x), w.shape, w.dtype,
               w.device, _descr(b), stride, padding, dilation, groups, padding_mode,
               algorithm, grads, measure, global_state())
        plan = _PLANS.get(key)
    except TypeError:               # an unhashable argument (a list): no caching
        key = plan = None
    if plan is None:
        plan = ConvPlan(func, x, w, b, stride, padding, dilation, groups, padding_mode,
                        algorithm, measure)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def clear_plans() -> None:
    """Forget every cached plan of the functions (layers keep their own until changed)."""
    _PLANS.clear()
