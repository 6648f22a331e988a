"""Choosing the algorithms of a call: a fitted cost model, an optional measurement, an override.

``choose_plan`` returns, for a :class:`~convforge.spec.ConvSpec`, compute dtype and device,
the algorithm ``algorithm="auto"`` runs for each pass: the forward pass, the input
gradient and the weight gradient (:class:`~convforge.algorithms.Passes`). Each pass is
chosen on its own, so a depthwise layer of a network can run torch's forward and
convforge's backward. ``choose_algorithm`` is the forward pass's choice. Without
``measure`` both are pure: the answer depends only on the arguments, the fitted constants
shipped in ``cost_model_t*.json``, torch's thread count and the ``CONVFORGE_ALGORITHM``
environment variable.

How it decides:

1. Candidates are the registered algorithms that "auto" may use (never the float64 oracle
   ``reference``; torch's own kernels, ``torch`` and ``torch_cl``, are candidates like any
   other) whose ``supports`` says yes and whose measured error against the float64 oracle
   is within the dtype's tolerance (:data:`TOLERANCE`; correctness before speed).
2. Each candidate's time for each pass is predicted by a non-negative combination of the
   terms of :func:`cost_features`: its own ``cost()`` estimate, FLOPs per output row
   segment (short rows), input and output bytes, and a per-call constant. The weights are
   fitted per algorithm and pass on this machine by ``benchmarks/fit_cost_model.py``, on
   the layer shapes of real networks (LeNet, ResNet-20, MobileNetV2, ConvNeXt at 32x32,
   ResNet-18 and MobileNetV2 at 224x224), 34 image, layer and tiny shapes and
   ``benchmarks/run.py``'s workloads; the prediction is then corrected by the fit's
   measurements at nearby shapes (:class:`Predictor`). An algorithm the fit has not seen,
   or a non-CPU device, keeps its raw ``cost()``.
3. Per pass the lowest prediction wins, except that another algorithm must beat torch's
   prediction by :data:`TORCH_MARGIN` to be chosen over it: where the model cannot tell
   two algorithms apart, torch's kernel (what the user would have run anyway) stays. And
   the plan as a whole (the passes the call needs, each with :data:`PASS_OVERHEAD`) must
   beat torch's by the same margin, or torch's own ``F.conv2d`` runs it (:func:`choose`).
4. A channels_last input runs torch's kernels (its NHWC kernels: the fit is of NCHW
   tensors), unless measured.

``measure=True`` instead times every candidate's passes once for this configuration
(median of 3 after a warm-up; only the passes the call needs) and caches the winners per
(spec, dtype, device, gradients, layout), like ``torch.backends.cudnn.benchmark``;
``convforge.backends.benchmark = True`` turns it on for every "auto" call that does not
say otherwise (layers take ``measure=``). ``CONVFORGE_ALGORITHM=<name>`` forces that
algorithm for every pass of every "auto" call where it is a candidate.

The fits are per thread count (``cost_model_t2.json``, ``cost_model_t1.json``: oneDNN and
Numba scale differently with threads); a call uses the fit nearest to
``torch.get_num_threads()``. Measured error, max |y - y64| / max |y64| on random normal
data of the fit grid, against float64 ``F.conv2d``, is written by the fit (``errors``); the
quality of the choice (how often it is within 10% of the fastest, in-sample and
leave-one-out) is in ``quality``. Both are printed by :func:`report` (the
``convforge dispatch`` command).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path

import torch

from . import _compile, backends, workspace
from .algorithms import REGISTRY, Passes
from .spec import make_spec

#: max |y - y_float64| / max |y_float64| that "auto" accepts per compute dtype
TOLERANCE = {
    torch.float32: 1e-4, torch.complex64: 1e-4,
    torch.float16: 1e-4, torch.bfloat16: 1e-4,
    torch.float64: 1e-10, torch.complex128: 1e-10,
}
#: another algorithm replaces torch's kernel only when predicted this much faster
TORCH_MARGIN = 0.9
#: seconds a pass costs beyond its kernel when it runs through convforge's autograd
#: Functions rather than torch's own F.conv2d (Python, separate backward passes)
PASS_OVERHEAD = 3e-5
PASSES = ("forward", "grad_input", "grad_weight")
_MODEL_DIR = Path(__file__).parent
#: the thread count whose fit is the default (its errors, the doctests' figures)
_DEFAULT_THREADS = 2
_MEASURED: dict = {}
#: predicted plans, so that "auto" costs one dictionary lookup per call after the first
_PREDICTED: dict = {}


@functools.lru_cache(maxsize=1)
def cost_models() -> dict:
    """Every shipped fit, by the thread count it was measured with (``cost_model_t{N}.json``,
    written by ``benchmarks/fit_cost_model.py --threads N``)."""
    models = {}
    for path in _MODEL_DIR.glob("cost_model_t*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        models[int(data.get("threads", path.stem.rsplit("_t", 1)[-1]))] = {
            "errors": {}, **{p: {} for p in PASSES}, **data}
    return models


def cost_model(threads=None) -> dict:
    """The fitted constants for ``threads`` (default: the 2-thread fit; the nearest thread
    count fitted otherwise; empty tables when no fit has been shipped).

    Returns:
        ``{"forward": {name: {"coef": [...]}}, "grad_input": {...}, "grad_weight": {...},
        "errors": {name: {dtype: err}}, "threads": N, ...}``.

    Example:
        >>> {"errors", "forward", "grad_input", "grad_weight"} <= set(cost_model())
        True
    """
    models = cost_models()
    if not models:
        return {"errors": {}, **{p: {} for p in PASSES}}
    want = _DEFAULT_THREADS if threads is None else threads
    return models[min(models, key=lambda t: (abs(t - want), -t))]


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
        >>> names = candidates(make_spec("conv2d", (1, 1, 8, 8), (1, 1, 3, 3)))
        >>> "reference" in names, "torch" in names
        (False, True)
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


#: nearest-neighbour correction: width (log2 units) of a neighbour's weight, and the
#: prior weight that pulls a correction from far neighbours back to the fitted model
_SIGMA, _PRIOR = 0.75, 0.05
#: how much each log2 size counts in the distance: batch and output pixels (how much of
#: the same work) a third as much as channels, groups and taps (which work): an
#: algorithm's error at a shape carries over to larger batches and images of that shape
_SCALE = (1 / 3, 1.0, 1.0, 1.0, 1 / 3, 1.0)


def _kind(spec) -> tuple:
    """Configurations are only compared within a kind (1x1, depthwise, stride, dilation)."""
    return (spec.kh * spec.kw == 1, spec.c_in == spec.groups > 1, spec.stride,
            spec.dilation != (1, 1))


def _position(spec) -> tuple:
    """log2 of the sizes that set a configuration's cost, scaled by ``_SCALE``."""
    return tuple(s * math.log2(max(v, 1)) for s, v in zip(_SCALE, (
        spec.n, spec.c_in // spec.groups, spec.c_out // spec.groups, spec.groups,
        spec.out_h * spec.out_w, spec.kh * spec.kw)))


class Predictor:
    """Seconds of each pass of each algorithm: the fitted combination of
    :func:`cost_features`, corrected by the measured shapes near the configuration.

    The fit's measurements (``cost_model_t*.json``, ``measurements``: every algorithm's time
    for every pass of every grid shape) say how far the fitted model is from the truth at
    each grid shape; a configuration's prediction is multiplied by the geometric mean of
    those ratios at the grid shapes of its kind (1x1, depthwise, stride, dilation), each
    weighted by ``exp(-d^2 / 2 sigma^2)`` at distance d in log2 sizes (batch, channels per
    group in and out, groups, output pixels, taps; batch and pixels count a third). A
    measured shape is thus predicted by its own measurement, and shapes between measured
    ones, or larger, by their neighbours'.
    """

    def __init__(self, model: dict):
        self.model = model
        self._near: dict = {}
        self._specs: dict = {}
        self._rows: dict = {}                  # algorithm -> its measurements
        for row in model.get("measurements", []):
            self._rows.setdefault(row["algo"], []).append(row)

    def _spec(self, label):
        if label not in self._specs:
            shape = self.model.get("shapes", {}).get(label)
            self._specs[label] = None if shape is None else make_spec(
                "conv2d", shape[0], shape[1], **{
                    k: tuple(v) if isinstance(v, list) else v for k, v in shape[2].items()})
        return self._specs[label]

    def _neighbours(self, name, pass_):
        """``(kinds, points, log ratios)`` of ``name``'s measurements of ``pass_`` (built
        on first use: a process that plans forward passes only never builds the others)."""
        key = (name, pass_)
        if key not in self._near:
            kinds, points, logs = near = ({}, [], [])
            for row in self._rows.get(name, ()) if name in REGISTRY else ():
                spec = self._spec(row["label"])
                if spec is None or not row.get(pass_):
                    continue
                fitted = self.fitted(name, spec, torch.float32, pass_)
                if fitted > 0:
                    kinds.setdefault(_kind(spec), []).append(len(points))
                    points.append(_position(spec))
                    logs.append(math.log(row[pass_] / fitted))
            self._near[key] = near if points else None
        return self._near[key]

    def fitted(self, name, spec, dtype=torch.float32, pass_="forward") -> float:
        """The fitted combination of the terms (the raw ``cost()`` unfitted)."""
        raw = REGISTRY[name].cost(spec, dtype, torch.device("cpu"))
        fit = self.model.get(pass_, {}).get(name)
        if fit is None or not math.isfinite(raw) or raw <= 0:
            return raw
        t = sum(c * f for c, f in zip(fit["coef"], cost_features(spec, raw, dtype)))
        return t if t > 0 else raw

    def correction(self, name, spec, pass_) -> float:
        """The log-ratio measured / fitted near ``spec`` (0 with no neighbour)."""
        near = self._neighbours(name, pass_)
        if near is None:
            return 0.0
        kinds, points, logs = near
        here = _position(spec)
        num = den = 0.0
        for i in kinds.get(_kind(spec), ()):
            d2 = sum((a - b) ** 2 for a, b in zip(points[i], here))
            weight = math.exp(-d2 / (2 * _SIGMA ** 2))
            num, den = num + weight * logs[i], den + weight
        return num / (den + _PRIOR)

    def seconds(self, name, spec, dtype=torch.float32, device="cpu", pass_="forward"):
        device = torch.device(device)
        if device.type != "cpu":
            return REGISTRY[name].cost(spec, dtype, device)
        t = self.fitted(name, spec, dtype, pass_)
        if dtype not in (torch.float64, torch.complex128) and math.isfinite(t):
            t *= math.exp(self.correction(name, spec, pass_))   # measured in float32
        return t


_PREDICTORS: dict = {}


def _predictor(threads) -> Predictor:
    """The predictor of the fit nearest to ``threads`` (one per model, built once)."""
    model = cost_model(threads)
    if id(model) not in _PREDICTORS:
        _PREDICTORS[id(model)] = Predictor(model)
    return _PREDICTORS[id(model)]


def predicted_seconds(name, spec, dtype=torch.float32, device="cpu", pass_="forward",
                      threads=None) -> float:
    """The predicted seconds of one pass of one algorithm (:class:`Predictor`), with the
    fit of the thread count nearest to ``threads`` (default: torch's now).

    Example:
        >>> from convforge import make_spec
        >>> predicted_seconds("im2col", make_spec("conv2d", (1, 1, 8, 8), (1, 1, 3, 3))) > 0
        True
    """
    threads = torch.get_num_threads() if threads is None else threads
    return _predictor(threads).seconds(name, spec, dtype, device, pass_)


def _random_operands(spec, dtype, device, algos, channels_last=False):
    """Inputs of every pass as conv2d hands them over (padded unless all pads fuse)."""
    fused = all(a.fused_zero_padding for a in algos) and spec.padding_mode == "zeros"
    aspec = spec if fused else spec.after_padding()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn((spec.n, spec.c_in, aspec.h, aspec.w), dtype=dtype, device=device)
    w = torch.randn(spec.weight_shape, dtype=dtype, device=device)
    g = torch.randn(spec.output_shape, dtype=dtype, device=device)
    return aspec, x.contiguous(memory_format=fmt), w, g.contiguous(memory_format=fmt)


def time_pass(name, pass_, spec, dtype=torch.float32, device="cpu", repeats=3, *,
              channels_last=False) -> float:
    """Median seconds of one pass (``"forward"``, ``"grad_input"``, ``"grad_weight"``) of
    one algorithm on random data (NCHW, or NHWC in memory), after a warm-up; the forward
    pass includes bringing its output to the input's layout, as a call does."""
    device = torch.device(device)
    algo = REGISTRY[name]
    aspec, x, w, g = _random_operands(spec, dtype, device, (algo,), channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    run = {"forward": lambda: workspace.forward(algo, x, w, aspec).contiguous(
               memory_format=fmt),
           "grad_input": lambda: workspace.grad_input(algo, g, w, aspec, tuple(x.shape)),
           "grad_weight": lambda: workspace.grad_weight(algo, x, g, aspec,
                                                        spec.weight_shape)}[pass_]
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def time_algorithm(name, spec, dtype=torch.float32, device="cpu", train=False, repeats=3):
    """Median seconds of one forward (or forward + backward) pass on random data."""
    from .autograd import conv_forward

    device = torch.device(device)
    algo = REGISTRY[name]
    aspec, x, w, _ = _random_operands(spec, dtype, device, (algo,))
    x.requires_grad_(train)
    w.requires_grad_(train)
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


def _needed(grads) -> tuple[str, ...]:
    """The passes a call runs: forward, and the gradients its operands need."""
    return ("forward",) + tuple(p for p, need in zip(PASSES[1:], grads) if need)


def _best(names, score) -> str:
    """The lowest score; another algorithm must beat torch's by TORCH_MARGIN."""
    best = min(names, key=score)
    if "torch" in names and best != "torch" and score(best) > TORCH_MARGIN * score("torch"):
        return "torch"
    return best


def choose(names, needed, seconds) -> tuple[str, str, str]:
    """The plan from per-pass times ``seconds(name, pass_)``: per needed pass the best
    (:func:`_best`); then, unless torch's kernels already run every needed pass, the whole
    plan must beat torch's by TORCH_MARGIN with PASS_OVERHEAD per pass added (torch alone
    is one ``F.conv2d`` with its fused backward; a plan of ours runs each pass through
    convforge's autograd Functions), else torch runs every pass."""
    plan = {p: _best(names, lambda n, p=p: seconds(n, p)) for p in needed}
    if "torch" in names and any(plan[p] != "torch" for p in needed):
        ours = sum(seconds(plan[p], p) + PASS_OVERHEAD for p in needed)
        if ours > TORCH_MARGIN * sum(seconds("torch", p) for p in needed):
            plan = dict.fromkeys(needed, "torch")
    return tuple(plan.get(p, plan["forward"]) for p in PASSES)


def choose_plan(spec, dtype=torch.float32, device="cpu", *, grads=(False, False),
                measure=None, channels_last=False) -> tuple[str, str, str]:
    """Names of the algorithms ``algorithm="auto"`` runs for each pass of this call.

    Args:
        spec: a :class:`~convforge.spec.ConvSpec` (from ``convforge.make_spec``).
        dtype: the compute dtype (float16/bfloat16 compute in float32).
        device: the tensors' device.
        grads: whether the call will need (input gradient, weight gradient).
        measure: time the candidates once and cache the winners for this configuration;
            None follows ``convforge.backends.benchmark``.
        channels_last: the input is channels_last (NHWC) in memory.

    Returns:
        ``(forward, grad_input, grad_weight)``: keys of ``convforge.algorithms()``, never
        ``"reference"``. A pass the call does not need gets the forward's algorithm.

    Raises:
        ValueError: no registered algorithm can run this configuration.

    Example:
        >>> from convforge import make_spec
        >>> plan = choose_plan(make_spec("conv2d", (1, 8, 32, 32), (8, 1, 7, 7), groups=8),
        ...                    grads=(True, True))
        >>> len(plan) == 3 and "reference" not in plan
        True
    """
    device = torch.device(device)
    if measure is None:
        measure = backends.benchmark
    forced = os.environ.get("CONVFORGE_ALGORITHM")
    grads = (bool(grads[0]), bool(grads[1]))
    threads = torch.get_num_threads()
    limit = workspace.get_workspace_limit()
    key = (spec, dtype, str(device), grads, bool(channels_last), forced, threads,
           id(cost_model(threads)), _compile.generation, backends.background_compile, limit)
    table = _MEASURED if measure else _PREDICTED
    if key in table:
        return table[key]
    names = candidates(spec, dtype, device)
    if not names:
        raise ValueError(f"choose_plan: no algorithm supports this configuration, "
                         f"but got {spec} with {dtype} on {device}")
    needed = _needed(grads)
    seen = workspace.seen_spec(spec)
    within = [n for n in names if workspace.fits(REGISTRY[n], seen, dtype, needed, limit)]
    if not within:
        need = min((max(workspace.minimum_bytes(REGISTRY[n], seen, dtype, p)
                        for p in needed), n) for n in names)
        raise workspace.WorkspaceLimitError(
            f"choose_plan: no algorithm runs this configuration within the workspace limit "
            f"of {limit} bytes (the smallest tile of {need[1]!r} needs {need[0]} bytes), "
            f"for {spec} with {dtype}; raise it with convforge.set_workspace_limit")
    names = within
    if forced and forced in names:
        plan = (forced,) * 3
    elif measure and len(names) > 1:
        plan = _measured_plan(names, needed, spec, dtype, device, channels_last)
    elif channels_last and "torch" in names:
        plan = ("torch",) * 3
    else:
        def seconds(n, p):
            return predicted_seconds(n, spec, dtype, device, p, threads)

        plan = choose(names, needed, seconds)
        if torch.device(device).type == "cpu":    # compiled algorithms once ready (_compile)
            ready = _compile.available(names, dtype, wanted=plan)
            if len(ready) < len(names):
                plan = choose(ready, needed, seconds)
    if len(table) > 4096:
        table.clear()
    table[key] = plan
    return plan


def _measured_plan(names, needed, spec, dtype, device, channels_last):
    """:func:`choose` on the measured times of every needed pass of every candidate."""
    times = {(n, p): time_pass(n, p, spec, dtype, device, channels_last=channels_last)
             for p in needed for n in names}
    return choose(names, needed, lambda n, p: times[(n, p)])


def choose_algorithm(spec, dtype=torch.float32, device="cpu", measure=False, *,
                     train=False) -> str:
    """Name of the algorithm ``algorithm="auto"`` runs for the forward pass.

    Args:
        spec: a :class:`~convforge.spec.ConvSpec` (from ``convforge.make_spec``).
        dtype: the compute dtype (float16/bfloat16 compute in float32).
        device: the tensors' device.
        measure: time the candidates once and cache the winner for this shape.
        train: the call also needs both gradients (what is timed under ``measure``);
            :func:`choose_plan` gives every pass's algorithm.

    Returns:
        A key of ``convforge.algorithms()``, never ``"reference"``.

    Raises:
        ValueError: no registered algorithm can run this configuration.

    Example:
        >>> from convforge import algorithms, make_spec
        >>> choose_algorithm(make_spec("conv2d", (1, 1, 64, 64), (1, 1, 3, 3))) in algorithms()
        True
    """
    return choose_plan(spec, dtype, device, grads=(train, train), measure=measure)[0]


def clear_measurements() -> None:
    """Forget the winners cached by ``measure=True``."""
    _MEASURED.clear()


def resolve(func, name, spec, dtype, device, *, grads=(False, False), measure=None,
            channels_last=False) -> Passes:
    """The algorithms of every pass for ``algorithm=name``, with the errors users see."""
    if not isinstance(name, str):
        raise TypeError(f"{func}: algorithm must be a string, but got {name!r}")
    if name == "auto":
        plan = choose_plan(spec, dtype, device, grads=grads, measure=measure,
                           channels_last=channels_last)
        return Passes(*(REGISTRY[n] for n in plan))
    if name not in REGISTRY:
        raise ValueError(
            f"{func}: algorithm must be 'auto' or one of {sorted(REGISTRY)}, but got {name!r}")
    reason = REGISTRY[name].supports(spec, dtype, torch.device(device))
    if reason is not None:
        raise ValueError(f"{func}: algorithm {name!r} does not support this configuration: "
                         f"{reason}")
    workspace.check(func, REGISTRY[name], workspace.seen_spec(spec), dtype, _needed(grads))
    return Passes.of(REGISTRY[name])


def report() -> str:
    """The shipped fits (date, thread count, shapes, how often the choice is within 10% of
    the fastest) and each algorithm's measured error, as text."""
    lines = []
    for threads, model in sorted(cost_models().items()):
        lines.append(f"cost model: fitted {model.get('date', 'never')} on {threads} "
                     f"thread(s), {model.get('grid_shapes', 0)} shapes")
        for pass_, q in model.get("quality", {}).items():
            lines.append(f"  {pass_:12s} auto within 10% of the fastest: in-sample "
                         f"{q['in_sample'][0]}/{q['in_sample'][1]}, leave-one-out "
                         f"{q['leave_one_out'][0]}/{q['leave_one_out'][1]}")
    for name, e in cost_model()["errors"].items():
        lines.append(f"error {name:10s} float32 {e['float32']:.1e}  float64 {e['float64']:.1e}")
    return "\n".join(lines)

