"""Quick probe of the ``direct`` and ``fft`` algorithms on the issue-4 workloads.

Checks each result against torch first, then prints medians (ms) of every contender
measured in the same run, and the ratio of the best convforge algorithm to the peer that
the target names. Not the benchmark suite (that is benchmarks/run.py).

    python benchmarks/probe_direct_fft.py [--repeat 7] [--only image,rgb,dw7,dw31,lenet]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

import convforge
from convforge.algorithms import REGISTRY

ALGOS = ("direct", "fft")


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def check(a, b, what):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    if err > 1e-4:
        raise AssertionError(f"{what}: relative error {err:.2e}")


def report(title, times, peer, target):
    ours = {k: v for k, v in times.items() if k in ALGOS}
    best = min(ours, key=ours.get)
    cells = "  ".join(f"{k} {v:8.2f}" for k, v in times.items())
    ratio = ours[best] / times[peer]
    print(f"{title:34s} {cells}   best={best} {ratio:.2f}x {peer} (target <= {target})")


def image_case(img, k, target, repeat):
    x = torch.from_numpy(img)[None, None]
    ker = np.random.default_rng(k).random((k, k), dtype=np.float32)
    w = torch.from_numpy(ker)[None, None]
    ref = cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_CONSTANT)
    times = {"torch": median_ms(lambda: F.conv2d(x, w, padding=k // 2), repeat)}
    for name in ALGOS:
        check(convforge.conv2d(x, w, padding=k // 2, algorithm=name)[0, 0], ref, name)
        times[name] = median_ms(
            lambda name=name: convforge.conv2d(x, w, padding=k // 2, algorithm=name), repeat)
    times["cv2"] = median_ms(
        lambda: cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_CONSTANT), repeat)
    peer = "cv2"
    if k == 31:
        flipped = ker[::-1, ::-1].copy()
        times["scipy"] = median_ms(
            lambda: scipy.signal.fftconvolve(img, flipped, mode="same"), repeat)
        peer = min(("cv2", "scipy"), key=times.get)
    report(f"image 2048^2 {k}x{k}", times, peer, target)
    xp = F.pad(x, (k // 2,) * 4)
    spec = convforge.make_spec("conv2d", xp.shape, w.shape)
    pre = {name: median_ms(lambda name=name: REGISTRY[name].forward(xp, w, spec), repeat)
           for name in ALGOS}
    print(f"{'':34s} forward on the padded input only: "
          + ", ".join(f"{k} {v:.2f}" for k, v in pre.items()))


def image(repeat):
    img = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    for k, target in ((3, 1.0), (5, 1.0), (15, 0.7), (31, 0.7)):
        image_case(img, k, target, repeat)


def rgb(repeat):
    imgs = np.random.default_rng(1).random((16, 512, 512, 3), dtype=np.float32)
    ker = np.random.default_rng(2).random((5, 5), dtype=np.float32)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # (16, 3, 512, 512)
    w = torch.from_numpy(ker)[None, None].repeat(3, 1, 1, 1)
    ref = np.stack([cv2.filter2D(im, -1, ker, borderType=cv2.BORDER_CONSTANT) for im in imgs])
    times = {"torch": median_ms(lambda: F.conv2d(x, w, padding=2, groups=3), repeat)}
    for name in ALGOS:
        check(convforge.conv2d(x, w, padding=2, groups=3, algorithm=name).permute(0, 2, 3, 1),
              ref, name)
        times[name] = median_ms(
            lambda name=name: convforge.conv2d(x, w, padding=2, groups=3, algorithm=name), repeat)
    times["cv2"] = median_ms(lambda: [cv2.filter2D(im, -1, ker, borderType=cv2.BORDER_CONSTANT)
                                      for im in imgs], repeat)
    report("RGB 16x3x512^2 5x5 depthwise", times, "cv2", 1.0)


def train_step(x, w, b, fn):
    x.grad = w.grad = b.grad = None
    y = fn(x, w, b)
    y.backward(torch.ones_like(y))


def layer(title, shape, wshape, groups, padding, repeat, input_grad=True):
    x = torch.randn(shape, requires_grad=input_grad)
    w = torch.randn(wshape, requires_grad=True)
    b = torch.randn(wshape[0], requires_grad=True)
    xcl = x.detach().to(memory_format=torch.channels_last).requires_grad_(input_grad)
    times = {
        "torch": median_ms(lambda: train_step(
            x, w, b, lambda *a: F.conv2d(*a, padding=padding, groups=groups)), repeat),
        "torch_cl": median_ms(lambda: train_step(
            xcl, w, b, lambda *a: F.conv2d(*a, padding=padding, groups=groups)), repeat),
    }
    train_step(x, w, b, lambda *a: F.conv2d(*a, padding=padding, groups=groups))
    gx, gw = (x.grad.clone() if input_grad else None), w.grad.clone()
    for name in ALGOS:
        def fn(*a, name=name):
            return convforge.conv2d(*a, padding=padding, groups=groups, algorithm=name)
        train_step(x, w, b, fn)
        check(w.grad, gw, f"{name} grad weight")
        if input_grad:
            check(x.grad, gx, f"{name} grad input")
        times[name] = median_ms(lambda fn=fn: train_step(x, w, b, fn), repeat)
    report(title, times, "torch", 0.25)


WORKLOADS = {
    "image": image,
    "rgb": rgb,
    "dw7": lambda r: layer("depthwise 7x7 8x96x56^2 fwd+bwd", (8, 96, 56, 56), (96, 1, 7, 7),
                           96, 3, r),
    "dw31": lambda r: layer("depthwise 31x31 8x128x28^2 fwd+bwd", (8, 128, 28, 28),
                            (128, 1, 31, 31), 128, 15, r),
    "lenet": lambda r: layer("LeNet 1->6 5x5 256x28^2 fwd+bwd", (256, 1, 28, 28), (6, 1, 5, 5),
                             1, 2, r),
    "lenet_nox": lambda r: layer("  (same, no input grad)", (256, 1, 28, 28), (6, 1, 5, 5),
                                 1, 2, r, input_grad=False),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians in ms")
    for key in args.only.split(","):
        WORKLOADS[key](args.repeat)


if __name__ == "__main__":
    main()
