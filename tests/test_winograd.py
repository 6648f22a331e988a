"""Winograd F(2x2,3x3) and F(4x4,3x3): transform identities, parity with torch, gradients."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from convforge import conv2d, make_spec
from convforge.algorithms import REGISTRY, _winograd_kernels, winograd

POINTS = {2: [0, 1, -1], 4: [0, 1, -1, 2, -2]}
CPU = torch.device("cpu")


def _exact(table):
    return [[Fraction(v).limit_denominator(1000) for v in row] for row in table]


def _correlate_1d(at, g, bt, d, filt):
    """A^T [(G g) * (B^T d)] in exact arithmetic."""
    gg = [sum(gr * f for gr, f in zip(row, filt)) for row in g]
    bd = [sum(br * v for br, v in zip(row, d)) for row in bt]
    return [sum(a * u * v for a, u, v in zip(row, gg, bd)) for row in at]


@pytest.mark.parametrize("m", [2, 4])
def test_tables_are_the_toom_cook_matrices_up_to_row_signs(m):
    at, g, bt = winograd.toom_cook_matrices(POINTS[m], m, 3)
    t = winograd.TABLES[m]
    assert _exact(t["AT"]) == at
    for k, (row_b, row_g) in enumerate(zip(_exact(t["BT"]), _exact(t["G"]))):
        sign = 1 if row_b == bt[k] else -1
        assert row_b == [sign * v for v in bt[k]], f"row {k} of B^T"
        assert row_g == [sign * v for v in g[k]], f"row {k} of G"


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("source", ["table", "derived"])
def test_one_dimensional_identity_is_exact(m, source):
    if source == "table":
        t = winograd.TABLES[m]
        at, g, bt = _exact(t["AT"]), _exact(t["G"]), _exact(t["BT"])
    else:
        at, g, bt = winograd.toom_cook_matrices(POINTS[m], m, 3)
    rng = random.Random(m)
    for _ in range(20):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(m + 2)]
        filt = [Fraction(rng.randint(-9, 9), rng.randint(1, 5)) for _ in range(3)]
        expected = [sum(filt[j] * d[i + j] for j in range(3)) for i in range(m)]
        assert _correlate_1d(at, g, bt, d, filt) == expected


def test_paper_f43_tables_also_satisfy_the_identity():
    # arXiv:1509.09308 section 4.2 prints rows 1-2 of B^T and G with the opposite sign
    at = _exact(winograd.TABLES[4]["AT"])
    g = _exact([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    bt = _exact([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
    d, filt = [Fraction(v) for v in (3, -1, 4, 1, -5, 9)], [Fraction(v) for v in (2, 7, -1)]
    assert _correlate_1d(at, g, bt, d, filt) == [
        sum(filt[j] * d[i + j] for j in range(3)) for i in range(4)]


def test_toom_cook_rejects_bad_points():
    with pytest.raises(ValueError, match="toom_cook_matrices: need 3 distinct"):
        winograd.toom_cook_matrices([0, 1, 1], 2, 3)
    with pytest.raises(ValueError, match="winograd_conv: m must be 2 or 4"):
        winograd.winograd_conv(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 3, 3), m=3)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n,c,o,h,w,g", [(2, 3, 5, 9, 11, 1), (1, 4, 6, 10, 7, 2),
                                         (3, 8, 4, 6, 6, 4), (1, 1, 1, 3, 3, 1)])
def test_forward_matches_torch_float64(m, n, c, o, h, w, g):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    k = torch.randn(o, c // g, 3, 3, dtype=torch.float64)
    y = winograd.winograd_conv(x, k, g, m)
    torch.testing.assert_close(y, F.conv2d(x, k, groups=g), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "complex"])
def test_forward_layouts_and_complex(layout):
    torch.manual_seed(1)
    dtype = torch.complex128 if layout == "complex" else torch.float64
    x = torch.randn(2, 4, 12, 13, dtype=dtype)
    k = torch.randn(6, 4, 3, 3, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(2, 8, 24, 13, dtype=dtype)[:, ::2, ::2]
    spec = make_spec("conv2d", x.shape, k.shape)
    y = winograd.forward(x, k, spec)
    ref = REGISTRY["reference"].forward(x, k, spec)
    torch.testing.assert_close(y, ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("groups", [1, 2])
def test_backward_matches_torch_nn_grad(groups):
    torch.manual_seed(2)
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    k = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64)
    spec = make_spec("conv2d", x.shape, k.shape, groups=groups)
    gy = torch.randn(2, 6, 7, 8, dtype=torch.float64)
    gi = winograd.grad_input(gy, k, spec, x.shape)
    gw = winograd.grad_weight(x, gy, spec, k.shape)
    torch.testing.assert_close(gi, torch.nn.grad.conv2d_input(x.shape, k, gy, groups=groups),
                               rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gw, torch.nn.grad.conv2d_weight(x, k.shape, gy, groups=groups),
                               rtol=1e-11, atol=1e-11)


@pytest.fixture
def one_thread():
    """Tiny ops: one thread avoids thread-pool stalls when the shared machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gradcheck_and_gradgradcheck_float64(one_thread):
    torch.manual_seed(3)
    x = torch.randn(1, 4, 4, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(x, k):
        return conv2d(x, k, padding=1, groups=2, algorithm="winograd")
    assert torch.autograd.gradcheck(f, (x, k))
    assert torch.autograd.gradgradcheck(f, (x, k))


@pytest.mark.parametrize("m,bound", [(2, 2e-6), (4, 3e-5)])
def test_float32_error_against_float64(m, bound):
    torch.manual_seed(4)
    x, k = torch.randn(2, 64, 18, 18), torch.randn(16, 64, 3, 3)
    ref = F.conv2d(x.double(), k.double())
    err = (winograd.winograd_conv(x, k, 1, m).double() - ref).abs().max() / ref.abs().max()
    assert err < bound


def test_supports_states_its_reasons():
    def reason(**kw):
        shape = kw.pop("shape", (1, 4, 8, 8))
        wshape = kw.pop("wshape", (4, 4, 3, 3))
        return winograd.supports(make_spec("conv2d", shape, wshape, **kw), torch.float32, CPU)
    assert reason() is None
    assert reason(groups=2, wshape=(4, 2, 3, 3)) is None
    assert "3x3" in reason(wshape=(4, 4, 5, 5))
    assert "stride" in reason(stride=2)
    assert "dilation" in reason(dilation=2)
    assert "depthwise" in reason(groups=4, wshape=(4, 1, 3, 3))


def test_tile_size_prefers_f43_except_tiny_outputs():
    assert winograd.tile_size(56, 56) == 4
    assert winograd.tile_size(14, 14) == 4
    assert winograd.tile_size(2, 2) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    x, k = torch.randn(2, 4, 10, 10, device="cuda"), torch.randn(3, 4, 3, 3, device="cuda")
    torch.testing.assert_close(winograd.winograd_conv(x, k), F.conv2d(x, k),
                               rtol=1e-4, atol=1e-4)


# ---- the compiled CPU path (fused zero padding, channels-innermost transforms, jobs) ----

def _padded_ref(x, k, pads, groups):
    top, bottom, left, right = pads
    return F.conv2d(F.pad(x, (left, right, top, bottom)), k, groups=groups)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n,c,o,h,w,g,pads", [
    (2, 3, 5, 9, 11, 1, (0, 0, 0, 0)), (1, 4, 6, 10, 7, 2, (1, 1, 1, 1)),
    (3, 8, 4, 6, 6, 4, (2, 0, 1, 3)), (1, 4, 4, 5, 5, 1, (3, 1, 0, 4)),
    (1, 2, 3, 1, 1, 1, (1, 1, 1, 1)), (2, 16, 8, 13, 14, 1, (1, 1, 1, 1))])
def test_compiled_forward_and_gradients_match_torch(dtype, tol, m, n, c, o, h, w, g, pads):
    torch.manual_seed(5)
    x = torch.randn(n, c, h, w, dtype=dtype)
    k = torch.randn(o, c // g, 3, 3, dtype=dtype)
    ref = _padded_ref(x, k, pads, g)
    scale = ref.abs().max()
    torch.testing.assert_close(winograd.winograd_conv(x, k, g, m, pads) / scale, ref / scale,
                               rtol=0, atol=tol)
    spec = make_spec("conv2d", x.shape, k.shape, groups=g,
                     padding=((pads[0], pads[1]), (pads[2], pads[3])))
    gy = torch.randn_like(ref)
    xr, kr = x.clone().requires_grad_(), k.clone().requires_grad_()
    _padded_ref(xr, kr, pads, g).backward(gy)
    gi, gw = winograd.grad_input(gy, k, spec, x.shape), winograd.grad_weight(x, gy, spec, k.shape)
    torch.testing.assert_close(gi / xr.grad.abs().max(), xr.grad / xr.grad.abs().max(),
                               rtol=0, atol=tol)
    torch.testing.assert_close(gw / kr.grad.abs().max(), kr.grad / kr.grad.abs().max(),
                               rtol=0, atol=tol)


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "batch1"])
def test_compiled_path_input_layouts(layout):
    torch.manual_seed(6)
    x = torch.randn(3, 6, 12, 11)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(3, 12, 24, 11)[:, ::2, ::2]
    else:
        x = x[:1]
    k = torch.randn(5, 6, 3, 3)
    y = winograd.winograd_conv(x, k, 1, 4, (1, 1, 1, 1))
    torch.testing.assert_close(y, F.conv2d(x, k, padding=1), rtol=1e-4, atol=1e-4)


def _bilinear_complex(f, a, b):
    """f(a, b) for complex a, b from a real bilinear f (torch's real-only gradients)."""
    real = f(a.real, b.real) - f(a.imag, b.imag)
    return torch.complex(real, f(a.real, b.imag) + f(a.imag, b.real))


def test_torch_op_fallback_pads_itself_and_matches():
    # complex tensors take the torch-op path (as CUDA ones do); padding and both gradients
    torch.manual_seed(7)
    x = torch.randn(2, 4, 7, 9, dtype=torch.complex128)
    k = torch.randn(6, 2, 3, 3, dtype=torch.complex128)
    pads = (2, 0, 1, 3)
    spec = make_spec("conv2d", x.shape, k.shape, groups=2, padding=((2, 0), (1, 3)))
    ref = _padded_ref(x, k, pads, 2)
    torch.testing.assert_close(winograd.forward(x, k, spec), ref, rtol=1e-11, atol=1e-11)
    gy = torch.randn_like(ref)
    xp = F.pad(x, (1, 3, 2, 0))
    gi = _bilinear_complex(
        lambda g, w: torch.nn.grad.conv2d_input(xp.shape, w, g, groups=2), gy, k)
    gw = _bilinear_complex(
        lambda a, g: torch.nn.grad.conv2d_weight(a, k.shape, g, groups=2), xp, gy)
    torch.testing.assert_close(winograd.grad_input(gy, k, spec, x.shape), gi[..., 2:, 1:-3],
                               rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(winograd.grad_weight(x, gy, spec, k.shape), gw,
                               rtol=1e-11, atol=1e-11)
    # the real-valued torch-op path itself, on the CPU
    xr = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    kr = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for m in (2, 4):
        torch.testing.assert_close(winograd._torch_conv(xr, kr, 1, m), F.conv2d(xr, kr),
                                   rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("job_bytes,phase_tiles", [(1, 0), (1 << 40, 1 << 20)])
def test_jobs_on_two_threads_and_both_strategies(monkeypatch, job_bytes, phase_tiles):
    # both spread the rows of tiles over the two worker threads. (1, 0): forward in jobs of
    # one row of tiles, weight gradient as all tiles then GEMMs per position; (huge, huge):
    # forward as all tiles then GEMMs per position, weight gradient as per-job partial sums
    monkeypatch.setattr(_winograd_kernels, "_JOB_BYTES", job_bytes)
    monkeypatch.setattr(_winograd_kernels, "_JOB_TILES", 1)
    monkeypatch.setattr(_winograd_kernels, "_PHASE_TILES", phase_tiles)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(8)
        x = torch.randn(3, 8, 10, 9, dtype=torch.float64)
        k = torch.randn(6, 8, 3, 3, dtype=torch.float64)
        spec = make_spec("conv2d", x.shape, k.shape, padding=1)
        ref = F.conv2d(x, k, padding=1)
        torch.testing.assert_close(winograd.forward(x, k, spec), ref, rtol=1e-11, atol=1e-11)
        gy = torch.randn_like(ref)
        torch.testing.assert_close(winograd.grad_weight(x, gy, spec, k.shape),
                                   torch.nn.grad.conv2d_weight(x, k.shape, gy, padding=1),
                                   rtol=1e-11, atol=1e-11)
        assert torch.get_num_threads() == 2          # torch's thread count is restored
    finally:
        torch.set_num_threads(before)


def test_nhwc_transpose_kernel():
    x = torch.randn(2, 5, 70, 300)                   # large enough for the compiled transpose
    torch.testing.assert_close(torch.from_numpy(_winograd_kernels._nhwc(x)), x.permute(0, 2, 3, 1),
                               rtol=0, atol=0)


def test_filter_transform_kernel_matches_the_tables():
    torch.manual_seed(9)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    for m in (2, 4):
        u = _winograd_kernels.filters(w, 3, m)      # (P, G*Cg, Og)
        ref = winograd.transform_weight(w, 3, m)     # (P, G, Og, Cg)
        torch.testing.assert_close(u.view(ref.shape[0], 3, 2, 2).transpose(2, 3), ref,
                                   rtol=1e-13, atol=1e-13)


def test_conv2d_autograd_through_fused_padding():
    torch.manual_seed(10)
    x = torch.randn(2, 6, 11, 12, requires_grad=True)
    k = torch.randn(4, 6, 3, 3, requires_grad=True)
    y = conv2d(x, k, padding=((0, 2), (1, 1)), algorithm="winograd")
    y.square().sum().backward()
    xr, kr = x.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    F.conv2d(F.pad(xr, (1, 1, 0, 2)), kr).square().sum().backward()
    for ours, ref in ((x.grad, xr.grad), (k.grad, kr.grad)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_concurrent_calls_restore_torch_threads():
    from concurrent.futures import ThreadPoolExecutor
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(11)
        x, k = torch.randn(4, 8, 12, 12), torch.randn(8, 8, 3, 3)
        ref = F.conv2d(x, k, padding=1)
        with ThreadPoolExecutor(3) as ex:
            ys = list(ex.map(lambda _: winograd.winograd_conv(x, k, 1, 4, (1, 1, 1, 1)), range(6)))
        for y in ys:
            torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
