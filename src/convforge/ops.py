"""convforge's convolution as torch custom operators, for torch.compile, torch.export and
torch.func.

Three operators (``torch.ops.convforge.*``) carry the three passes of
:mod:`convforge.autograd` (forward F, input gradient Gi, weight gradient Gw) on the
unpadded input with per-side zero padding ``[top, bottom, left, right]``:

    conv2d(x, w, b, stride, padding, dilation, groups, algorithm)            F(x, w) + b
    conv2d_grad_input(g, w, x_shape, stride, padding, dilation, groups, algorithm)     Gi
    conv2d_grad_weight(x, g, w_shape, stride, padding, dilation, groups, algorithm)    Gw

Each has a fake implementation (shapes, dtype and layout for tracing) and a vmap rule
(the vmapped dimension folded into the batch where the pass allows it, one call per
vmapped slice otherwise); three autograd Functions (new style, so torch.func composes with
them) differentiate each pass with the others, as :mod:`convforge.autograd` does, so
double backward works in compiled graphs and under torch.func too. The algorithm is
a string argument: a name, or ``"auto"``, which the operator resolves when it runs
(graphs hold no Python state of convforge's).

Eager calls do not go through these operators (a custom operator costs tens of
microseconds of dispatch per call); :func:`convforge.functional.conv2d` and the layers
use them when :func:`tracing` says a tracer or transform is looking: ``torch.compile``
(dynamo), ``torch.export``, ``torch.func`` transforms, or tensor subclasses (fake and
functional tensors). Padding modes other than zeros are applied as torch ops before.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from .plan import autocast_cast, autocast_dtype, is_channels_last
from .spec import make_spec

_NS = "convforge"


_INSIDE = threading.local()


@contextlib.contextmanager
def _implementing():
    """An operator's implementation runs: its tensors are plain ones, and convforge's
    eager path (no autograd: the operator's own formula differentiates) computes them."""
    _INSIDE.depth = getattr(_INSIDE, "depth", 0) + 1
    try:
        with torch.no_grad():
            yield
    finally:
        _INSIDE.depth -= 1


_PLAIN = frozenset({torch.Tensor, torch.nn.Parameter})
_is_compiling, _is_exporting = torch.compiler.is_compiling, torch.compiler.is_exporting
_transforms_active = torch._C._are_functorch_transforms_active


def tracing(x, w, b=None) -> bool:
    """Whether a call is being traced or transformed (and must use the operators): under
    torch.compile or torch.export, inside torch.func transforms, or with tensor subclasses
    (fake, functional tensors). About 0.2 us per eager call."""
    if (type(x) in _PLAIN and type(w) in _PLAIN and (b is None or type(b) in _PLAIN)
            and not _transforms_active()):
        return _is_compiling() or (_is_exporting() and not getattr(_INSIDE, "depth", 0))
    return not getattr(_INSIDE, "depth", 0)


def _pairs(padding):
    top, bottom, left, right = padding
    return ((top, bottom), (left, right))


def _spec(x_shape, w_shape, stride, padding, dilation, groups):
    return make_spec("conv2d", tuple(x_shape), tuple(w_shape), stride=tuple(stride),
                     padding=_pairs(padding), dilation=tuple(dilation), groups=groups)


def _like(shape, x):
    """An empty tensor of ``shape`` laid out as convforge lays out an output for ``x``."""
    out = x.new_empty(shape)
    if len(shape) == 4 and is_channels_last(x):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _conj(t):
    return t.conj() if t.is_complex() else t


# ---------------------------------------------------------------------------------------
# the operators

@torch.library.custom_op(f"{_NS}::conv2d", mutates_args=())
def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: list[int],
           padding: list[int], dilation: list[int], groups: int,
           algorithm: str) -> torch.Tensor:
    """F(x, w) + b with zero padding ``[top, bottom, left, right]``."""
    from .functional import _conv

    with _implementing():
        return _conv("conv2d", x, w, b, tuple(stride), _pairs(padding), tuple(dilation),
                     groups, "zeros", algorithm, None)


@conv2d.register_fake
def _(x, w, b, stride, padding, dilation, groups, algorithm):
    spec = _spec(x.shape, w.shape, stride, padding, dilation, groups)
    shape = (spec.c_out, spec.out_h, spec.out_w)
    return _like((x.shape[0], *shape) if x.dim() == 4 else shape, x)


@torch.library.custom_op(f"{_NS}::conv2d_grad_input", mutates_args=())
def conv2d_grad_input(g: torch.Tensor, w: torch.Tensor, x_shape: list[int],
                      stride: list[int], padding: list[int], dilation: list[int],
                      groups: int, algorithm: str) -> torch.Tensor:
    """Gi(g, w): the gradient of the unpadded input ``x_shape``."""
    from .functional import conv2d_input

    with _implementing():
        return conv2d_input(tuple(x_shape), w, g, tuple(stride), _pairs(padding),
                            tuple(dilation), groups, algorithm=algorithm).contiguous()


@conv2d_grad_input.register_fake
def _(g, w, x_shape, stride, padding, dilation, groups, algorithm):
    return g.new_empty(tuple(x_shape))


@torch.library.custom_op(f"{_NS}::conv2d_grad_weight", mutates_args=())
def conv2d_grad_weight(x: torch.Tensor, g: torch.Tensor, w_shape: list[int],
                       stride: list[int], padding: list[int], dilation: list[int],
                       groups: int, algorithm: str) -> torch.Tensor:
    """Gw(x, g): the weight gradient, of shape ``w_shape``."""
    from .functional import conv2d_weight

    with _implementing():
        return conv2d_weight(x, tuple(w_shape), g, tuple(stride), _pairs(padding),
                             tuple(dilation), groups, algorithm=algorithm).contiguous()


@conv2d_grad_weight.register_fake
def _(x, g, w_shape, stride, padding, dilation, groups, algorithm):
    return x.new_empty(tuple(w_shape))


# ---------------------------------------------------------------------------------------
# autograd: each pass's derivative is made of the others (see convforge.autograd). They are
# autograd Functions of the new style (setup_context, vmap rule generated from the
# operators' own), so torch.func's grad, vjp and jacrev compose with them; torch.compile
# traces them into the graph.

class _Pass(torch.autograd.Function):
    """A pass's two tensor arguments are saved; the rest are its (stride, padding,
    dilation, groups, algorithm), which every derivative reuses."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.args = inputs[3:]


class _Forward(_Pass):
    @staticmethod
    def forward(x, w, b, stride, padding, dilation, groups, algorithm):
        return conv2d(x, w, b, stride, padding, dilation, groups, algorithm)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _GradInput.apply(dy, _conj(w), list(x.shape), *ctx.args)
        if ctx.needs_input_grad[1]:
            dw = _GradWeight.apply(_conj(x), dy, list(w.shape), *ctx.args)
        if ctx.needs_input_grad[2]:
            db = dy.sum([d for d in range(dy.dim()) if d != dy.dim() - 3])
        return dx, dw, db, None, None, None, None, None


class _GradInput(_Pass):
    @staticmethod
    def forward(g, w, x_shape, stride, padding, dilation, groups, algorithm):
        return conv2d_grad_input(g, w, x_shape, stride, padding, dilation, groups, algorithm)

    @staticmethod
    def backward(ctx, d_x):
        g, w = ctx.saved_tensors
        dg = dw = None
        if ctx.needs_input_grad[0]:
            dg = _Forward.apply(d_x, _conj(w), None, *ctx.args)
        if ctx.needs_input_grad[1]:
            dw = _GradWeight.apply(d_x, _conj(g), list(w.shape), *ctx.args)
        return dg, dw, None, None, None, None, None, None


class _GradWeight(_Pass):
    @staticmethod
    def forward(x, g, w_shape, stride, padding, dilation, groups, algorithm):
        return conv2d_grad_weight(x, g, w_shape, stride, padding, dilation, groups, algorithm)

    @staticmethod
    def backward(ctx, d_w):
        x, g = ctx.saved_tensors
        dx = dg = None
        if ctx.needs_input_grad[0]:
            dx = _GradInput.apply(_conj(g), d_w, list(x.shape), *ctx.args)
        if ctx.needs_input_grad[1]:
            dg = _Forward.apply(_conj(x), d_w, None, *ctx.args)
        return dx, dg, None, None, None, None, None, None


# ---------------------------------------------------------------------------------------
# vmap: fold the vmapped dimension into the batch where the pass is per-sample in that
# argument (F and Gi in their first argument), else one call per slice

def _per_slice(op, info, in_dims, args):
    outs = []
    for i in range(info.batch_size):
        outs.append(op(*[a.select(d, i) if isinstance(d, int) else a
                         for a, d in zip(args, in_dims, strict=True)]))
    return torch.stack(outs), 0


def _folding_rule(op, shape_arg=None):
    """vmap rule of ``op`` whose first argument may be folded into the batch."""
    def rule(info, in_dims, *args):
        first, *rest = in_dims        # a list argument's entry is a list of Nones
        if isinstance(first, int) and not any(isinstance(d, int) for d in rest):
            a = args[0].movedim(first, 0)
            nb = a.shape[0]
            if a.dim() == 5:                                     # batched samples: fold
                call = list(args)
                call[0] = a.flatten(0, 1)
                if shape_arg is not None:
                    call[shape_arg] = [nb * call[shape_arg][0], *call[shape_arg][1:]]
                return op(*call).unflatten(0, (nb, -1)), 0
            if shape_arg is None or len(args[shape_arg]) == 3:   # unbatched: vmap = batch
                call = list(args)
                call[0] = a
                if shape_arg is not None:
                    call[shape_arg] = [nb, *call[shape_arg]]
                return op(*call), 0
        return _per_slice(op, info, in_dims, args)
    return rule


torch.library.register_vmap(conv2d, _folding_rule(conv2d))
torch.library.register_vmap(conv2d_grad_input, _folding_rule(conv2d_grad_input, shape_arg=2))
torch.library.register_vmap(conv2d_grad_weight,
                            lambda info, in_dims, *args: _per_slice(conv2d_grad_weight, info,
                                                                    in_dims, args))


def traced_conv2d(x, w, b, stride, padding, dilation, groups, padding_mode, algorithm):
    """A ``conv2d`` call (convforge's arguments: padding forms, modes) as the operator, for
    traced and transformed code: arguments checked and normalised here (shapes only),
    padding other than zeros applied as torch ops."""
    from .spec import pad_input

    low = autocast_dtype(x)                       # traceable: dynamo knows these queries
    if low is not None:
        x, w, b = autocast_cast(low, x, w, b)
    spec = make_spec("conv2d", tuple(x.shape), tuple(w.shape), bias=b, stride=stride,
                     padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode)
    pads = list(spec.padding)
    if padding_mode != "zeros" and spec.is_padded:
        xb = x if spec.batched else x.unsqueeze(0)
        xb = pad_input(xb, spec.padding, padding_mode)
        x, pads = (xb if spec.batched else xb.squeeze(0)), [0, 0, 0, 0]
    return _Forward.apply(x, w, b, list(spec.stride), pads, list(spec.dilation), spec.groups,
                          algorithm)


def traced_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation,
                            algorithm):
    """A ``conv_transpose2d`` call for traced and transformed code: the input-gradient
    operator (Gi) on the full output, then output padding, crop and bias as torch ops."""
    from .spec import make_transpose_spec

    low = autocast_dtype(x)
    if low is not None:
        x, w, b = autocast_cast(low, x, w, b)
    ts = make_transpose_spec("conv_transpose2d", tuple(x.shape), tuple(w.shape), bias=b,
                             stride=stride, padding=padding, output_padding=output_padding,
                             groups=groups, dilation=dilation)
    full_shape = list(ts.conv.padded_shape if ts.batched else ts.conv.padded_shape[1:])
    full = _GradInput.apply(x, w, full_shape, list(ts.conv.stride), [0, 0, 0, 0],
                            list(ts.conv.dilation), ts.conv.groups, algorithm)
    (ph, pw), (oph, opw) = ts.padding, ts.output_padding
    if oph or opw:
        full = torch.nn.functional.pad(full, (0, opw, 0, oph))
    out = full[..., ph:ph + ts.out_h, pw:pw + ts.out_w]
    if b is not None:
        out = out + b.view(-1, 1, 1)
    return out
