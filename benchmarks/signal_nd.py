"""convforge's scipy-compatible N-D functions against scipy and torch (issue 12).

Rows (float64, as scipy computes; every implementation checked against scipy's result
first, then all timed in turns, medians; ``x best`` = our ms / the fastest competitor's):

* ``audio``: a 1 x 10**7-sample signal and a 255-tap filter, full convolution:
  ``convforge.convolve`` (auto) vs scipy's ``oaconvolve``, ``fftconvolve``, ``convolve``
  (auto) and torch's ``F.conv1d`` (float64, the flipped filter, zero padding);
* ``image``: a 2048 x 2048 image and a 15 x 15 kernel, ``convforge.ndimage.correlate`` vs
  ``scipy.ndimage.correlate`` (mode reflect);
* ``volume``: a 64^3 volume and a 5^3 kernel, ``convforge.correlate`` (auto, 'same') vs
  scipy's ``correlate`` (auto).

Then the quality of ``choose_conv_method``: over a grid of 1-D, 2-D and 3-D shapes, both
of our methods are timed in turns and the choice's time is divided by the faster one's
(1.00 = the faster was chosen); the summary gives the geometric mean and the worst.

Usage::

    python benchmarks/signal_nd.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, round_robin_ms, write_json  # noqa: E402

import convforge  # noqa: E402


def _rows(quick):
    rng = np.random.default_rng(0)
    n = 10 ** 5 if quick else 10 ** 7
    x, h = rng.standard_normal(n), rng.standard_normal(255)
    xt = F.pad(torch.from_numpy(x), (254, 254))[None, None]
    ht = torch.from_numpy(h[::-1].copy())[None, None]
    audio = {
        "convforge.convolve": lambda: convforge.convolve(x, h),
        "scipy.oaconvolve": lambda: signal.oaconvolve(x, h),
        "scipy.fftconvolve": lambda: signal.fftconvolve(x, h),
        "scipy.convolve": lambda: signal.convolve(x, h),
        "torch.conv1d": lambda: F.conv1d(xt, ht)[0, 0].numpy(),
    }
    side = 256 if quick else 2048
    img, k = rng.standard_normal((side, side)), rng.standard_normal((15, 15))
    image = {
        "convforge.ndimage.correlate": lambda: convforge.ndimage.correlate(img, k),
        "scipy.ndimage.correlate": lambda: ndimage.correlate(img, k),
    }
    cube = 24 if quick else 64
    vol, k3 = rng.standard_normal((cube,) * 3), rng.standard_normal((5, 5, 5))
    volume = {
        "convforge.correlate": lambda: convforge.correlate(vol, k3, "same"),
        "scipy.correlate": lambda: signal.correlate(vol, k3, "same"),
    }
    return [(f"audio 1x{n} * 255 taps", audio, "scipy.oaconvolve"),
            (f"image {side}^2 * 15x15", image, "scipy.ndimage.correlate"),
            (f"volume {cube}^3 * 5^3", volume, "scipy.correlate")]


def _choose_grid(quick):
    if quick:
        return [((1000,), (3,)), ((1000,), (255,)), ((64, 64), (3, 3)), ((64, 64), (15, 15)),
                ((16, 16, 16), (5, 5, 5))]
    grid = [((n,), (m,)) for n in (100, 1000, 10_000, 100_000) for m in (3, 15, 63, 255)
            if m < n]
    grid += [((n, n), (m, m)) for n in (32, 128, 512) for m in (3, 7, 15, 31) if m < n]
    grid += [((n,) * 3, (m,) * 3) for n in (16, 48) for m in (3, 5, 9)]
    return grid


def _choose_quality(quick, timing):
    """Rows of (shapes, direct ms, fft ms, choice, slowdown of the choice)."""
    if not quick:                       # compiled once per process: not part of a call
        convforge.warmup(["direct"], [torch.float64])
    rng = np.random.default_rng(1)
    head = f"{'in1':>16s} {'in2':>14s} {'direct ms':>10s} {'fft ms':>9s} {'chose':>7s} {'x':>6s}"
    print("\nchoose_conv_method (ours; full mode, float64): the choice's time / the faster's")
    print(head)
    print("-" * len(head))
    rows = []
    for s1, s2 in _choose_grid(quick):
        a, b = rng.standard_normal(s1), rng.standard_normal(s2)
        for method in ("direct", "fft"):          # a first call may wait for compiled code
            convforge.convolve(a, b, method=method)
        timed = round_robin_ms({m: (lambda m=m, a=a, b=b: convforge.convolve(a, b, method=m))
                                for m in ("direct", "fft")}, **timing)
        ms = {m: timed[m][0] for m in timed}
        choice = convforge.choose_conv_method(a, b)
        slow = ms[choice] / min(ms.values())
        print(f"{str(s1):>16s} {str(s2):>14s} {ms['direct']:10.3f} {ms['fft']:9.3f} "
              f"{choice:>7s} {slow:6.2f}", flush=True)
        rows.append(dict(case=f"choose {s1} * {s2}", impl="choose_conv_method",
                         ms=ms[choice], direct_ms=ms["direct"], fft_ms=ms["fft"],
                         choice=choice, x_best=slow, ok=True))
    slows = [r["x_best"] for r in rows]
    print(f"choose_conv_method: geometric mean {np.exp(np.mean(np.log(slows))):.2f}x the "
          f"faster method, worst {max(slows):.2f}x, within 10% in "
          f"{sum(x <= 1.1 for x in slows)}/{len(slows)} cases")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    print(f"convforge {convforge.__version__}, scipy "
          f"{__import__('scipy').__version__}, torch {torch.__version__}, {THREADS} threads, "
          f"float64")
    timing = dict(budget=1.0, min_time=0.0, max_runs=3) if args.quick else \
        dict(budget=20.0, min_time=2.0, max_runs=9)
    records, bad = [], []
    head = f"{'case':28s} {'implementation':30s} {'ms':>10s} {'runs':>5s} {'x best':>7s}  ok"
    print(head)
    print("-" * len(head))
    for case, fns, reference in _rows(args.quick):
        ref = fns[reference]()
        scale = max(1.0, float(np.abs(ref).max()))
        oks = {name: float(np.abs(np.asarray(fn()) - ref).max()) <= 1e-9 * scale
               for name, fn in fns.items()}
        timed = round_robin_ms(fns, **timing)
        best = min(ms for name, (ms, _) in timed.items() if not name.startswith("convforge"))
        for name, (ms, runs) in timed.items():
            ratio = ms / best
            print(f"{case:28s} {name:30s} {ms:10.2f} {runs:5d} {ratio:7.2f}  "
                  f"{'yes' if oks[name] else 'NO'}", flush=True)
            records.append(dict(case=case, impl=name, ms=ms, runs=runs, x_best=ratio,
                                ok=oks[name]))
            if not oks[name]:
                bad.append(f"{case}/{name}")
    print("all results agree" if not bad else "DISAGREE: " + ", ".join(bad))
    choose_timing = dict(budget=0.5, min_time=0.0, max_runs=3) if args.quick else \
        dict(budget=3.0, min_time=0.3, max_runs=9)
    records += _choose_quality(args.quick, choose_timing)
    if args.json:
        write_json(args.json, records)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
