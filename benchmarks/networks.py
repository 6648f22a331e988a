"""Whole networks, torch's convolutions against convforge's: a training step and inference.

Each model of ``benchmarks/models.py`` is built with ``torch.nn.Conv2d`` (seeded); a copy
is converted with ``convforge.nn.convert`` (the same weights) and another copy is moved to
channels_last (torch's NHWC path, with a channels_last input). The script first checks
that the converted model agrees with torch's (outputs, and every gradient of one training
step; float32, tolerance scaled by the magnitude), then times, round-robin (one run of each
variant per round, medians):

* train step: ``zero_grad``, forward, cross-entropy, backward, SGD step (``train()`` mode);
* inference: forward under ``torch.no_grad()`` (``eval()`` mode);

(The agreement check: float64 outputs and gradients to 1e-9; float32 eval outputs to 1e-3
of their magnitude, float32 gradients within 10x the difference between torch's own NCHW
and channels_last models, as rounding differences grow through BatchNorm in training.)

and prints median ms, the ratio of convforge to torch NCHW and to torch channels_last, and
the algorithm each convforge layer used in each (``"torch"``, or ``forward/grad_input/
grad_weight`` when the passes differ).

Usage::

    python benchmarks/networks.py [--quick] [--json PATH] [--only NAME[,NAME]]

``--quick``: the four 32x32 networks at batch 32, fewer runs (about a minute); the full
run adds ResNet-18 and MobileNetV2 on 224x224 inputs at batch 8. Threads: 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, round_robin_ms  # noqa: E402
from models import MODELS  # noqa: E402

import convforge  # noqa: E402

SMALL = ["lenet", "resnet_cifar", "mobilenet_v2_cifar", "convnext_cifar"]
LARGE = ["resnet18", "mobilenet_v2"]
BATCH = {"lenet": 32, "resnet_cifar": 32, "mobilenet_v2_cifar": 32, "convnext_cifar": 32,
         "resnet18": 8, "mobilenet_v2": 8}
_CL = torch.channels_last


def variants(name, seed=0):
    """(torch model, convforge model, torch channels_last model, input, labels)."""
    build, sample = MODELS[name]
    torch.manual_seed(seed)
    model = build()
    ours = convforge.nn.convert(copy.deepcopy(model))
    cl = copy.deepcopy(model).to(memory_format=_CL)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH[name], *sample, generator=gen)
    classes = model[-1].out_features
    y = torch.randint(0, classes, (BATCH[name],), generator=gen)
    return model, ours, cl, x, y


def _error(a, b):
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _grads(model, x, y, fmt=torch.contiguous_format):
    model = copy.deepcopy(model).train()
    F.cross_entropy(model(x.contiguous(memory_format=fmt)), y).backward()
    return [p.grad for p in model.parameters()]


def check(model, ours, cl, x, y):
    """Outputs and every gradient of one training step agree with torch's.

    In float64 to 1e-9 (the computation itself). In float32, rounding differences grow
    through the BatchNorm layers of a training step, so each gradient may differ from
    torch's by at most 10x as much as torch's own channels_last model differs (or 2e-3 of
    its magnitude; transform-domain algorithms round 10x more by design).
    """
    with torch.no_grad():
        if _error(copy.deepcopy(ours).eval()(x), copy.deepcopy(model).eval()(x)) > 1e-3:
            return "float32 eval outputs differ"
    reference, ours_g = _grads(model, x, y), _grads(ours, x, y)
    for (name, _), r, o, c in zip(model.named_parameters(), reference, ours_g,
                                  _grads(cl, x, y, _CL), strict=True):
        if _error(o, r) > max(2e-3, 10 * _error(c, r)):
            return (f"float32 gradient of {name}: error {_error(o, r):.1e}, torch's "
                    f"channels_last {_error(c, r):.1e}")
    model64, ours64, x64 = copy.deepcopy(model).double(), copy.deepcopy(ours).double(), x.double()
    for (name, _), r, o in zip(model.named_parameters(), _grads(model64, x64, y),
                               _grads(ours64, x64, y), strict=True):
        if _error(o, r) > 1e-9:
            return f"float64 gradient of {name}: error {_error(o, r):.1e}"
    return None


def train_step(model, x, y, fmt=torch.contiguous_format):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xin = x.contiguous(memory_format=fmt)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xin), y).backward()
        opt.step()
    return step


def inference(model, x, fmt=torch.contiguous_format):
    xin = x.contiguous(memory_format=fmt)

    def run():
        with torch.no_grad():
            model(xin)
    return run


def layer_plans(ours):
    """(layer name, input shape, train plan, inference plan) of every convforge layer."""
    out = []
    for name, layer in ours.named_modules():
        if isinstance(layer, convforge.nn.Conv2d):
            plans = layer.plans()
            train = [v for (_, g), v in plans.items() if any(g)]
            infer = [v for (_, g), v in plans.items() if not any(g)]
            shape = next(iter(plans))[0] if plans else ()
            out.append((name, shape, train[0] if train else "-", infer[0] if infer else "-"))
    return out


def _rounds(quick):
    """Timing limits per variant: full runs take at least 11 runs and 4 s (up to 201 runs
    of a small model), since a whole model's time varies by several percent run to run."""
    if quick:
        return dict(min_time=0.5, max_runs=9, min_runs=5, budget=6)
    return dict(min_time=4.0, max_runs=201, min_runs=11, budget=25)


def bench(name, quick=False, log=print):
    model, ours, cl, x, y = variants(name)
    problem = check(model, ours, cl, x, y)
    if problem:
        raise SystemExit(f"networks: {name}: convforge and torch disagree: {problem}")
    for m in (model, ours, cl):
        m.train()
    fns = {("torch", "train"): train_step(model, x, y),
           ("torch_cl", "train"): train_step(cl, x, y, _CL),
           ("convforge", "train"): train_step(ours, x, y)}
    for f in list(fns.values()):                       # plans, compiles, allocator
        f()
        f()
    times = round_robin_ms(fns, **_rounds(quick))
    for m in (model, ours, cl):
        m.eval()
    inf = {("torch", "infer"): inference(model, x), ("torch_cl", "infer"): inference(cl, x, _CL),
           ("convforge", "infer"): inference(ours, x)}
    for f in list(inf.values()):
        f()
        f()
    times.update(round_robin_ms(inf, **_rounds(quick)))
    result = {"model": name, "batch": BATCH[name], "input": list(MODELS[name][1]),
              "layers": layer_plans(ours)}
    for kind in ("train", "infer"):
        t = {v: times[(v, kind)][0] for v in ("torch", "torch_cl", "convforge")}
        result[kind] = {**{f"{v}_ms": t[v] for v in t},
                        "x_torch": t["convforge"] / t["torch"],
                        "x_torch_cl": t["convforge"] / t["torch_cl"]}
    return result


def overhead(rounds=2000):
    """Median µs of a warm layer call on a 1x1x8x8 input (3x3 kernel): torch's, convforge's
    (no grad and with a weight gradient), timed in turns."""
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(1, 1, 3)
    ours = convforge.nn.convert(copy.deepcopy(theirs))
    x = torch.randn(1, 1, 8, 8)
    out = {}
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            fns = {"torch": lambda: theirs(x), "convforge": lambda: ours(x)}
            runs = {k: [] for k in fns}
            for f in fns.values():
                f()
            for _ in range(20):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    for _ in range(rounds // 20):
                        f()
                    runs[k].append((time.perf_counter() - t0) / (rounds // 20) * 1e6)
            out["grad" if grad else "no_grad"] = {k: sorted(v)[len(v) // 2]
                                                  for k, v in runs.items()}
    return out


def print_table(results, log=print):
    log(f"{'model':20s} {'pass':6s} {'torch ms':>9s} {'torch_cl':>9s} {'convforge':>10s} "
        f"{'x torch':>8s} {'x torch_cl':>10s}")
    for r in results:
        for kind, label in (("train", "train"), ("infer", "infer")):
            t = r[kind]
            log(f"{r['model']:20s} {label:6s} {t['torch_ms']:9.2f} {t['torch_cl_ms']:9.2f} "
                f"{t['convforge_ms']:10.2f} {t['x_torch']:8.2f} {t['x_torch_cl']:10.2f}")


def print_layers(results, log=print):
    for r in results:
        log(f"\n{r['model']} (batch {r['batch']}): algorithm per layer, train step | inference")
        for name, shape, train, infer in r["layers"]:
            log(f"  {name:28s} {str(tuple(shape)):20s} {train:32s} | {infer}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 32x32 networks, fewer runs")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--only", help="comma-separated model names")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    names = SMALL if args.quick else SMALL + LARGE
    if args.only:
        names = [n for n in args.only.split(",") if n]
        unknown = sorted(set(names) - set(MODELS))
        if unknown:
            parser.error(f"--only: unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    print(f"convforge {convforge.__version__}, torch {torch.__version__}, {THREADS} threads, "
          f"float32, {platform.machine()}")
    t0 = time.time()
    calls = overhead()
    for mode, t in calls.items():
        print(f"warm Conv2d call on 1x1x8x8 ({mode}): torch {t['torch']:.1f} us, convforge "
              f"{t['convforge']:.1f} us ({t['convforge'] / t['torch']:.2f}x)")
    results = [bench(n, args.quick) for n in names]
    print("every model: outputs and all gradients of a training step agree with torch's")
    print_table(results)
    print_layers(results)
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": THREADS, "torch": torch.__version__,
                                               "call_overhead_us": calls, "results": results},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
