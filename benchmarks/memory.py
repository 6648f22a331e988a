"""Peak memory per call: convforge ("auto" and every algorithm that supports the case)
beside torch's ``F.conv2d``, on large convolutions, under the default workspace limit.

Each row is its own Python process (2 threads, an address-space cap like ``prlimit --as``,
12 GiB by default): import, warm the compiled kernels on tiny tensors (so that "auto"
may choose any algorithm, as in a long-running process), make the operands, record the
resident set (``base``), run one call (forward, or forward + backward with the input's
and the weight's gradients), record the peak resident set (``ru_maxrss``). ``extra`` is
peak - base: what the call itself needed, its result included. "ratio" is the peak over
torch's peak in the same run. A call that fails (torch's "can't allocate" under the cap,
or a WorkspaceLimitError) is reported as such.

Usage::

    python benchmarks/memory.py                    # the issue's grid (long: ~30 min)
    python benchmarks/memory.py --quick            # small shapes, seconds
    python benchmarks/memory.py --cases A,D --algorithms torch,auto,fft --passes forward
    python benchmarks/memory.py --tiling           # the run.py grid, default vs no limit

``--tiling`` times the layer grid of ``benchmarks/run.py`` (forward + backward, "auto")
with the default limit and with no limit, in turns, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CASES = {  # key: (label, input shape, weight shape, padding, groups)
    "A": ("segmentation 1x64x1024^2, 64 7x7", (1, 64, 1024, 1024), (64, 64, 7, 7), 3, 1),
    "B": ("stem 1x3x4096^2, 64 7x7", (1, 3, 4096, 4096), (64, 3, 7, 7), 3, 1),
    "C": ("layer 8x256x128^2, 256 3x3", (8, 256, 128, 128), (256, 256, 3, 3), 1, 1),
    "D": ("image 1x1x16384^2, 31x31", (1, 1, 16384, 16384), (1, 1, 31, 31), 15, 1),
    "E": ("depthwise 1x96x2048^2, 7x7", (1, 96, 2048, 2048), (96, 1, 7, 7), 3, 96),
}
QUICK = {
    "a": ("1x16x256^2, 16 7x7", (1, 16, 256, 256), (16, 16, 7, 7), 3, 1),
    "d": ("image 1x1x1024^2, 31x31", (1, 1, 1024, 1024), (1, 1, 31, 31), 15, 1),
}
ALGORITHMS = ("torch", "auto", "torch_cl", "im2col", "fft", "direct", "depthwise", "shift",
              "winograd", "reference")

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    label, xs, ws, pad, groups, who, train, cap = json.loads(sys.argv[1])
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    import torch
    torch.set_num_threads(2)
    import torch.nn.functional as F
    out = {}
    if who != "torch":
        import convforge
        from convforge.algorithms import REGISTRY
        spec = convforge.make_spec("conv2d", xs, ws, padding=pad, groups=groups)
        if who != "auto" and REGISTRY[who].supports(spec, torch.float32,
                                                    torch.device("cpu")) is not None:
            print(json.dumps({"unsupported": True}))
            sys.exit(0)
        convforge.warmup([who] if who in convforge._compile.COMPILED else None,
                         [torch.float32])
        out["limit"] = convforge.get_workspace_limit()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=gen).requires_grad_(train)
    w = torch.randn(ws, generator=gen).requires_grad_(train)
    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) * 1024
    out["base"] = rss()
    t0 = time.perf_counter()
    try:
        if who == "torch":
            y = F.conv2d(x, w, padding=pad, groups=groups)
        else:
            y = convforge.conv2d(x, w, padding=pad, groups=groups, algorithm=who)
        if train:
            y.backward(torch.ones_like(y))
        out["seconds"] = time.perf_counter() - t0
        if who == "auto":
            from convforge import plan
            out["chose"] = list(plan._PLANS.values())[-1].label
    except (RuntimeError, MemoryError) as e:
        out["error"] = type(e).__name__ + ": " + str(e).split(chr(10))[0][:90]
    out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
""")


def run_case(case, who, train, cap):
    label, xs, ws, pad, groups = case
    arg = json.dumps([label, xs, ws, pad, groups, who, train, cap])
    proc = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:90]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(b):
    return f"{b / 2**20:8.0f}"


def memory_table(cases, algorithms, passes, cap) -> list[dict]:
    rows = []
    print(f"{'case':38s} {'pass':8s} {'algorithm':10s} {'peak MiB':>9s} {'base':>8s} "
          f"{'extra':>8s} {'x torch':>8s} {'s':>7s}  note", flush=True)
    for key, case in cases.items():
        for train in passes:
            torch_peak = None
            for who in algorithms:
                r = run_case(case, who, train, cap)
                if r.get("unsupported"):
                    continue
                r.update(case=key, label=case[0], algorithm=who,
                         passes="fwd+bwd" if train else "forward")
                rows.append(r)
                if "error" in r and "peak" not in r:
                    print(f"{case[0]:38s} {r['passes']:8s} {who:10s}  {r['error']}",
                          flush=True)
                    continue
                if who == "torch" and "error" not in r:
                    torch_peak = r["peak"]
                ratio = (f"{r['peak'] / torch_peak:8.2f}" if torch_peak and "error" not in r
                         else f"{'-':>8s}")
                secs = f"{r['seconds']:7.1f}" if "seconds" in r else f"{'-':>7s}"
                note = r.get("error") or (f"chose {r['chose']}" if "chose" in r else "")
                print(f"{case[0]:38s} {r['passes']:8s} {who:10s} {_mib(r['peak'])} "
                      f"{_mib(r['base'])} {_mib(r['peak'] - r['base'])} {ratio} {secs}  "
                      f"{note}", flush=True)
    return rows


def tiling_table() -> list[dict]:
    """The run.py layer grid, forward + backward through "auto": default limit vs none."""
    import torch
    from common import THREADS, round_robin_ms
    from run import WORKLOADS

    import convforge

    torch.set_num_threads(THREADS)
    convforge.warmup(dtypes=[torch.float32])
    rows = []
    print(f"{'workload':10s} {'pass':8s} {'default ms':>10s} {'no limit ms':>11s} "
          f"{'ratio':>6s}")
    for name, (xs, ws, kw, kind) in WORKLOADS.items():
        train = kind == "layer"
        x = torch.randn(xs, requires_grad=train)
        w = torch.randn(ws, requires_grad=train)

        def step(limit, x=x, w=w, kw=kw, train=train):
            def run():
                convforge.set_workspace_limit(limit)
                y = convforge.conv2d(x, w, **kw)
                if train:
                    y.sum().backward()
            return run
        t = round_robin_ms({"default": step(None), "none": step(1 << 62)})
        convforge.set_workspace_limit(None)
        ratio = t["default"][0] / t["none"][0]
        rows.append({"workload": name, "train": train, "default_ms": t["default"][0],
                     "none_ms": t["none"][0], "ratio": ratio})
        print(f"{name:10s} {'fwd+bwd' if train else 'forward':8s} {t['default'][0]:10.2f} "
              f"{t['none'][0]:11.2f} {ratio:6.2f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--cases", help="comma-separated keys of CASES (default: all)")
    parser.add_argument("--algorithms", help=f"comma-separated (default: {ALGORITHMS})")
    parser.add_argument("--passes", choices=["forward", "train", "both"], default="both")
    parser.add_argument("--cap", type=float, default=12.0,
                        help="address-space cap per process, GiB (0: none)")
    parser.add_argument("--tiling", action="store_true",
                        help="time the run.py grid with the default limit and with none")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.tiling:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        rows = tiling_table()
    else:
        cases = QUICK if args.quick else CASES
        if args.cases:
            cases = {k: cases[k] for k in args.cases.split(",")}
        algorithms = args.algorithms.split(",") if args.algorithms else list(ALGORITHMS)
        if args.quick and not args.algorithms:
            algorithms = ["torch", "auto", "im2col", "fft"]
        passes = {"forward": [False], "train": [True], "both": [False, True]}[args.passes]
        rows = memory_table(cases, algorithms, passes, int(args.cap * 2**30))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
