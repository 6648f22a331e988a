"""choose_algorithm: pure, never the oracle, respects supports/tolerance, override, measure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convforge import conv2d, dispatch, make_spec
from convforge.algorithms import REGISTRY

CPU = torch.device("cpu")
GRID = [
    ((2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1)),
    ((2, 8, 12, 12), (16, 8, 1, 1), {}),
    ((2, 3, 20, 20), (8, 3, 7, 7), dict(padding=3, stride=2)),
    ((2, 6, 10, 10), (6, 1, 5, 5), dict(padding=2, groups=6)),
    ((1, 1, 40, 40), (1, 1, 9, 9), dict(padding=4)),
    ((2, 4, 9, 9), (4, 2, 3, 3), dict(dilation=2, groups=2)),
]


def _spec(xs, ws, kw):
    return make_spec("conv2d", xs, ws, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_choice_is_deterministic_supported_and_never_a_baseline(dtype, monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    for xs, ws, kw in GRID:
        spec = _spec(xs, ws, kw)
        name = dispatch.choose_algorithm(spec, dtype, "cpu")
        assert name == dispatch.choose_algorithm(spec, dtype, "cpu")
        assert name not in ("reference", "torch") and REGISTRY[name].auto
        assert REGISTRY[name].supports(spec, dtype, CPU) is None
        assert name in dispatch.candidates(spec, dtype, "cpu")


def test_candidates_respect_supports():
    spec = _spec((1, 2, 9, 9), (2, 2, 5, 5), {})
    assert "winograd" not in dispatch.candidates(spec)
    assert "winograd" in dispatch.candidates(_spec((1, 2, 9, 9), (2, 2, 3, 3), {}))


def test_environment_override(monkeypatch):
    spec = _spec((1, 2, 9, 9), (2, 2, 3, 3), {})
    monkeypatch.setenv("CONVFORGE_ALGORITHM", "shift")
    assert dispatch.choose_algorithm(spec) == "shift"
    monkeypatch.setenv("CONVFORGE_ALGORITHM", "winograd")  # unsupported for 5x5: falls back
    spec5 = _spec((1, 2, 9, 9), (2, 2, 5, 5), {})
    assert dispatch.choose_algorithm(spec5) in dispatch.candidates(spec5)
    monkeypatch.setenv("CONVFORGE_ALGORITHM", "reference")  # never chosen by auto
    assert dispatch.choose_algorithm(spec) != "reference"


def test_measure_times_once_and_caches(monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    dispatch.clear_measurements()
    spec = _spec((1, 3, 10, 10), (4, 3, 3, 3), dict(padding=1))
    calls = []

    def fake_timer(name, *args, **kw):          # a known ranking: shift is "fastest"
        calls.append(name)
        return 0.5 if name == "shift" else 1.0
    monkeypatch.setattr(dispatch, "time_algorithm", fake_timer)
    assert dispatch.choose_algorithm(spec, measure=True) == "shift"
    n_calls = len(calls)
    assert sorted(calls) == sorted(dispatch.candidates(spec))
    assert dispatch.choose_algorithm(spec, measure=True) == "shift"
    assert len(calls) == n_calls
    dispatch.choose_algorithm(spec, measure=True, train=True)  # its own cache entry
    assert len(calls) == 2 * n_calls
    dispatch.clear_measurements()


def test_time_algorithm_measures_a_real_pass():
    spec = _spec((1, 2, 6, 6), (2, 2, 3, 3), {})
    for train in (False, True):
        assert 0 < dispatch.time_algorithm("im2col", spec, train=train, repeats=1) < 5


def test_inaccurate_algorithm_is_excluded(monkeypatch):
    spec = _spec((1, 2, 9, 9), (2, 2, 3, 3), {})
    fake = dict(dispatch.cost_model(), errors={"im2col": {"float32": 1e-2, "float64": 1e-3}})
    monkeypatch.setattr(dispatch, "cost_model", lambda: fake)
    assert "im2col" not in dispatch.candidates(spec, torch.float32)
    assert "im2col" not in dispatch.candidates(spec, torch.float64)


def test_predictions_are_positive_and_finite():
    for xs, ws, kw in GRID:
        spec = _spec(xs, ws, kw)
        for name in dispatch.candidates(spec):
            for train in (False, True):
                t = dispatch.predicted_seconds(name, spec, train=train)
                assert 0 < t < float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chosen_algorithm_error_within_tolerance(dtype, monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    torch.manual_seed(0)
    for xs, ws, kw in GRID:
        x, w = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype)
        ref = F.conv2d(x.double(), w.double(), **kw)
        err = (conv2d(x, w, **kw).double() - ref).abs().max() / ref.abs().max()
        assert err <= dispatch.TOLERANCE[dtype], (xs, ws, kw)


def test_resolve_errors():
    spec = _spec((1, 2, 9, 9), (2, 2, 5, 5), {})
    with pytest.raises(TypeError, match="algorithm must be a string"):
        dispatch.resolve("conv2d", 3, spec, torch.float32, CPU)
    with pytest.raises(ValueError, match="does not support"):
        dispatch.resolve("conv2d", "winograd", spec, torch.float32, CPU)
