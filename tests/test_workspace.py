"""The workspace limit: tiled passes equal untiled ones and torch's; impossible limits fail
before anything is allocated; "auto" keeps to the limit."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import workspace
from convforge.algorithms import REGISTRY
from convforge.dispatch import choose_plan

# (input, weight, arguments): padding in every position, strides, dilation, groups, and
# a padding larger than the kernel's reach (bands that read only padding)
CASES = [
    ((3, 4, 23, 19), (6, 2, 3, 4), dict(stride=(2, 1), padding=(2, 3), dilation=(1, 2),
                                         groups=2)),
    ((2, 3, 17, 16), (5, 3, 3, 3), dict(padding=1)),
    ((1, 2, 20, 9), (2, 1, 5, 3), dict(padding=(4, 1), groups=2)),
    ((2, 3, 12, 11), (4, 3, 3, 3), dict(padding=5, stride=2)),
    ((2, 2, 14, 13), (3, 2, 2, 2), dict(padding="same")),
    ((1, 3, 16, 15), (3, 3, 3, 3), dict(stride=2, padding="same")),     # asymmetric
]


@pytest.fixture
def limit():
    yield convforge.set_workspace_limit
    convforge.set_workspace_limit(None)


def _torch(x, w, b, kw):
    """torch's convolution of the spec's per-side zero padding (strided "same" too)."""
    spec = convforge.make_spec("conv2d", x.shape, w.shape, **kw)
    top, bottom, left, right = spec.padding
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, spec.stride, 0,
                    spec.dilation, spec.groups)


def _all_passes(x, w, b, kw, **extra):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    y = convforge.conv2d(x, w, b, **kw, **extra) if extra else _torch(x, w, b, kw)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    return (y.detach(),) + torch.autograd.grad(y, (x, w, b), g)


def _pairs():
    """(algorithm, case) for every case the algorithm supports (winograd: 3x3 stride 1,
    depthwise: one input channel per group)."""
    for case, (xs, ws, kw) in enumerate(CASES):
        spec = convforge.make_spec("conv2d", xs, ws, **kw)
        for name in sorted(REGISTRY):
            if REGISTRY[name].supports(spec, torch.float64, torch.device("cpu")) is None:
                yield name, case


@pytest.mark.parametrize("name,case", list(_pairs()))
def test_tiled_equals_untiled_equals_torch(limit, name, case):
    xs, ws, kw = CASES[case]
    gen = torch.Generator().manual_seed(case)
    x = torch.randn(xs, generator=gen, dtype=torch.float64)
    w = torch.randn(ws, generator=gen, dtype=torch.float64)
    b = torch.randn(ws[0], generator=gen, dtype=torch.float64)
    expected = _all_passes(x, w, b, kw)
    untiled = _all_passes(x, w, b, kw, algorithm=name)
    spec = workspace.seen_spec(convforge.make_spec("conv2d", xs, ws, **kw))
    algo = REGISTRY[name]
    # the smallest limit every pass fits in: each pass runs in its smallest tiles
    small = max(workspace.minimum_bytes(algo, spec, torch.float64, p)
                for p in ("forward", "grad_input", "grad_weight"))
    limit(small)
    plans = [workspace.tiling(algo, spec, torch.float64, p, small)
             for p in ("forward", "grad_input", "grad_weight")]
    whole = (spec.n, workspace.units(spec), spec.out_h)
    assert any(p != whole for p in plans), plans                    # it did tile
    tiled = _all_passes(x, w, b, kw, algorithm=name)
    for e, u, t, what in zip(expected, untiled, tiled, ("output", "dx", "dw", "db")):
        torch.testing.assert_close(u, e, rtol=1e-10, atol=1e-10, msg=what)
        torch.testing.assert_close(t, u, rtol=1e-10, atol=1e-10, msg=what)


@pytest.mark.parametrize("name", ["im2col", "fft", "direct", "torch"])
def test_conv_transpose2d_and_double_backward_tiled(limit, name):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    kw = dict(stride=2, padding=1, output_padding=1)
    expected = F.conv_transpose2d(x, w, **kw)
    ts = convforge.make_transpose_spec("conv_transpose2d", x.shape, w.shape, **kw)
    a = torch.randn(1, 2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    fwd = convforge.make_spec("conv2d", a.shape, c.shape, padding=1)
    passes = ("forward", "grad_input", "grad_weight")
    small = max(workspace.minimum_bytes(REGISTRY[name], s, torch.float64, p)
                for s in (ts.conv, fwd) for p in passes)
    limit(small)
    assert workspace.tiling(REGISTRY[name], ts.conv, torch.float64, "grad_input",
                            small) != (ts.conv.n, workspace.units(ts.conv), ts.conv.out_h)
    got = convforge.conv_transpose2d(x, w, algorithm=name, **kw)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # second derivatives run the passes again, tiled as well
    torch.autograd.gradgradcheck(
        lambda a, c: convforge.conv2d(a, c, padding=1, algorithm=name), (a, c))


def test_limit_setting_and_environment(limit, monkeypatch):
    monkeypatch.delenv("CONVFORGE_WORKSPACE_LIMIT", raising=False)
    default = convforge.get_workspace_limit()
    assert 0 < default <= 1 << 30
    monkeypatch.setenv("CONVFORGE_WORKSPACE_LIMIT", "256M")
    assert convforge.get_workspace_limit() == 256 << 20
    monkeypatch.setenv("CONVFORGE_WORKSPACE_LIMIT", "1.5G")
    assert convforge.get_workspace_limit() == 3 << 29
    limit(12345)                                             # the setting wins
    assert convforge.get_workspace_limit() == 12345
    limit(None)
    assert convforge.get_workspace_limit() == 3 << 29
    monkeypatch.setenv("CONVFORGE_WORKSPACE_LIMIT", "lots")
    with pytest.raises(ValueError, match="CONVFORGE_WORKSPACE_LIMIT must be a number"):
        convforge.get_workspace_limit()
    with pytest.raises(ValueError, match=r"limit must be >= 0 bytes, but got -1"):
        limit(-1)
    with pytest.raises(TypeError, match="limit must be an int"):
        limit(1.5)


def test_auto_keeps_to_the_limit_and_fails_clearly(limit):
    spec = convforge.make_spec("conv2d", (1, 16, 64, 64), (16, 16, 7, 7), padding=3)
    limit(200_000)
    for grads in ((False, False), (True, True)):
        passes = ("forward", "grad_input", "grad_weight") if grads[0] else ("forward",)
        plan = choose_plan(spec, torch.float32, grads=grads)
        for name, p in zip(plan, ("forward", "grad_input", "grad_weight")):
            if p in passes:
                assert workspace.fits(REGISTRY[name], spec, torch.float32, (p,))
    limit(16)
    with pytest.raises(convforge.WorkspaceLimitError, match="no algorithm runs this"):
        choose_plan(spec, torch.float32)
    x, w = torch.randn(1, 16, 64, 64), torch.randn(16, 16, 7, 7)
    with pytest.raises(MemoryError, match=r"algorithm 'im2col' needs at least \d+ bytes"):
        convforge.conv2d(x, w, padding=3, algorithm="im2col")


def test_impossible_limit_fails_before_allocating(tmp_path):
    """Under an address-space limit that im2col's 3.2 GB of columns cannot get, a limit of
    4 KiB must raise our error (torch's "can't allocate" would mean it tried)."""
    script = textwrap.dedent("""
        import resource, torch, convforge
        x, w = torch.randn(1, 64, 512, 512), torch.randn(64, 64, 7, 7)
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), resource.RLIM_INFINITY))
        convforge.set_workspace_limit(4096)
        for name in ("im2col", "fft", "torch", "direct", "shift"):
            try:
                convforge.conv2d(x, w, padding=3, algorithm=name)
            except convforge.WorkspaceLimitError as e:
                print(name, "limit", str(e).split(":")[0])
            except RuntimeError as e:
                print(name, "allocated", str(e)[:60])
    """)
    env = dict(os.environ, CONVFORGE_WORKSPACE_LIMIT="")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    for name in ("im2col", "fft", "torch", "direct", "shift"):
        assert f"{name} limit conv2d" in lines, out.stdout


def test_workspace_bytes_interface():
    spec = convforge.make_spec("conv2d", (1, 64, 1024, 1024), (64, 64, 7, 7))
    im2col = REGISTRY["im2col"]
    # one sample's columns: C_in kH kW oH oW values, the crash case of a naive im2col
    assert im2col.workspace_bytes(spec, torch.float32) >= 64 * 49 * 1018 * 1018 * 4
    assert im2col.workspace_bytes(spec, torch.float32, train=True) >= \
        im2col.workspace_bytes(spec, torch.float32)
    for name, algo in REGISTRY.items():
        for p in ("forward", "grad_input", "grad_weight"):
            assert isinstance(algo.workspace(spec.after_padding(), torch.float32, p), int), \
                (name, p)
