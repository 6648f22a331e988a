"""Does convforge change how torch's own ops run? A torch-only model before and after.

Each scenario runs in a fresh process: a torch-only model (ResNet-20's training step and
MobileNetV2's inference on 32x32 inputs, torch's own layers) is timed; then the same
work runs in both scenarios, training steps of MobileNetV2 and ConvNeXt and two 3x3
convolutions, with torch's layers (``control``) or with convforge's (converted models:
Numba's ``direct`` and ``depthwise`` loops, ``winograd``'s worker threads); then the
torch-only model is timed again. The same middle work keeps the allocator's history
alike: a process that has allocated large buffers serves later ones from its heap
without page faults, which alone makes the second timing faster. The ratio after / before of the
``convforge`` scenario should match the ``control`` one (noise). The script also reports
the CPU time the process burns while it sleeps right after a convforge call (a spinning
thread pool would burn it) and whether ``OMP_WAIT_POLICY`` leaks into the environment
that child processes inherit.

Usage: ``python benchmarks/threads.py [--rounds N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(scenario: str, rounds: int) -> dict:
    sys.path.insert(0, str(HERE))
    import torch
    import torch.nn.functional as F
    from common import THREADS
    from models import MODELS

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    resnet, mobile = MODELS["resnet_cifar"][0](), MODELS["mobilenet_v2_cifar"][0]().eval()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(resnet.parameters(), lr=1e-3)

    def torch_only():
        opt.zero_grad()
        F.cross_entropy(resnet(x), y).backward()
        opt.step()
        with torch.no_grad():
            mobile(x)

    def timed():
        torch_only()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            torch_only()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    before = timed()
    # the same work in both scenarios (so the allocator's history is alike): training steps
    # of MobileNetV2 and ConvNeXt, with torch's layers (control) or convforge's
    nets = [MODELS["mobilenet_v2_cifar"][0](), MODELS["convnext_cifar"][0]()]
    if scenario == "convforge":
        import convforge

        nets = [convforge.nn.convert(net) for net in nets]
    for net in nets:
        for _ in range(3):
            F.cross_entropy(net(x), y).backward()
    xs, ws = torch.randn(8, 32, 28, 28), torch.randn(32, 32, 3, 3)
    for algorithm in ("winograd", "direct"):
        if scenario == "convforge":
            convforge.conv2d(xs, ws, padding=1, algorithm=algorithm)
        else:
            F.conv2d(xs, ws, padding=1)
    c0 = time.process_time()
    time.sleep(0.2)                     # a spinning thread pool burns CPU time here
    idle_cpu = (time.process_time() - c0) * 1e3
    after = timed()
    return {"before_ms": before, "after_ms": after, "idle_cpu_ms": idle_cpu,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed runs per phase")
    parser.add_argument("--repeats", type=int, default=3, help="processes per scenario")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.rounds)))
        return 0
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    results = {"control": [], "convforge": []}
    for _ in range(args.repeats):                  # interleaved: load hits both alike
        for scenario in results:
            out = subprocess.run([sys.executable, __file__, "--child", scenario,
                                  "--rounds", str(args.rounds)], capture_output=True,
                                 text=True, env=env, check=True)
            results[scenario].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("torch-only model (ResNet-20 train step + MobileNetV2 inference, 32x32, batch 32), "
          "median ms per process:")
    print(f"{'scenario':10s} {'before':>8s} {'after':>8s} {'after/before':>13s}  "
          f"idle CPU after a call  OMP_WAIT_POLICY after")
    for scenario, runs in results.items():
        for r in runs:
            idle = f"{r['idle_cpu_ms']:.1f} ms in 200"
            print(f"{scenario:10s} {r['before_ms']:8.1f} {r['after_ms']:8.1f} "
                  f"{r['after_ms'] / r['before_ms']:13.3f}  {idle:22s} "
                  f"{r['omp_wait_policy']}")
    for scenario, runs in results.items():
        ratio = statistics.median(r["after_ms"] / r["before_ms"] for r in runs)
        print(f"median after/before, {scenario}: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
