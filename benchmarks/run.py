"""Benchmark convforge against torch, scipy and OpenCV on the workloads of issue 4.

For every workload it first checks that all implementations agree (float32, allclose to
torch's F.conv2d with a tolerance scaled by the output's magnitude; gradients too for
fwd+bwd), then times every implementation of the workload in turns (one run each per
round, so load from other processes hits all alike) and prints the median time of forward
(and forward + backward for layers): ms, GFLOP/s, percent of the torch.matmul peak
measured at start, and the ratio to every peer measured in the same run (``x torch`` =
our ms / torch's ms; below 1 is faster).

Usage::

    python benchmarks/run.py [--quick] [--json PATH] [--only NAME[,NAME]]

``--quick`` runs tiny versions of every workload in a few seconds (the smoke test, and
the issue-2 table of median ms per algorithm and ratio to torch). Threads: 2.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    THREADS,
    matmul_peak_gflops,
    our_algorithms,
    round_robin_ms,
    run_ours,
    write_json,
)

import convforge  # noqa: E402
from convforge import dispatch  # noqa: E402

try:  # optional peers
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None
try:
    from scipy import ndimage, signal
except ImportError:  # pragma: no cover
    ndimage = signal = None

# name: (input shape, weight shape, conv2d kwargs, kind, quick input, quick weight)
WORKLOADS = {
    "img3": ((1, 1, 2048, 2048), (1, 1, 3, 3), dict(padding=1), "image"),
    "img5": ((1, 1, 2048, 2048), (1, 1, 5, 5), dict(padding=2), "image"),
    "img15": ((1, 1, 2048, 2048), (1, 1, 15, 15), dict(padding=7), "image"),
    "img31": ((1, 1, 2048, 2048), (1, 1, 31, 31), dict(padding=15), "image"),
    "rgb5": ((16, 3, 512, 512), (3, 1, 5, 5), dict(padding=2, groups=3), "rgb"),
    "dense64": ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "layer"),
    "dense256": ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1), "layer"),
    "stem": ((8, 3, 224, 224), (64, 3, 7, 7), dict(padding=3, stride=2), "layer"),
    "pw1x1": ((8, 64, 56, 56), (256, 64, 1, 1), {}, "layer"),
    "dw7": ((8, 96, 56, 56), (96, 1, 7, 7), dict(padding=3, groups=96), "layer"),
    "dw31": ((8, 128, 28, 28), (128, 1, 31, 31), dict(padding=15, groups=128), "layer"),
    "lenet": ((256, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), "layer"),
}
QUICK = {
    "img3": ((1, 1, 96, 96), (1, 1, 3, 3)), "img5": ((1, 1, 96, 96), (1, 1, 5, 5)),
    "img15": ((1, 1, 64, 64), (1, 1, 15, 15)), "img31": ((1, 1, 64, 64), (1, 1, 31, 31)),
    "rgb5": ((2, 3, 32, 32), (3, 1, 5, 5)), "dense64": ((2, 8, 12, 12), (8, 8, 3, 3)),
    "dense256": ((2, 16, 6, 6), (16, 16, 3, 3)), "stem": ((2, 3, 24, 24), (8, 3, 7, 7)),
    "pw1x1": ((2, 8, 10, 10), (16, 8, 1, 1)), "dw7": ((2, 8, 12, 12), (8, 1, 7, 7)),
    "dw31": ((1, 4, 10, 10), (4, 1, 31, 31)), "lenet": ((8, 1, 28, 28), (6, 1, 5, 5)),
}
#: 3D workloads (issue 12): name -> (input, weight, conv3d kwargs, quick input, quick weight)
VOLUMES = {
    "dw3d3": ((8, 32, 32, 32, 32), (32, 1, 3, 3, 3), dict(padding=1, groups=32),
              (2, 4, 8, 8, 8), (4, 1, 3, 3, 3)),
    "dw3d7": ((8, 32, 32, 32, 32), (32, 1, 7, 7, 7), dict(padding=3, groups=32),
              (2, 4, 8, 8, 8), (4, 1, 7, 7, 7)),
    "conv3d": ((4, 16, 24, 24, 24), (32, 16, 3, 3, 3), dict(padding=1),
               (2, 4, 6, 6, 6), (8, 4, 3, 3, 3)),
}
#: algorithms predicted slower than this are not timed (they would take minutes)
_SKIP_SECONDS = 6.0


def _peers(name, x, w, kw, kind):
    """Forward-only and trainable peers: {label: (fn, trainable)}; fn returns NCHW tensor."""
    peers = {"torch": (lambda xx=x: F.conv2d(xx, w, **kw), True)}
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    w_cl = w.detach().contiguous(memory_format=torch.channels_last)
    peers["torch_cl"] = (lambda: F.conv2d(x_cl, w_cl, **kw), True)
    k = w[0, 0].detach().numpy()
    if kind == "image":
        img = x[0, 0].detach().numpy()
        if ndimage is not None:
            peers["scipy_ndimage"] = (
                lambda: torch.from_numpy(ndimage.correlate(img, k, mode="constant"))[None, None],
                False)
            peers["scipy_fft"] = (
                lambda: torch.from_numpy(
                    signal.fftconvolve(img, k[::-1, ::-1], mode="same"))[None, None], False)
        if cv2 is not None:
            peers["cv2"] = (lambda: torch.from_numpy(cv2.filter2D(
                img, -1, k, borderType=cv2.BORDER_CONSTANT))[None, None], False)
    if kind == "rgb" and cv2 is not None:
        imgs = [np.ascontiguousarray(im.permute(1, 2, 0).numpy()) for im in x.detach()]

        def per_image():
            out = [cv2.filter2D(im, -1, k, borderType=cv2.BORDER_CONSTANT) for im in imgs]
            return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        peers["cv2_loop"] = (per_image, False)
    return peers


def _check(y, ref):
    scale = max(1.0, ref.abs().max().item())
    return (y.double() - ref.double()).abs().max().item() <= 1e-3 * scale


def bench(name, quick=False, log=print):
    """Time one workload; returns the list of result records."""
    xs, ws, kw, kind = WORKLOADS[name]
    if quick:
        xs, ws = QUICK[name]
        if kw.get("groups", 1) > 1:                  # depthwise stays depthwise
            kw = dict(kw, groups=xs[1])
    torch.manual_seed(0)
    x = torch.randn(xs)
    w = torch.randn(ws)
    if kind in ("image", "rgb"):          # one kernel for every channel, as image filters do
        w = w[:1].expand(ws).contiguous()
    spec = convforge.make_spec("conv2d", xs, ws, **kw)
    flops = spec.flops()
    passes = ["fwd", "fwd+bwd"] if kind == "layer" else ["fwd"]
    ref = F.conv2d(x, w, **kw)
    peers = _peers(name, x, w, kw, kind)
    ours = ["auto"] + our_algorithms(spec)
    records, peer_ms = [], {}
    timing = dict(budget=0.5, min_time=0.0, max_runs=3) if quick else dict(budget=3.0)
    for pas in passes:
        train = pas == "fwd+bwd"
        pf = 3 * flops if train else flops
        fns, oks = {}, {}                         # label -> timed callable / agreement
        for label, (fn, trainable) in peers.items():
            if train and not trainable:
                continue
            oks[label] = _check(fn(), ref)
            if train:
                xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
                xg_cl = xg.detach().contiguous(memory_format=torch.channels_last)
                xg_cl.requires_grad_()
                src = xg_cl if label == "torch_cl" else xg

                def fn(src=src, wg=wg):
                    y = F.conv2d(src, wg, **kw)
                    y.backward(torch.ones_like(y))
            fns[label] = fn
        g_ref = None
        if train:
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            F.conv2d(xr, wr, **kw).backward(torch.ones_like(ref))
            g_ref = (xr.grad, wr.grad)
        for algo in ours:
            plan = dispatch.choose_plan(spec, torch.float32, "cpu", grads=(train, train)) \
                if algo == "auto" else (algo,) * 3
            used = plan if train else plan[:1]
            real = used[0] if len(set(used)) == 1 else "/".join(used)
            predicted = sum(dispatch.predicted_seconds(n, spec, pass_=p)
                            for n, p in zip(used, dispatch.PASSES))
            if not quick and predicted > _SKIP_SECONDS:
                log(f"{name:9s} {pas:8s} {algo:14s} skipped (predicted {predicted:.0f} s)")
                continue
            xg, wg = x.clone().requires_grad_(train), w.clone().requires_grad_(train)
            y = run_ours(algo, xg, wg, kw, train)
            ok = _check(y.detach(), ref)
            if train:
                ok = ok and _check(xg.grad, g_ref[0]) and _check(wg.grad, g_ref[1])
            label = f"auto={real}" if algo == "auto" else algo

            def fn(a=algo, xg=xg, wg=wg, t=train):
                with torch.set_grad_enabled(t):
                    run_ours(a, xg, wg, kw, t)
            fns[label], oks[label] = fn, ok
        timed = round_robin_ms(fns, **timing)     # in turns: load bursts hit all alike
        rows = [(label, *timed[label], oks[label]) for label in fns]
        for label in peers:
            if label in timed:
                peer_ms[(label, pas)] = timed[label][0]
        for label, ms, runs, ok in rows:
            ratios = {p: ms / peer_ms[(p, pas)] for p in peers if (p, pas) in peer_ms}
            records.append(dict(workload=name, impl=label, pass_=pas, ms=ms, runs=runs,
                                gflops=pf / (ms * 1e-3) / 1e9, ok=ok, ratios=ratios,
                                shape=[list(xs), list(ws)], kwargs=kw))
    return records


def bench_volume(name, quick=False, log=print):
    """Time one 3D workload: convforge.conv3d ("auto") against torch's F.conv3d, forward
    and forward + backward, after checking that results and gradients agree."""
    xs, ws, kw, qx, qw = VOLUMES[name]
    if quick:
        xs, ws = qx, qw
        if kw.get("groups", 1) > 1:
            kw = dict(kw, groups=xs[1])
    torch.manual_seed(0)
    x, w = torch.randn(xs), torch.randn(ws)
    groups = kw.get("groups", 1)
    out_elems = F.conv3d(x[:1], w, **kw)[0].numel() * xs[0]
    flops = 2 * out_elems * (xs[1] // groups) * ws[2] * ws[3] * ws[4]
    timing = dict(budget=0.5, min_time=0.0, max_runs=3) if quick else \
        dict(budget=20.0, min_time=3.0, max_runs=7)
    records = []
    for pas in ("fwd", "fwd+bwd"):
        train = pas == "fwd+bwd"
        fns, oks, grads = {}, {}, {}
        for label, conv in (("torch", F.conv3d), ("auto", convforge.conv3d)):
            xg, wg = x.clone().requires_grad_(train), w.clone().requires_grad_(train)
            with torch.set_grad_enabled(train):
                y = conv(xg, wg, **kw)
                if train:
                    y.backward(torch.ones_like(y))
            grads[label] = (y.detach(), xg.grad, wg.grad)

            def fn(conv=conv, xg=xg, wg=wg, t=train):
                with torch.set_grad_enabled(t):
                    y = conv(xg, wg, **kw)
                    if t:
                        y.backward(torch.ones_like(y))
            fns[label] = fn
        for label in fns:
            oks[label] = all(_check(a, b) for a, b in zip(grads[label], grads["torch"],
                                                          strict=True) if b is not None)
        timed = round_robin_ms(fns, **timing)
        for label in fns:
            ms, runs = timed[label]
            pf = 3 * flops if train else flops
            records.append(dict(workload=name, impl=label, pass_=pas, ms=ms, runs=runs,
                                gflops=pf / (ms * 1e-3) / 1e9, ok=oks[label],
                                ratios={"torch": ms / timed["torch"][0]},
                                shape=[list(xs), list(ws)], kwargs=kw))
    return records


def format_table(records, peak):
    peers = sorted({p for r in records for p in r["ratios"]},
                   key=lambda p: ["torch", "torch_cl", "scipy_ndimage", "scipy_fft", "cv2",
                                  "cv2_loop"].index(p))
    head = (f"{'workload':9s} {'pass':8s} {'implementation':28s} {'ms':>9s} {'GFLOP/s':>8s} "
            f"{'%peak':>6s} " + " ".join(f"{'x ' + p:>15s}" for p in peers) + "  ok")
    lines = [head, "-" * len(head)]
    for r in records:
        cells = " ".join(f"{r['ratios'][p]:15.2f}" if p in r["ratios"] else f"{'':15s}"
                         for p in peers)
        lines.append(f"{r['workload']:9s} {r['pass_']:8s} {r['impl']:28s} {r['ms']:9.2f} "
                     f"{r['gflops']:8.1f} {100 * r['gflops'] / peak:6.1f} {cells}  "
                     f"{'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    known = list(WORKLOADS) + list(VOLUMES)
    parser.add_argument("--only", metavar="NAME", help=f"comma-separated of {known}")
    args = parser.parse_args(argv)
    names = known
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"run.py: --only takes names from {known}, but got {unknown}",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(THREADS)
    if cv2 is not None:
        cv2.setNumThreads(THREADS)
    peak = matmul_peak_gflops(256 if args.quick else 1536)
    print(f"convforge {convforge.__version__}, torch {torch.__version__}, {THREADS} threads, "
          f"float32; torch.matmul peak {peak:.0f} GFLOP/s")
    t0 = time.time()
    records = []
    for name in names:
        recs = (bench_volume if name in VOLUMES else bench)(name, quick=args.quick)
        records.extend(recs)
        print(format_table(recs, peak), flush=True)
        print()
    bad = [f"{r['workload']}/{r['impl']}/{r['pass_']}" for r in records if not r["ok"]]
    print(f"{len(records)} timings in {time.time() - t0:.0f} s; "
          f"{'all results agree' if not bad else 'DISAGREE: ' + ', '.join(bad)}")
    if args.json:
        meta = dict(peak_gflops=peak, threads=THREADS, torch=torch.__version__,
                    quick=args.quick, machine=platform.machine(), processor=platform.processor(),
                    date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        write_json(args.json, dict(meta=meta, results=records))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
