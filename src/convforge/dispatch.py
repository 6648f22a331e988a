"""Choosing an algorithm: a pure cost model, an optional measurement, an override.

``choose_algorithm`` returns the name of the algorithm ``algorithm="auto"`` will run for a
given :class:`~convforge.spec.ConvSpec`, dtype and device. It only considers algorithms
whose registry entry allows "auto" (never the float64 oracle, never torch's kernels) and
whose ``supports`` says yes, and picks the lowest ``cost`` estimate.

* ``measure=True`` times every candidate once for this shape (forward pass, median of a
  few runs) and caches the winner per (spec, dtype, device), like cudnn.benchmark.
* The environment variable ``CONVFORGE_ALGORITHM`` forces a name for every "auto" call
  (it must be supported for the configuration, else "auto" falls back to the model).
"""

from __future__ import annotations

import os
import time

import torch

from .algorithms import REGISTRY

_MEASURED: dict = {}


def candidates(spec, dtype=torch.float32, device="cpu") -> list[str]:
    """Algorithms "auto" may choose for this configuration, in registry order."""
    return [name for name, algo in REGISTRY.items()
            if algo.auto and algo.supports(spec, dtype, torch.device(device)) is None]


def _measure(spec, dtype, device, names):
    x = torch.randn(spec.padded_shape, dtype=dtype, device=device)
    w = torch.randn(spec.weight_shape, dtype=dtype, device=device)
    best, best_t = names[0], float("inf")
    for name in names:
        algo, times = REGISTRY[name], []
        for _ in range(3):
            t0 = time.perf_counter()
            algo.forward(x, w, spec)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        t = sorted(times)[1]
        if t < best_t:
            best, best_t = name, t
    return best


def choose_algorithm(spec, dtype=torch.float32, device="cpu", measure=False) -> str:
    """Name of the algorithm ``algorithm="auto"`` runs for this configuration.

    Args:
        spec: a :class:`~convforge.spec.ConvSpec` (from ``convforge.make_spec``).
        dtype: the compute dtype (float16/bfloat16 compute in float32).
        device: the tensors' device.
        measure: time the candidates once and cache the winner for this shape.

    Returns:
        A key of ``convforge.algorithms()``.

    Example:
        >>> from convforge import algorithms, make_spec
        >>> choose_algorithm(make_spec("conv2d", (1, 1, 64, 64), (1, 1, 3, 3))) in algorithms()
        True
    """
    device = torch.device(device)
    names = candidates(spec, dtype, device)
    forced = os.environ.get("CONVFORGE_ALGORITHM")
    if forced and forced in names:
        return forced
    if measure:
        key = (spec, dtype, str(device))
        if key not in _MEASURED:
            _MEASURED[key] = _measure(spec, dtype, device, names)
        return _MEASURED[key]
    return min(names, key=lambda name: REGISTRY[name].cost(spec, dtype, device))


def resolve(func, name, spec, dtype, device):
    """The Algorithm object for ``algorithm=name``, with the errors users see."""
    if not isinstance(name, str):
        raise TypeError(f"{func}: algorithm must be a string, but got {name!r}")
    if name == "auto":
        return REGISTRY[choose_algorithm(spec, dtype, device)]
    if name not in REGISTRY:
        raise ValueError(
            f"{func}: algorithm must be 'auto' or one of {sorted(REGISTRY)}, but got {name!r}")
    reason = REGISTRY[name].supports(spec, dtype, torch.device(device))
    if reason is not None:
        raise ValueError(f"{func}: algorithm {name!r} does not support this configuration: "
                         f"{reason}")
    return REGISTRY[name]
