"""Shared helpers of the benchmark scripts: timing, tensors, our algorithms on a spec."""

from __future__ import annotations

import statistics
import time

import torch

import convforge
from convforge.algorithms import REGISTRY

THREADS = 2


def median_ms(fn, *, min_time=0.3, max_runs=15, min_runs=3, budget=3.0, stat="median"):
    """Median (or ``stat="min"``) wall time of ``fn()`` in ms, and the number of runs.

    One warm-up, then repeats up to a time budget; a warm-up slower than ``budget``
    seconds is reported as is (one run). The minimum is the better estimate of the
    undisturbed time on a shared machine; the median is what the benchmark tables report.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > budget:
        return first * 1e3, 1
    times, spent = [], 0.0
    while len(times) < max_runs and (len(times) < min_runs or spent < min_time):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > budget:
            break
    return (min(times) if stat == "min" else statistics.median(times)) * 1e3, len(times)


def matmul_peak_gflops(n=1536):
    """torch.matmul float32 GFLOP/s on an n x n product (the best of a few medians)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms, _ = median_ms(lambda: a @ b, min_time=0.5, max_runs=20)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def our_algorithms(spec, dtype=torch.float32):
    """Registered algorithms (not the oracle, not torch's) that support ``spec``."""
    cpu = torch.device("cpu")
    return [n for n, a in REGISTRY.items()
            if n not in ("reference", "torch") and a.supports(spec, dtype, cpu) is None]


def run_ours(name, x, w, kwargs, train):
    """One forward (and backward) pass of ``convforge.conv2d(..., algorithm=name)``."""
    y = convforge.conv2d(x, w, algorithm=name, **kwargs)
    if train:
        y.backward(torch.ones_like(y))
    return y
