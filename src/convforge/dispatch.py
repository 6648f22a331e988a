"""Choosing an algorithm: a fitted cost model, an optional measurement, an override.

``choose_algorithm`` returns the name of the algorithm ``algorithm="auto"`` runs for a
:class:`~convforge.spec.ConvSpec`, compute dtype and device. It is pure: the answer
depends only on its arguments, the fitted constants shipped in ``cost_model.json`` and
the ``CONVFORGE_ALGORITHM`` environment variable.

How it decides:

1. Candidates are the registered algorithms that "auto" may use (never the float64
   oracle ``reference``, never torch's kernels ``torch``) whose ``supports`` says yes and
   whose measured error against the float64 oracle is within the dtype's tolerance
   (:data:`TOLERANCE`; correctness before speed).
2. Each candidate's prediction is a non-negative combination of the terms of
   :func:`cost_features`: its own ``cost()`` estimate, FLOPs per output row segment
   (short rows), input and output bytes, and a per-call constant. The weights are fitted
   per algorithm on this machine by ``benchmarks/fit_cost_model.py`` (least squares on the
   relative error), one set for the forward pass and one for forward + backward
   (``train``). An algorithm the fit has not seen, or a non-CPU device, keeps its raw
   ``cost()``.
3. The lowest prediction wins; ties go to the earlier registry entry.

``measure=True`` instead times every candidate once for this shape (forward, or forward
+ backward with ``train=True``; median of 3 after a warm-up) and caches the winner per
(spec, dtype, device, train), like ``torch.backends.cudnn.benchmark``.
``CONVFORGE_ALGORITHM=<name>`` forces that algorithm for every "auto" call where it is a
candidate (elsewhere "auto" falls back to the model).

Measured error, max |y - y64| / max |y64| on random normal data of the fit grid, against
float64 ``F.conv2d`` (written by the fit into ``cost_model.json``, ``errors``; the
figures below are from the fit of 2026-11-22 07:02 UTC on the 2-core AVX-512 machine):

==========  ============  ============
algorithm   float32       float64
==========  ============  ============
shift       1.4e-06       8.6e-16
im2col      1.5e-06       0.0e+00
winograd    9.7e-06       7.3e-15
direct      1.1e-06       1.1e-15
fft         3.4e-07       1.1e-15
==========  ============  ============

(complex64/complex128 behave like float32/float64; float16/bfloat16 compute in float32.)
Quality: over the fit grid (``benchmarks/fit_cost_model.py``, 26 shapes, fit of
2026-11-22 07:02 UTC on a quiet 2-core machine) "auto" ran within 10% of the fastest of our
algorithms on 25 of 26 shapes for the forward pass (96%), both in-sample and leave-one-out
(each shape predicted by weights fitted without it); ranked by forward + backward time,
24/26 (92%) both ways. The misses: im2col over direct for a 3->32-channel 5x5 layer on
32x32 images (1.16x forward, 1.32x fwd+bwd leave-one-out), direct over im2col for a
32-channel 3x3 layer with batch 2 (1.26x fwd+bwd), im2col over direct for LeNet's 6->16
layer (1.10x fwd+bwd). A repeat fit 30 minutes later (not shipped) gave 25/26 forward
in-sample (24/26 leave-one-out) and 22/26 (85%) fwd+bwd: on this shared machine timing noise
moves these figures by a few shapes, since several algorithms are within 10-20% of each
other on the small layers.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path

import torch

from .algorithms import REGISTRY

#: max |y - y_float64| / max |y_float64| that "auto" accepts per compute dtype
TOLERANCE = {
    torch.float32: 1e-4, torch.complex64: 1e-4,
    torch.float16: 1e-4, torch.bfloat16: 1e-4,
    torch.float64: 1e-10, torch.complex128: 1e-10,
}
_MODEL_PATH = Path(__file__).with_name("cost_model.json")
_MEASURED: dict = {}
#: predicted winners, so that "auto" costs one dictionary lookup per call after the first
_PREDICTED: dict = {}


@functools.lru_cache(maxsize=1)
def cost_model() -> dict:
    """The fitted constants (empty tables when no fit has been shipped).

    Returns:
        ``{"forward": {name: [a, b]}, "train": {...}, "errors": {name: {dtype: err}}}``.

    Example:
        >>> {"errors", "forward", "train"} <= set(cost_model())
        True
    """
    try:
        data = json.loads(_MODEL_PATH.read_text())
    except (OSError, ValueError):
        data = {}
    return {"errors": data.get("errors", {}), "forward": data.get("forward", {}),
            "train": data.get("train", {}), **{k: v for k, v in data.items()
                                               if k not in ("errors", "forward", "train")}}


def _dtype_key(dtype) -> str:
    return "float64" if dtype in (torch.float64, torch.complex128) else "float32"


def accurate_enough(name, dtype) -> bool:
    """Whether ``name``'s measured error is within ``TOLERANCE[dtype]`` (unknown: yes)."""
    err = cost_model()["errors"].get(name, {}).get(_dtype_key(dtype))
    return err is None or err <= TOLERANCE.get(dtype, 1e-4)


def candidates(spec, dtype=torch.float32, device="cpu") -> list[str]:
    """Algorithms "auto" may choose for this configuration, in registry order.

    Example:
        >>> from convforge import make_spec
        >>> "reference" in candidates(make_spec("conv2d", (1, 1, 8, 8), (1, 1, 3, 3)))
        False
    """
    device = torch.device(device)
    return [name for name, algo in REGISTRY.items()
            if algo.auto and algo.supports(spec, dtype, device) is None
            and accurate_enough(name, dtype)]


def cost_features(spec, raw: float, dtype=torch.float32) -> list:
    """The model's terms for one configuration, in nominal seconds.

    ``cost``: the algorithm's own ``cost()`` estimate; ``row_flops``: FLOPs per output row
    segment (``flops / min(out_w, 64)`` at 50 GFLOP/s: short rows cost loop overhead and
    vector remainders); ``input`` / ``output``: bytes of the padded input and the output at
    8 GB/s; ``call``: a fixed 100 us.

    Example:
        >>> from convforge import make_spec
        >>> len(cost_features(make_spec("conv2d", (1, 1, 8, 8), (1, 1, 3, 3)), 1e-4))
        5
    """
    size = dtype.itemsize
    inputs = spec.n * spec.c_in * spec.padded_h * spec.padded_w
    outputs = spec.n * spec.c_out * spec.out_h * spec.out_w
    return [raw, spec.flops() / min(spec.out_w, 64) / 50e9,
            inputs * size / 8e9, outputs * size / 8e9, 1e-4]


def predicted_seconds(name, spec, dtype=torch.float32, device="cpu", train=False) -> float:
    """The calibrated cost of one algorithm (its raw ``cost()`` where there is no fit).

    The fit (``benchmarks/fit_cost_model.py``, CPU only) is a non-negative combination of
    :func:`cost_features`.

    Example:
        >>> from convforge import make_spec
        >>> predicted_seconds("im2col", make_spec("conv2d", (1, 1, 8, 8), (1, 1, 3, 3))) > 0
        True
    """
    device = torch.device(device)
    raw = REGISTRY[name].cost(spec, dtype, device)
    fit = cost_model()["train" if train else "forward"].get(name)
    if fit is None or device.type != "cpu" or not math.isfinite(raw) or raw <= 0:
        return raw
    t = sum(c * f for c, f in zip(fit["coef"], cost_features(spec, raw, dtype)))
    return t if t > 0 else raw


def time_algorithm(name, spec, dtype=torch.float32, device="cpu", train=False, repeats=3):
    """Median seconds of one forward (or forward + backward) pass on random data."""
    from .autograd import conv_forward

    device = torch.device(device)
    algo = REGISTRY[name]
    # as conv2d hands it over: padded here unless the algorithm pads zeros itself
    fused = algo.fused_zero_padding and spec.padding_mode == "zeros"
    aspec = spec if fused else spec.after_padding()
    x = torch.randn((spec.n, spec.c_in, aspec.h, aspec.w), dtype=dtype, device=device,
                    requires_grad=train)
    w = torch.randn(spec.weight_shape, dtype=dtype, device=device, requires_grad=train)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.set_grad_enabled(train):
            y = conv_forward(x, w, aspec, algo)
            if train:
                y.backward(torch.ones_like(y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def choose_algorithm(spec, dtype=torch.float32, device="cpu", measure=False, *,
                     train=False) -> str:
    """Name of the algorithm ``algorithm="auto"`` runs for this configuration.

    Args:
        spec: a :class:`~convforge.spec.ConvSpec` (from ``convforge.make_spec``).
        dtype: the compute dtype (float16/bfloat16 compute in float32).
        device: the tensors' device.
        measure: time the candidates once and cache the winner for this shape.
        train: rank by forward + backward time instead of forward time.

    Returns:
        A key of ``convforge.algorithms()``, never ``"reference"`` or ``"torch"``.

    Raises:
        ValueError: no registered algorithm can run this configuration.

    Example:
        >>> from convforge import algorithms, make_spec
        >>> choose_algorithm(make_spec("conv2d", (1, 1, 64, 64), (1, 1, 3, 3))) in algorithms()
        True
    """
    device = torch.device(device)
    forced = os.environ.get("CONVFORGE_ALGORITHM")
    # after the first call "auto" is one dictionary lookup; the key holds the cost model
    # object, so a re-loaded (or replaced) model is honoured
    key = (spec, dtype, str(device), bool(train), forced, id(cost_model()))
    if not measure and key in _PREDICTED:
        return _PREDICTED[key]
    names = candidates(spec, dtype, device)
    if not names:
        raise ValueError(f"choose_algorithm: no algorithm supports this configuration, "
                         f"but got {spec} with {dtype} on {device}")
    if forced and forced in names:
        return forced
    if measure and len(names) > 1:
        key = (spec, dtype, str(device), bool(train))
        if key not in _MEASURED:
            _MEASURED[key] = min(names, key=lambda n: time_algorithm(n, spec, dtype, device,
                                                                      train))
        return _MEASURED[key]
    best = min(names, key=lambda n: predicted_seconds(n, spec, dtype, device, train))
    if len(_PREDICTED) > 4096:
        _PREDICTED.clear()
    _PREDICTED[key] = best
    return best


def clear_measurements() -> None:
    """Forget the winners cached by ``choose_algorithm(..., measure=True)``."""
    _MEASURED.clear()


def resolve(func, name, spec, dtype, device, train=False):
    """The Algorithm object for ``algorithm=name``, with the errors users see."""
    if not isinstance(name, str):
        raise TypeError(f"{func}: algorithm must be a string, but got {name!r}")
    if name == "auto":
        return REGISTRY[choose_algorithm(spec, dtype, device, train=train)]
    if name not in REGISTRY:
        raise ValueError(
            f"{func}: algorithm must be 'auto' or one of {sorted(REGISTRY)}, but got {name!r}")
    reason = REGISTRY[name].supports(spec, dtype, torch.device(device))
    if reason is not None:
        raise ValueError(f"{func}: algorithm {name!r} does not support this configuration: "
                         f"{reason}")
    return REGISTRY[name]
