"""Fit dispatch's cost model: time every "auto" algorithm's passes on a grid, write the JSON.

The grid is the layer shapes of real networks (``benchmarks/models.py``: LeNet,
ResNet-20, MobileNetV2 and ConvNeXt for 32x32 inputs at batch 1 and 32; ResNet-18 and
MobileNetV2 for 224x224 inputs at batch 1 and 8) plus 34 shapes of images, single layers,
tiny calls and the digits example, and the workloads of ``benchmarks/run.py``. For each
shape and each registered algorithm that "auto" may use and that supports it, the script
measures the forward pass, the input gradient and the weight gradient separately
(float32, 2 threads unless ``--threads``). Each algorithm is timed in short blocks of
runs, its steady state: interleaving single calls of all algorithms churns the allocator,
and torch's oneDNN scratch pads then fault in fresh pages on every call and look 2x
slower. Each timed run follows a small parallel torch op, as in a network (thread pools
in the state a layer finds them). The blocks of all algorithms run in turns and the
fastest is kept (robust to other processes on a shared machine); an algorithm 6x slower
than the best of a pass after its first block is not timed again, one whose warm-up took
12x the best is not timed at all.

Per algorithm and pass it fits non-negative weights of ``dispatch.cost_features``
minimising the squared relative error, and prints how often dispatch's rule
(``dispatch.choose``: the lowest prediction per pass, torch's kernel unless another is
``TORCH_MARGIN`` faster, for each pass and for the call as a whole) picks a plan within 10%
of the fastest, in-sample and leave-one-out (each shape predicted by the fit and the
measurements of all the others), per pass and for a training step (the three passes
together). Errors against float64 ``F.conv2d`` are measured on the smaller shapes.
Writes ``src/convforge/cost_model_t{threads}.json`` (fits, shapes, measurements, quality,
errors); dispatch uses the fit of the thread count nearest to torch's.

Usage: ``python benchmarks/fit_cost_model.py [--quick] [--dry-run] [--no-224] [--rows JSON]``
(about 10 minutes; ``--quick``: a few shapes, seconds; ``--rows``: re-fit the measurements
of a saved cost_model_t*.json without timing anything; ``--threads N``: torch's thread count
to fit, default 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS  # noqa: E402
from models import MODELS  # noqa: E402

import convforge  # noqa: E402
from convforge import dispatch  # noqa: E402
from convforge.algorithms import REGISTRY  # noqa: E402

OUT_DIR = Path(dispatch.__file__).parent
PASSES = dispatch.PASSES
_PRUNE = 6.0          # not timed again: this many times slower than the pass's best
_HOPELESS = 12.0      # not timed at all: its warm-up this many times the best warm-up
_SLOW = 0.5           # seconds: a pass this slow is timed once

# (label, input shape, weight shape, conv2d kwargs)
BASE = [
    ("dense3 64x56 n8", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ("dense3 128x28 n8", (8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1)),
    ("dense3 256x14 n8", (8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
    ("dense3 512x7 n8", (8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
    ("dense3 32x32 n2", (2, 32, 32, 32), (32, 32, 3, 3), dict(padding=1)),
    ("dense3 16x32 n32", (32, 16, 32, 32), (16, 16, 3, 3), dict(padding=1)),
    ("dense3 3->16 32 n16", (16, 3, 32, 32), (16, 3, 3, 3), dict(padding=1)),
    ("dense3 s2 64->128", (8, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2)),
    ("dense3 d2 32", (4, 32, 32, 32), (32, 32, 3, 3), dict(padding=2, dilation=2)),
    ("1x1 64->256 56", (8, 64, 56, 56), (256, 64, 1, 1), {}),
    ("1x1 256->256 14", (8, 256, 14, 14), (256, 256, 1, 1), {}),
    ("1x1 s2 256->512 28", (4, 256, 28, 28), (512, 256, 1, 1), dict(stride=2)),
    ("stem 7x7 s2 224", (8, 3, 224, 224), (64, 3, 7, 7), dict(padding=3, stride=2)),
    ("stem 5x5 32", (32, 3, 32, 32), (32, 3, 5, 5), dict(padding=2)),
    ("lenet 1->6", (256, 1, 28, 28), (6, 1, 5, 5), dict(padding=2)),
    ("lenet 6->16", (256, 6, 14, 14), (16, 6, 5, 5), {}),
    ("dw3 64x56", (8, 64, 56, 56), (64, 1, 3, 3), dict(padding=1, groups=64)),
    ("dw7 96x56", (8, 96, 56, 56), (96, 1, 7, 7), dict(padding=3, groups=96)),
    ("dw5 256x14", (8, 256, 14, 14), (256, 1, 5, 5), dict(padding=2, groups=256)),
    ("dw31 128x28", (2, 128, 28, 28), (128, 1, 31, 31), dict(padding=15, groups=128)),
    ("img 3x3 512", (1, 1, 512, 512), (1, 1, 3, 3), dict(padding=1)),
    ("img 5x5 512", (1, 1, 512, 512), (1, 1, 5, 5), dict(padding=2)),
    ("img 15x15 512", (1, 1, 512, 512), (1, 1, 15, 15), dict(padding=7)),
    ("img 31x31 512", (1, 1, 512, 512), (1, 1, 31, 31), dict(padding=15)),
    ("rgb 5x5 dw 256", (4, 3, 256, 256), (3, 1, 5, 5), dict(padding=2, groups=3)),
    ("grouped 4 64x28", (8, 64, 28, 28), (64, 16, 3, 3), dict(padding=1, groups=4)),
    # tiny calls, where the per-call cost decides
    ("tiny 1x8x8 3x3", (1, 1, 8, 8), (1, 1, 3, 3), {}),
    ("tiny 4x16x16 3x3", (1, 4, 16, 16), (4, 4, 3, 3), dict(padding=1)),
    ("tiny dw 8x8x8 3x3", (1, 8, 8, 8), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("tiny 3->6 12x12 5x5 n2", (2, 3, 12, 12), (6, 3, 5, 5), dict(padding=2)),
    ("tiny 1x1 16x4x4", (1, 16, 4, 4), (16, 16, 1, 1), {}),
    ("small 16x16x16 3x3 n4", (4, 16, 16, 16), (16, 16, 3, 3), dict(padding=1)),
    # examples/train_digits.py's LeNet (16x16 digits, batch 32)
    ("digits 1->6 16 n32", (32, 1, 16, 16), (6, 1, 5, 5), dict(padding=2)),
    ("digits 6->16 8 n32", (32, 6, 8, 8), (16, 6, 5, 5), {}),
]
#: (model, batch sizes): the networks whose layers join the grid
NETWORKS = [("lenet", (1, 32)), ("resnet_cifar", (1, 32)), ("mobilenet_v2_cifar", (1, 32)),
            ("convnext_cifar", (1, 32)), ("resnet18", (1, 8)), ("mobilenet_v2", (1, 8))]
QUICK = ["dense3 32x32 n2", "1x1 256->256 14", "lenet 6->16", "dw3 64x56", "img 5x5 512"]


def run_workloads():
    """The workloads of ``benchmarks/run.py`` (2048x2048 images, single layers)."""
    from run import WORKLOADS

    return [(f"run.py {name}", xs, ws, kw) for name, (xs, ws, kw, _) in WORKLOADS.items()]


def network_layers(name, batch):
    """(label, input shape, weight shape, kwargs) of every distinct Conv2d of a model."""
    build, sample = MODELS[name]
    model, seen = build(), {}

    def hook(layer, inputs, _):
        kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
        key = (tuple(inputs[0].shape), tuple(layer.weight.shape), tuple(sorted(kw.items())))
        if key not in seen:
            kind = "dw" if layer.groups == layer.in_channels > 1 else "conv"
            seen[key] = (f"{name} n{batch} {kind}{layer.kernel_size[0]} s{layer.stride[0]} "
                         f"{layer.in_channels}->{layer.out_channels}@{inputs[0].shape[-1]}",
                         key[0], key[1], kw)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(batch, *sample))
    for h in handles:
        h.remove()
    return list(seen.values())


def grid(include_224=True):
    """BASE and the distinct layer shapes of NETWORKS (a shape two models share, once)."""
    out = []
    seen = set()
    for label, xs, ws, kw in BASE + run_workloads():
        key = (xs, ws, tuple(sorted(kw.items())))
        if key not in seen:
            seen.add(key)
            out.append((label, xs, ws, kw))
    for name, batches in NETWORKS:
        if MODELS[name][1][-1] > 32 and not include_224:
            continue
        for batch in batches:
            for label, xs, ws, kw in network_layers(name, batch):
                key = (xs, ws, tuple(sorted(kw.items())))
                if key not in seen:
                    seen.add(key)
                    out.append((label, xs, ws, kw))
    return out


def _spec(xs, ws, kw):
    return convforge.make_spec("conv2d", xs, ws, **kw)


def _error(name, x, w, kw, dtype):
    y = convforge.conv2d(x.to(dtype), w.to(dtype), algorithm=name, **kw)
    ref = F.conv2d(x.double(), w.double(), **kw)
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


def _once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_CONTEXT = (torch.zeros(1 << 18), torch.zeros(1 << 18))


def _in_context(fn):
    """One timed run right after a small parallel torch op (untimed), as a layer of a
    network runs after a BatchNorm or an activation: torch's OpenMP threads are awake and
    spinning, Numba's asleep. (Back-to-back runs of one algorithm hide what switching
    between thread pools costs it: winograd's backward looked 10% faster than torch's on
    ResNet-18's 28x28 layers and made the model 3% slower.)"""
    torch.add(_CONTEXT[0], 1.0, out=_CONTEXT[1])
    return _once(fn)


def _block(fn, runs):
    """The fastest of ``runs`` runs in context after one untimed run: the algorithm's
    steady state (its allocations reused), not the allocator churn that interleaving
    every call with other algorithms' buffers causes."""
    fn()
    return min(_in_context(fn) for _ in range(runs))


def _pass_fns(name, spec):
    """The three passes of one algorithm on random operands, as conv2d hands them over."""
    algo = REGISTRY[name]
    aspec, x, w, g = dispatch._random_operands(spec, torch.float32, torch.device("cpu"),
                                               (algo,))
    # the forward's output in the input's (NCHW) layout, as a call returns it
    return {"forward": lambda: algo.forward(x, w, aspec).contiguous(),
            "grad_input": lambda: algo.grad_input(g, w, aspec, tuple(x.shape)),
            "grad_weight": lambda: algo.grad_weight(x, g, aspec, spec.weight_shape)}


def warm_up():
    """Compile every Numba kernel once (small shapes), so that no timing includes it."""
    for _, xs, ws, kw in [BASE[4], BASE[7], BASE[14], BASE[16], BASE[20], BASE[25]]:
        small = (1, xs[1], min(xs[2], 20), min(xs[3], 20))
        spec = _spec(small, ws, kw)
        for name, algo in REGISTRY.items():
            if algo.auto and algo.supports(spec, torch.float32, torch.device("cpu")) is None:
                for fn in _pass_fns(name, spec).values():
                    fn()


def measure(shapes, log=print, rounds=2):
    """Rows ``{label, algo, raw_cost, forward, grad_input, grad_weight, err32, err64}``."""
    rows = []
    cpu = torch.device("cpu")
    for label, xs, ws, kw in shapes:
        spec = _spec(xs, ws, kw)
        names = [n for n, a in REGISTRY.items()
                 if a.auto and a.supports(spec, torch.float32, cpu) is None]
        fns = {n: _pass_fns(n, spec) for n in names}
        best = {}
        for pass_ in PASSES:
            warm = {n: _once(fns[n][pass_]) for n in names}
            top = min(warm.values())
            t = {n: _block(fns[n][pass_], 1) if warm[n] <= _HOPELESS * top else warm[n]
                 for n in names}
            top = min(t.values())
            active = [n for n in names if t[n] <= _PRUNE * top and t[n] < _SLOW]
            for _ in range(rounds):
                for n in active:
                    t[n] = min(t[n], _block(fns[n][pass_], 3))
            best[pass_] = t
        x, w = torch.randn(xs), torch.randn(ws)
        for n in names:
            row = dict(label=label, algo=n, raw_cost=REGISTRY[n].cost(spec, torch.float32, cpu),
                       **{p: best[p][n] for p in PASSES},
                       err32=_error(n, x, w, kw, torch.float32) if spec.flops() < 3e9 else None,
                       err64=_error(n, x, w, kw, torch.float64) if spec.flops() < 3e8 else None)
            rows.append(row)
        log(f"{label:44s} " + "  ".join(
            f"{p[:6]} {min(best[p], key=best[p].get):9s}{min(best[p].values()) * 1e3:8.2f} ms"
            f" (torch {best[p].get('torch', math.nan) * 1e3:7.2f})" for p in PASSES))
    return rows


_SPECS: dict = {}


def _features(r):
    return dispatch.cost_features(_SPECS[r["label"]], r["raw_cost"])


def fit(rows, key):
    """Per algorithm, non-negative weights of :func:`dispatch.cost_features` minimising the
    squared *relative* error of the predicted seconds; ``{name: {"coef": [...]}}``."""
    out = {}
    for name in sorted({r["algo"] for r in rows}):
        pts = [r for r in rows if r["algo"] == name and r["raw_cost"] > 0
               and math.isfinite(r["raw_cost"])]
        if not pts:
            continue
        a = np.array([_features(r) for r in pts])
        t = np.array([r[key] for r in pts])
        coef, _ = nnls(a / t[:, None], np.ones(len(t)))
        if not coef.any():                        # degenerate: keep the raw cost
            coef[0] = 1.0
        out[name] = {"coef": [float(c) for c in coef]}
    return out


def model_of(rows, shapes):
    """The cost model dispatch reads: fits per pass, the shapes and the measurements."""
    model = {p: fit(rows, p) for p in PASSES}
    labels = {r["label"] for r in rows}
    model["shapes"] = {k: v for k, v in shapes.items() if k in labels}
    model["measurements"] = rows
    return model


def _plan(group, predictor, keys):
    """dispatch's rule (dispatch.choose) for the passes ``keys`` of one shape."""
    spec = _SPECS[group[0]["label"]]
    names = [r["algo"] for r in group]
    plan = dispatch.choose(names, ("forward",) + tuple(k for k in keys if k != "forward"),
                           lambda n, p: predictor.seconds(n, spec, pass_=p))
    by_name = {r["algo"]: r for r in group}
    return {k: by_name[plan[PASSES.index(k)]] for k in keys}


def quality(rows, shapes, keys, loo=True):
    """Shapes where dispatch's plan for ``keys`` (passes; a training step also pays the
    forward pass) is within 10% of the fastest, with the predictor fitted on every shape
    (in-sample) or on all the others (leave-one-out)."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    full = None if loo else dispatch.Predictor(model_of(rows, shapes))
    hits, misses = 0, []
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        predictor = full or dispatch.Predictor(
            model_of([r for r in rows if r["label"] != label], shapes))
        plan = _plan(group, predictor, keys)
        chosen = sum(plan[k][k] for k in keys)
        best = sum(min(r[k] for r in group) for k in keys)
        torch_t = sum(r[k] for r in group if r["algo"] == "torch" for k in keys)
        if chosen <= 1.1 * best:
            hits += 1
        else:
            misses.append((label, chosen / best, chosen / torch_t if torch_t else math.nan))
    return hits, len(labels), misses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="five small shapes")
    parser.add_argument("--dry-run", action="store_true", help="do not write the JSON")
    parser.add_argument("--no-224", action="store_true", help="leave out the 224x224 models")
    parser.add_argument("--rows", help="re-fit saved measurements (a cost_model_t*.json)")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads to fit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    shapes = grid(include_224=not args.no_224)
    if args.quick:
        shapes = [s for s in shapes if s[0] in QUICK]
    if args.rows:                               # every shape, as the saved rows may hold
        shapes = grid()
    _SPECS.update({label: _spec(xs, ws, kw) for label, xs, ws, kw in shapes})
    shape_table = {label: [xs, ws, kw] for label, xs, ws, kw in shapes}
    if args.rows:
        rows = json.loads(Path(args.rows).read_text())["measurements"]
    else:
        warm_up()
        rows = measure(shapes)
    model = {"threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "grid_shapes": len({r["label"] for r in rows}), "quality": {}}
    model.update(model_of(rows, shape_table))
    for name, keys in [(p, (p,)) for p in PASSES] + [("train step", PASSES)]:
        h_in, n, _ = quality(rows, shape_table, keys, loo=False)
        h_loo, _, misses = quality(rows, shape_table, keys, loo=True)
        model["quality"][name] = {"in_sample": [h_in, n], "leave_one_out": [h_loo, n],
                                  "misses": misses}
        print(f"{name:12s} auto within 10% of the fastest: in-sample {h_in}/{n} "
              f"({100 * h_in / n:.0f}%), leave-one-out {h_loo}/{n} ({100 * h_loo / n:.0f}%)")
        for label, vs_best, vs_torch in misses:
            print(f"    miss: {label:44s} {vs_best:5.2f}x the fastest, {vs_torch:5.2f}x torch")
    errors = {}
    for r in rows:
        e = errors.setdefault(r["algo"], {"float32": 0.0, "float64": 0.0})
        for key, dtype in (("err32", "float32"), ("err64", "float64")):
            if r[key] is not None:
                e[dtype] = max(e[dtype], r[key])
    model["errors"] = errors
    for name, e in errors.items():
        print(f"error {name:10s} float32 {e['float32']:.1e}  float64 {e['float64']:.1e}")
    if not args.dry_run:
        out = OUT_DIR / f"cost_model_t{args.threads}.json"
        out.write_text(json.dumps(model, indent=1) + "\n")
        print(f"wrote {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
