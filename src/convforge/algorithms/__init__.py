"""The algorithm registry: every algorithm offers the same five functions.

An algorithm is a module with::

    supports(spec, dtype, device) -> str | None   # None: yes; else the reason it cannot
    forward(x, w, spec)                           # valid correlation of the padded input
    grad_input(grad_out, w, spec, x_shape)        # as torch.nn.grad.conv2d_input (padded x)
    grad_weight(x, grad_out, spec, w_shape)       # as torch.nn.grad.conv2d_weight
    cost(spec, dtype, device) -> float            # estimated seconds, for dispatch
    workspace_bytes(spec, dtype, pass_) -> int    # bytes it allocates besides its result

``x`` is the input ``(N, C_in, spec.h, spec.w)``. Its padding has already been applied
and ``spec.padding`` is zero, unless the module sets ``FUSED_ZERO_PADDING = True``: such an
algorithm is also handed zero-padded convolutions with ``spec.padding`` still to apply
(per side, zeros), and its ``grad_input`` returns the gradient of the unpadded input.
Everything else an algorithm reads is ``spec.stride``, ``spec.dilation``, ``spec.groups``.
Tensors may be non-contiguous (channels_last, slices) and complex. A new algorithm is one module and
one line in ``_MODULES``; it then joins every parity test and benchmark by itself.

``workspace_bytes`` is an upper bound of the memory one untiled pass (``"forward"``,
``"grad_input"``, ``"grad_weight"``) allocates besides its result, for the spec it is
handed; :mod:`convforge.workspace` tiles any pass over the limit (batch, then output
channels and bands of output rows), so an algorithm itself never has to.

A module that sets ``FUSED_BIAS = True`` takes ``forward(x, w, spec, bias)`` and adds the
bias ``(C_out,)`` itself (inside its GEMM or loop); the others' outputs get it added in place.

A module that sets ``COMPILED = True`` runs kernels compiled on first use (Numba); "auto"
plans with it only once they are ready (:mod:`convforge._compile`).

A module may also offer ``native(x, w, b, spec)``: the whole convolution (bias included) as
one differentiable torch expression. torch's kernels do (``F.conv2d``); a call whose every
pass is planned on such an algorithm runs it directly, with torch's own autograd.

Each pass of a call may run on a different algorithm: a :class:`Passes` names the
algorithm of the forward pass, of the input gradient and of the weight gradient (the
depthwise layers of a network, say, run torch's forward and convforge's backward).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

# name -> (module, may "auto" choose it?)
_MODULES = {
    "reference": ("reference", False),  # float64 oracle: tests and teaching
    "torch": ("torch_native", True),    # torch's own kernels, on the input's layout
    "torch_cl": ("torch_cl", True),     # torch's kernels on a channels_last copy
    "shift": ("shift", True),
    "im2col": ("im2col", True),
    "winograd": ("winograd", True),
    "direct": ("direct", True),
    "fft": ("fft", True),
    "depthwise": ("depthwise", True),
}


@dataclass(frozen=True)
class Algorithm:
    name: str
    auto: bool
    supports: Callable
    forward: Callable
    grad_input: Callable
    grad_weight: Callable
    cost: Callable
    workspace: Callable
    fused_zero_padding: bool = False
    native: Callable | None = None
    fused_bias: bool = False
    compiled: bool = False

    def workspace_bytes(self, spec, dtype, train: bool = False) -> int:
        """The most bytes one untiled call allocates besides its result: its forward pass,
        and with ``train`` also both gradient passes (``spec`` as the algorithm is handed
        it: padded first unless it fuses zero padding)."""
        passes = ("forward", "grad_input", "grad_weight") if train else ("forward",)
        return max(self.workspace(spec, dtype, p) for p in passes)


@dataclass(frozen=True)
class Passes:
    """The algorithm of each pass: forward, input gradient, weight gradient."""

    forward: Algorithm
    grad_input: Algorithm
    grad_weight: Algorithm

    @classmethod
    def of(cls, algo: Algorithm) -> Passes:
        """One algorithm for all three passes."""
        return cls(algo, algo, algo)

    @property
    def fused_zero_padding(self) -> bool:
        """Whether every pass takes the unpadded input (else the input is padded first)."""
        return all(a.fused_zero_padding for a in (self.forward, self.grad_input,
                                                  self.grad_weight))

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.forward.name, self.grad_input.name, self.grad_weight.name)

    @property
    def label(self) -> str:
        """``"direct"`` when one algorithm runs every pass, else ``"torch/depthwise/..."``."""
        names = self.names
        return names[0] if len(set(names)) == 1 else "/".join(names)


def _load(name: str, module: str, auto: bool) -> Algorithm:
    mod = importlib.import_module(f"{__name__}.{module}")
    return Algorithm(name, auto, mod.supports, mod.forward, mod.grad_input, mod.grad_weight,
                     mod.cost, mod.workspace_bytes, getattr(mod, "FUSED_ZERO_PADDING", False),
                     getattr(mod, "native", None), getattr(mod, "FUSED_BIAS", False),
                     getattr(mod, "COMPILED", False))


REGISTRY: dict[str, Algorithm] = {
    name: _load(name, module, auto) for name, (module, auto) in _MODULES.items()
}


def algorithms() -> list[str]:
    """The names ``algorithm=`` accepts (besides ``"auto"``).

    Example:
        >>> "reference" in algorithms() and "im2col" in algorithms()
        True
    """
    return list(REGISTRY)
