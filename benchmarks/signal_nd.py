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

Usage::

    python benchmarks/signal_nd.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, round_robin_ms  # noqa: E402

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
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
