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


def round_robin_ms(fns, *, min_time=0.3, max_runs=15, min_runs=3, budget=3.0):
    """``{key: (median ms, runs)}`` of callables timed in turns, one run each per round.

    Timing the implementations of one workload in turns (after one warm-up each) makes a
    burst of load from other processes hit all of them alike instead of whichever was
    being timed; the order rotates every round (no implementation always runs after the
    same other one, whose cache and allocator state it would inherit). Each stops after
    ``max_runs``, or ``min_runs`` and ``min_time`` seconds, or ``budget`` seconds. A
    warm-up slower than ``budget`` is reported as is (one run).
    """
    first = {}
    for key, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[key] = time.perf_counter() - t0
    times = {key: [] for key in fns}
    active = [key for key in fns if first[key] <= budget]
    turn = 0
    while active:
        turn += 1
        for key in active[turn % len(active):] + active[:turn % len(active)]:
            t0 = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - t0)
            runs, spent = len(times[key]), sum(times[key])
            if runs >= max_runs or (runs >= min_runs and spent >= min_time) or spent > budget:
                active.remove(key)
    return {key: (statistics.median(times[key]) * 1e3, len(times[key])) if times[key]
            else (first[key] * 1e3, 1) for key in fns}


def matmul_peak_gflops(n=1536):
    """torch.matmul float32 GFLOP/s on an n x n product (the best of a few medians)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms, _ = median_ms(lambda: a @ b, min_time=0.5, max_runs=20)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def our_algorithms(spec, dtype=torch.float32):
    """Registered algorithms (not the oracle, not torch's kernels) that support ``spec``."""
    cpu = torch.device("cpu")
    return [n for n, a in REGISTRY.items()
            if n not in ("reference", "torch", "torch_cl")
            and a.supports(spec, dtype, cpu) is None]


def run_ours(name, x, w, kwargs, train):
    """One forward (and backward) pass of ``convforge.conv2d(..., algorithm=name)``."""
    y = convforge.conv2d(x, w, algorithm=name, **kwargs)
    if train:
        y.backward(torch.ones_like(y))
    return y


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON to ``path``, creating its folder."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))
