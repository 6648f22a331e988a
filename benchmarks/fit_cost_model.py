"""Fit dispatch's cost model: time every "auto" algorithm on a grid, write cost_model.json.

For each grid shape and each registered algorithm that "auto" may use and that supports
it, the script measures the forward and the forward + backward time (float32, 2 threads;
algorithms timed round-robin, the minimum of 5 rounds kept: robust to other processes on
a shared machine) and the float32 / float64 error against float64 ``F.conv2d``. Per
algorithm and pass it fits non-negative weights of ``dispatch.cost_features`` (the
algorithm's own ``cost()`` estimate, FLOPs per output row segment, input and output bytes,
a per-call constant) minimising the squared relative error, writes
``src/convforge/cost_model.json``
and prints how often the fitted choice is within 10% of the fastest algorithm, in-sample and
leave-one-out (each shape predicted by constants fitted without it).

Usage: ``python benchmarks/fit_cost_model.py [--quick] [--dry-run]``
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

import convforge  # noqa: E402
from convforge import dispatch  # noqa: E402
from convforge.algorithms import REGISTRY  # noqa: E402

OUT = Path(dispatch.__file__).with_name("cost_model.json")

# (label, input shape, weight shape, conv2d kwargs)
GRID = [
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
]
QUICK = [g for g in GRID if g[0] in ("dense3 32x32 n2", "1x1 256->256 14", "lenet 6->16",
                                     "dw3 64x56", "img 5x5 512")]


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


def measure(grid, log=print, rounds=5, slow=1.0):
    """Rows ``{label, algo, raw_cost, fwd_s, train_s, err32, err64}`` for every pair.

    The algorithms of one shape are timed round-robin (``rounds`` rounds after a warm-up,
    the minimum kept), so a burst of load from other processes hits all of them alike;
    passes slower than ``slow`` seconds are timed in the first round only.
    """
    rows = []
    for label, xs, ws, kw in grid:
        spec = _spec(xs, ws, kw)
        x, w = torch.randn(xs), torch.randn(ws)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        names = [n for n, a in REGISTRY.items() if a.auto
                 and a.supports(spec, torch.float32, torch.device("cpu")) is None]
        passes = {}
        for name in names:
            def forward(n=name, x=x, w=w, kw=kw):
                convforge.conv2d(x, w, algorithm=n, **kw)

            def train(n=name, xg=xg, wg=wg, kw=kw):
                y = convforge.conv2d(xg, wg, algorithm=n, **kw)
                y.backward(torch.ones_like(y))
            passes[(name, "fwd_s")], passes[(name, "train_s")] = forward, train
        for fn in passes.values():                    # warm-up (and Numba compiles)
            fn()
        best = {key: _once(fn) for key, fn in passes.items()}
        for _ in range(rounds):
            for key, fn in passes.items():
                if best[key] < slow:
                    best[key] = min(best[key], _once(fn))
        for name in names:
            row = dict(label=label, algo=name,
                       raw_cost=REGISTRY[name].cost(spec, torch.float32, torch.device("cpu")),
                       fwd_s=best[(name, "fwd_s")], train_s=best[(name, "train_s")],
                       err32=_error(name, x, w, kw, torch.float32),
                       err64=_error(name, x, w, kw, torch.float64)
                       if spec.flops() < 3e8 else None)
            rows.append(row)
            log(f"{label:22s} {name:9s} fwd {row['fwd_s'] * 1e3:9.2f} ms  fwd+bwd "
                f"{row['train_s'] * 1e3:9.2f} ms  err32 {row['err32']:.1e}")
    return rows


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


_SPECS = {}


def _features(r):
    if r["label"] not in _SPECS:
        _SPECS.update({label: _spec(xs, ws, kw) for label, xs, ws, kw in GRID})
    return dispatch.cost_features(_SPECS[r["label"]], r["raw_cost"])


def _pick(group, table):
    def pred(r):
        coef = table.get(r["algo"], {"coef": [1.0, 0, 0, 0, 0]})["coef"]
        return float(np.dot(coef, _features(r)))
    return min(group, key=pred)


def quality(rows, key, loo=True):
    """Fraction of grid shapes where the model's pick is within 10% of the fastest."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    hits = 0
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        table = fit([r for r in rows if r["label"] != label] if loo else rows, key)
        best = min(r[key] for r in group)
        hits += _pick(group, table)[key] <= 1.1 * best
    return hits, len(labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="five small shapes")
    parser.add_argument("--dry-run", action="store_true", help="do not write the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    t0 = time.time()
    rows = measure(QUICK if args.quick else GRID)
    model = {"threads": THREADS, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "grid_shapes": len({r["label"] for r in rows})}
    for key, table in (("fwd_s", "forward"), ("train_s", "train")):
        model[table] = fit(rows, key)
        h_in, n = quality(rows, key, loo=False)
        h_loo, _ = quality(rows, key, loo=True)
        model[f"quality_{table}"] = {"in_sample": [h_in, n], "leave_one_out": [h_loo, n]}
        print(f"{table:8s} auto within 10% of the fastest: in-sample {h_in}/{n} "
              f"({100 * h_in / n:.0f}%), leave-one-out {h_loo}/{n} ({100 * h_loo / n:.0f}%)")
    errors = {}
    for r in rows:
        e = errors.setdefault(r["algo"], {"float32": 0.0, "float64": 0.0})
        e["float32"] = max(e["float32"], r["err32"])
        if r["err64"] is not None:
            e["float64"] = max(e["float64"], r["err64"])
    model["errors"] = errors
    model["measurements"] = rows
    for name, e in errors.items():
        print(f"error {name:9s} float32 {e['float32']:.1e}  float64 {e['float64']:.1e}")
    if not args.dry_run:
        OUT.write_text(json.dumps(model, indent=1) + "\n")
        print(f"wrote {OUT} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
