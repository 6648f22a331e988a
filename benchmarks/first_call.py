"""The first call in a fresh process: convforge's against torch's, with an empty and with a
full Numba cache.

Each row is its own Python process (1 thread): import, then the first call of a workload,
then the second, then (auto only) the call after the background compilation finished.
"empty cache" points ``NUMBA_CACHE_DIR`` at a new directory; "full cache" at one that a
first run filled. torch's row calls ``F.conv2d``.

Usage::

    python benchmarks/first_call.py [--quick]

``--quick``: the image workload only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

WORKLOADS = {  # name: (input shape, weight shape, padding)
    "image 1024^2 5x5": ((1, 1, 1024, 1024), (1, 1, 5, 5), 2),
    "layer 32x16x32^2 3x3": ((32, 16, 32, 32), (16, 16, 3, 3), 1),
    "depthwise 8x64x56^2 3x3": ((8, 64, 56, 56), (64, 1, 3, 3), 1),
}

_CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    xs, ws, pad, who = json.loads(sys.argv[1])
    groups = xs[1] // ws[1]
    x, w = torch.randn(xs), torch.randn(ws)
    out = {}
    if who == "torch":
        out["import"] = time.perf_counter() - t0
        call = lambda: F.conv2d(x, w, padding=pad, groups=groups)
    else:
        import convforge
        from convforge import _compile
        out["import"] = time.perf_counter() - t0
        call = lambda: convforge.conv2d(x, w, padding=pad, groups=groups, algorithm=who)
    for key in ("first", "second"):
        t = time.perf_counter()
        call()
        out[key] = time.perf_counter() - t
    if who == "auto":
        spec = convforge.make_spec("conv2d", xs, ws, padding=pad, groups=groups)
        out["plan"] = "/".join(dict.fromkeys(convforge.choose_plan(spec)))
        t = time.perf_counter()
        _compile.wait()
        out["background"] = time.perf_counter() - t
        call()
        t = time.perf_counter()
        call()
        out["after"] = time.perf_counter() - t
        out["plan after"] = "/".join(dict.fromkeys(convforge.choose_plan(spec)))
    print(json.dumps(out))
""")


def run(workload, who, cache_dir) -> dict:
    xs, ws, pad = WORKLOADS[workload]
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([xs, ws, pad, who])],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"first_call: {workload} {who} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the image workload only")
    args = parser.parse_args(argv)
    names = list(WORKLOADS)[:1] if args.quick else list(WORKLOADS)
    print(f"{'workload':24s} {'cache':6s} {'call':8s} {'import s':>8s} {'first s':>8s} "
          f"{'second s':>8s}  after the background compilation")
    with tempfile.TemporaryDirectory() as root:
        full = os.path.join(root, "full")
        subprocess.run([sys.executable, "-c", "import convforge; convforge.warmup()"],
                       env=dict(os.environ, NUMBA_CACHE_DIR=full), capture_output=True,
                       timeout=1800, check=True)                 # fills the "full" cache
        for name in names:
            for cache, whos in (("empty", ("torch", "auto", "direct")),
                                ("full", ("auto", "direct"))):
                for who in whos:
                    cache_dir = tempfile.mkdtemp(dir=root) if cache == "empty" else full
                    r = run(name, who, cache_dir)
                    extra = ""
                    if who == "auto":
                        extra = (f"  plan {r['plan']} -> {r['plan after']}: ready after "
                                 f"{r['background']:.1f} s more, then {r['after']:.3f} s")
                    print(f"{name:24s} {cache:6s} {who:8s} {r['import']:8.2f} "
                          f"{r['first']:8.3f} {r['second']:8.3f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
