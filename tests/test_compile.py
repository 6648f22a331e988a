"""Compiled kernels: warmup covers every code path, "auto" never waits for a compilation,
the plans move to the compiled algorithms once they are ready, forks and fresh processes."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from numba.core.registry import CPUDispatcher

import convforge
import convforge.nn as cnn
from convforge import _compile, backends, dispatch, make_spec
from convforge.algorithms import REGISTRY
from helpers import assert_close

_KERNEL_MODULES = ("_direct_kernels", "_direct_small", "_depthwise_kernels",
                   "_winograd_kernels", "_col2im_kernels")


def _signatures() -> set:
    """Every compiled specialisation of every Numba kernel of the package."""
    out = set()
    for name in _KERNEL_MODULES:
        mod = importlib.import_module(f"convforge.algorithms.{name}")
        for attr, value in vars(mod).items():
            value = getattr(value, "parallel", value)        # ForkSafeKernel
            if isinstance(value, CPUDispatcher):
                out.update((name, attr, str(sig)) for sig in value.signatures)
    return out


def test_compiled_algorithms_are_the_numba_ones():
    assert set(_compile.COMPILED) == {"direct", "depthwise", "winograd", "im2col"}
    assert not any(REGISTRY[n].compiled for n in ("torch", "torch_cl", "fft", "shift"))


def test_warmup_compiles_every_path_the_algorithms_take():
    """After warmup, configurations unlike its cases (sizes, kernels, strides, padding,
    dilation, groups, layouts, dtypes, bias, gradients) compile nothing new."""
    convforge.warmup()
    before = _signatures()
    assert before
    gen = torch.Generator().manual_seed(1)
    configs = [((2, 3, 17, 300), (4, 3, 3, 3), dict(padding="same")),
               ((1, 2, 7, 300), (2, 2, 2, 2), dict(padding=(2, 1))),
               ((1, 4, 40, 290), (4, 1, 5, 5), dict(groups=4, padding=2, stride=(1, 2))),
               ((2, 4, 33, 31), (8, 2, 3, 3), dict(groups=2, dilation=2, padding=1)),
               ((1, 6, 64, 64), (6, 6, 3, 3), dict(padding=1)),
               ((1, 1, 100, 100), (1, 1, 7, 7), {}),
               ((3, 8, 12, 12), (16, 8, 1, 1), dict(stride=2)),
               ((2, 5, 20, 21), (10, 1, 3, 3), dict(groups=5, stride=2))]
    for xs, ws, kw in configs:
        spec = make_spec("conv2d", xs, ws, **kw)
        for dtype in _compile.DTYPES:
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(xs, generator=gen, dtype=dtype).contiguous(memory_format=layout)
                w = torch.randn(ws, generator=gen, dtype=dtype)
                for name in _compile.COMPILED:
                    if REGISTRY[name].supports(spec, dtype, torch.device("cpu")) is not None:
                        continue
                    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
                    convforge.conv2d(xr, wr, algorithm=name, **kw).sum().backward()
    new = _signatures() - before
    assert not new, f"compiled after warmup: {sorted(new)[:3]}"


def test_warmup_errors_and_report():
    with pytest.raises(ValueError, match="warmup: algorithms must be names"):
        convforge.warmup(["nope"])
    with pytest.raises(ValueError, match="warmup: dtypes must be float32 or float64"):
        convforge.warmup(dtypes=[torch.float16])
    convforge.warmup()
    assert convforge.warmup() == []                      # nothing left to do
    assert all(_compile.is_ready(n, d) for n in _compile.COMPILED for d in _compile.DTYPES)


@pytest.fixture()
def cold(monkeypatch):
    """A process in which no compiled kernel is ready; requests are recorded, not run."""
    monkeypatch.setattr(_compile, "_READY", set())
    monkeypatch.setattr(_compile, "_QUEUED", set())
    requested = []
    monkeypatch.setattr(_compile, "request", lambda names, dtype: requested.append(
        (tuple(names), dtype)))
    monkeypatch.setattr(backends, "background_compile", True)
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    return requested


def test_auto_does_not_wait_for_compilation(cold):
    """An image filter whose best algorithm is compiled: auto plans with a ready one and
    queues the compiled ones; once they are ready, the same layer re-plans."""
    spec = make_spec("conv2d", (1, 1, 512, 512), (1, 1, 5, 5), padding=2)
    plan = dispatch.choose_plan(spec)
    assert not set(plan) & set(_compile.COMPILED)
    assert cold and set(cold[0][0]) <= set(_compile.COMPILED) and cold[0][1] == torch.float32
    layer = cnn.Conv2d(1, 1, 5, padding=2)
    x = torch.randn(1, 1, 512, 512)
    with torch.no_grad():
        y = layer(x)
        assert_close(y, F.conv2d(x, layer.weight, layer.bias, padding=2))
        first = list(layer.plans().values())[-1]
        assert first not in _compile.COMPILED
        for name in _compile.COMPILED:             # as the background thread would
            _compile._mark_ready(name, torch.float32)
        layer(x)
    warm = dispatch.choose_plan(spec)
    assert set(warm) & set(_compile.COMPILED)
    with backends_off():
        assert warm == dispatch.choose_plan(spec)  # the same plan as with nothing to wait for
    assert len(layer._plans) == 2                  # planned again once the kernels were ready
    assert list(layer.plans().values())[-1] == warm[0]


class backends_off:
    def __enter__(self):
        self.old, backends.background_compile = backends.background_compile, False

    def __exit__(self, *exc):
        backends.background_compile = self.old


def test_background_compile_off_plans_with_every_algorithm(cold):
    backends.background_compile = False
    spec = make_spec("conv2d", (1, 1, 512, 512), (1, 1, 5, 5), padding=2)
    plan = dispatch.choose_plan(spec)
    assert set(plan) & set(_compile.COMPILED)        # the fit's choice: a compiled one
    assert not cold


def test_explicit_algorithm_and_measure_are_not_restricted(cold):
    x, w = torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3)
    y = convforge.conv2d(x, w, padding=1, algorithm="direct")
    assert_close(y, F.conv2d(x, w, padding=1))
    assert not cold


@pytest.mark.parametrize("in_subprocess", [True, False])
def test_background_thread_readies_kernels(monkeypatch, in_subprocess):
    """The real thread (compiling in a child process into Numba's cache, then loading, or
    compiling here): queued kernels become ready and the generation moves."""
    monkeypatch.setattr(_compile, "_READY", set())
    monkeypatch.setattr(_compile, "_QUEUED", set())
    monkeypatch.setattr(_compile, "_ELSEWHERE", set())
    monkeypatch.setattr(backends, "compile_in_subprocess", in_subprocess)
    children = []
    original = _compile._compile_elsewhere

    def recorded(todo):
        children.append(list(todo))
        ok = original(todo)
        assert ok, "the child compiler failed"
        return ok

    monkeypatch.setattr(_compile, "_compile_elsewhere", recorded)
    gen = _compile.generation
    _compile.request(["direct", "im2col"], torch.float64)
    assert _compile.wait(timeout=300)
    assert _compile.is_ready("direct", torch.float64) and _compile.is_ready("im2col",
                                                                            torch.float64)
    assert not _compile.is_ready("winograd", torch.float64)
    assert _compile.generation >= gen + 2
    assert children == ([[("im2col", torch.float64), ("direct", torch.float64)]]
                        if in_subprocess else [])


_COLD = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    import convforge
    x, w = torch.randn(1, 1, 1024, 1024), torch.randn(1, 1, 5, 5)
    t = time.perf_counter()
    y = convforge.conv2d(x, w, padding=2)
    first = time.perf_counter() - t
    err = (y - F.conv2d(x, w, padding=2)).abs().max().item()
    print(json.dumps({"first": first, "err": err}))
""")


def test_cold_start_first_auto_call_is_quick(tmp_path):
    """A fresh process with an empty Numba cache: the first auto call of an image filter
    (whose best algorithm is compiled) returns at once with torch's answer."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"first auto conv2d call with an empty Numba cache: {result['first']:.3f} s")
    assert result["err"] < 1e-4
    assert result["first"] < 5.0          # loosely: compiling would take 20-60 s


class _Filtered(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(1, 3, 20, 20, generator=gen)
        w = torch.randn(4, 3, 3, 3, generator=gen)
        return (convforge.conv2d(x, w, padding=1)[0], convforge.conv2d(x, w, padding=1,
                                                                        algorithm="direct")[0])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_after_the_parent_used_convforge(context, monkeypatch):
    """Workers started while the parent has used convforge (and, for fork, while its
    background thread may be compiling) compute the same values, without hanging."""
    if context not in torch.multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} start method on this platform")
    ds = _Filtered()
    expect = [ds[i] for i in range(len(ds))]
    monkeypatch.setattr(_compile, "_READY", set())
    monkeypatch.setattr(_compile, "_QUEUED", set())
    _compile.request(["winograd"], torch.float64)          # a thread busy while forking
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                         multiprocessing_context=context, timeout=240)
    got = [b for batch in loader for b in zip(*batch, strict=True)]
    assert len(got) == len(expect)
    for (a, b), (ea, eb) in zip(got, expect, strict=True):
        assert_close(a, ea)
        assert_close(b, eb)
    _compile.wait(timeout=300)


def test_only_the_kernels_auto_would_choose_are_compiled(cold):
    """What the background thread gets is what the plan with every algorithm would use,
    and nothing when that plan needs no compiled kernel."""
    specs = [make_spec("conv2d", (1, 1, 512, 512), (1, 1, 5, 5), padding=2),
             make_spec("conv2d", (8, 16, 16, 16), (16, 16, 3, 3), padding=1),
             make_spec("conv2d", (1, 32, 32, 32), (32, 1, 3, 3), padding=1, groups=32)]
    for spec in specs:
        with backends_off():
            full = dispatch.choose_plan(spec, grads=(True, True))
        cold.clear()
        dispatch.choose_plan(spec, grads=(True, True))
        wanted = set(full) & set(_compile.COMPILED)
        assert {n for names, _ in cold for n in names} == wanted, (spec, full, cold)
