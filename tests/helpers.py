"""Tolerances and independent references for the tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# (rtol, atol) relative to the size of the values involved
TOL = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (2e-4, 2e-4),
    torch.complex128: (1e-9, 1e-9),
    torch.complex64: (2e-4, 2e-4),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}
# algorithms whose float32 error is larger by design (transform-domain rounding)
ALGO_FACTOR = {"fft": 10.0, "winograd": 10.0}


def assert_close(actual, expected, dtype=None, factor=1.0, msg=""):
    """allclose with a tolerance scaled by the largest magnitude of the expected values."""
    dtype = dtype or expected.dtype
    rtol, atol = TOL[dtype]
    a = actual.detach().to(torch.complex128 if actual.is_complex() else torch.float64).cpu()
    e = expected.detach().to(torch.complex128 if expected.is_complex() else torch.float64).cpu()
    assert a.shape == e.shape, f"{msg}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    scale = max(1.0, e.abs().max().item()) if e.numel() else 1.0
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= factor * (atol * scale + rtol * scale), (
        f"{msg}: max abs error {err:.3g} > tolerance {factor * (atol + rtol) * scale:.3g}")


def tf_same_padding(n, k, s, d=1):
    """TensorFlow's 'SAME' padding, written independently of convforge.shapes."""
    out = (n + s - 1) // s
    eff = (k - 1) * d + 1
    total = max(0, (out - 1) * s + eff - n)
    return total // 2, total - total // 2


def torch_pad(x, pads, mode):
    """Padding by torch (or NumPy for 'symmetric'), independent of convforge's pad_input."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    if mode == "symmetric":
        # a differentiable symmetric pad built from flips and cats (pads < size here)
        x = torch.cat([x[..., :top, :].flip(-2), x, x[..., x.shape[-2] - bottom:, :].flip(-2)], -2)
        return torch.cat([x[..., :left].flip(-1), x, x[..., x.shape[-1] - right:].flip(-1)], -1)
    return F.pad(x, (left, right, top, bottom), mode=mode)


def numpy_symmetric(x, pads):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right)), mode="symmetric")
