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


def check_padding_mode(algorithm, mode):
    """conv2d(algorithm=...) with a non-zero padding mode against torch_pad + F.conv2d,
    forward and both gradients (float64, per-side padding)."""
    import convforge

    x = torch.randn(2, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    pads = (1, 1, 2, 1)                                          # (top, bottom, left, right)
    y = convforge.conv2d(x, w, padding=((1, 1), (2, 1)), padding_mode=mode,
                         algorithm=algorithm)
    xt, wt = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ye = F.conv2d(torch_pad(xt, pads, mode), wt)
    g = torch.randn_like(ye)
    y.backward(g)
    ye.backward(g)
    assert_close(y, ye, msg=mode)
    assert_close(x.grad, xt.grad, msg=f"{mode} grad input")
    assert_close(w.grad, wt.grad, msg=f"{mode} grad weight")


def check_layouts(algorithm, factor=1.0):
    """conv2d(algorithm=...) on unbatched, strided, channels_last and transposed inputs and a
    channels_last weight, against F.conv2d."""
    import convforge

    w = torch.randn(4, 3, 3, 3)
    base = torch.randn(2, 3, 20, 22)
    for x in (base[0],                                           # unbatched (C, H, W)
              base[:, :, ::2, 1::2],                             # strided slice
              base.to(memory_format=torch.channels_last),
              base.permute(0, 1, 3, 2)):                         # transposed view
        y = convforge.conv2d(x, w, padding=1, algorithm=algorithm)
        assert_close(y, F.conv2d(x, w, padding=1), factor=factor, msg=str(tuple(x.stride())))
    wl = w.to(memory_format=torch.channels_last)
    assert_close(convforge.conv2d(base, wl, algorithm=algorithm), F.conv2d(base, w),
                 factor=factor, msg="channels_last weight")


def check_gradcheck(algorithm, fast_mode=False):
    """gradcheck and gradgradcheck of conv2d(algorithm=...) in float64 with stride,
    padding, dilation and groups together."""
    import convforge

    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        return convforge.conv2d(a, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                                algorithm=algorithm)

    assert torch.autograd.gradcheck(f, (x, w), fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(f, (x, w), fast_mode=fast_mode)


# cases every algorithm module is checked on: (input shape, weight shape, conv2d kwargs)
ALGORITHM_CASES = {
    "1x1": ((2, 3, 7, 8), (4, 3, 1, 1), {}),
    "3x3-pad1": ((2, 3, 9, 10), (4, 3, 3, 3), {"padding": 1}),
    "even-2x4": ((2, 2, 9, 11), (3, 2, 2, 4), {"padding": (1, 2)}),
    "stride2": ((2, 3, 11, 12), (2, 3, 3, 3), {"stride": 2, "padding": 1}),
    "stride3-nonsquare": ((1, 2, 13, 14), (3, 2, 3, 5), {"stride": (3, 2)}),
    "dilation2": ((2, 2, 12, 13), (2, 2, 3, 3), {"dilation": 2, "padding": 2}),
    "groups2": ((2, 4, 9, 9), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 4, 10, 9), (4, 1, 5, 5), {"groups": 4, "padding": 2}),
    "depthwise-x2": ((2, 3, 8, 8), (6, 1, 3, 3), {"groups": 3}),
    "batch1-same": ((1, 1, 12, 12), (1, 1, 4, 4), {"padding": "same"}),
    "everything": ((2, 4, 15, 16), (4, 2, 3, 2),
                   {"stride": (2, 3), "dilation": (2, 1), "groups": 2, "padding": (1, 2)}),
}


def random_array(rng, shape, dtype, scale):
    """A NumPy array of ``dtype``: normal values times ``scale`` (cast), complex with a
    normal imaginary part, or random booleans."""
    kind = np.dtype(dtype).kind
    if kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if kind == "b":
        return rng.standard_normal(shape) > 0
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_same_image(got, expected, exact):
    """``got`` has ``expected``'s dtype and shape, and its values exactly or within 1e-5 of
    the largest magnitude (at least 1)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if exact:
        assert np.array_equal(got, expected)
    else:
        scale = max(1.0, float(np.abs(expected).max()))
        assert float(np.abs(got.astype(np.float64) - expected).max()) <= 1e-5 * scale
