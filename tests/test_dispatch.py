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
def test_choice_is_deterministic_supported_and_never_the_oracle(dtype, monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    for xs, ws, kw in GRID:
        spec = _spec(xs, ws, kw)
        for grads in [(False, False), (True, True), (False, True)]:
            plan = dispatch.choose_plan(spec, dtype, "cpu", grads=grads, measure=False)
            assert plan == dispatch.choose_plan(spec, dtype, "cpu", grads=grads, measure=False)
            for name in plan:
                assert name != "reference" and REGISTRY[name].auto
                assert REGISTRY[name].supports(spec, dtype, CPU) is None
                assert name in dispatch.candidates(spec, dtype, "cpu")
            if not grads[0]:                    # an unneeded pass repeats the forward's
                assert plan[1] == plan[0]
        assert dispatch.choose_algorithm(spec, dtype) == dispatch.choose_plan(spec, dtype)[0]


def test_torch_kernels_are_candidates():
    spec = _spec((2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1))
    assert {"torch", "torch_cl"} <= set(dispatch.candidates(spec))
    assert "torch" not in dispatch.candidates(spec, torch.complex64)   # no complex grads


def test_torch_wins_ties(monkeypatch):
    """Another algorithm replaces torch's kernel only when clearly faster."""
    spec = _spec((1, 3, 10, 10), (4, 3, 3, 3), dict(padding=1))
    dispatch.clear_measurements()
    margin = dispatch.TORCH_MARGIN

    def timer(name, pass_, *args, **kw):
        return {"torch": 1.0, "im2col": (margin + 1) / 2, "direct": 0.5 * margin}.get(name, 9)
    monkeypatch.setattr(dispatch, "time_pass", timer)
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    assert dispatch.choose_plan(spec, grads=(True, True), measure=True) == ("direct",) * 3
    dispatch.clear_measurements()
    monkeypatch.setattr(dispatch, "time_pass", lambda name, *a, **k: {
        "torch": 1.0, "im2col": (margin + 1) / 2}.get(name, 9))
    assert dispatch.choose_plan(spec, grads=(True, True), measure=True) == ("torch",) * 3
    dispatch.clear_measurements()


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


def test_measure_times_each_needed_pass_once_and_caches(monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    dispatch.clear_measurements()
    spec = _spec((1, 3, 10, 10), (4, 3, 3, 3), dict(padding=1))
    calls = []
    fastest = {"forward": "shift", "grad_input": "im2col", "grad_weight": "direct"}

    def fake_timer(name, pass_, *args, **kw):   # a known ranking per pass
        calls.append((name, pass_))
        return 0.1 if fastest[pass_] == name else 1.0
    monkeypatch.setattr(dispatch, "time_pass", fake_timer)
    names = dispatch.candidates(spec)
    assert dispatch.choose_algorithm(spec, measure=True) == "shift"
    assert sorted(calls) == sorted((n, "forward") for n in names)     # forward only
    calls.clear()
    plan = dispatch.choose_plan(spec, grads=(True, True), measure=True)
    assert plan == ("shift", "im2col", "direct")
    assert len(calls) == 3 * len(names)
    calls.clear()
    assert dispatch.choose_plan(spec, grads=(True, True), measure=True) == plan
    assert calls == []                                                 # cached
    assert dispatch.choose_plan(spec, grads=(False, True), measure=True) == (
        "shift", "shift", "direct")                                    # its own entry
    dispatch.clear_measurements()


def test_global_benchmark_switch(monkeypatch):
    import convforge

    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    dispatch.clear_measurements()
    spec = _spec((1, 3, 10, 10), (4, 3, 3, 3), dict(padding=1))
    monkeypatch.setattr(dispatch, "time_pass",
                        lambda name, *a, **k: 0.1 if name == "shift" else 1.0)
    monkeypatch.setattr(convforge.backends, "benchmark", True)
    assert dispatch.choose_algorithm(spec, measure=None) == "shift"
    x, w = torch.randn(1, 3, 10, 10), torch.randn(4, 3, 3, 3)
    layer = convforge.nn.Conv2d(3, 4, 3, padding=1)
    layer(x)
    assert set(layer.plans().values()) == {"shift"}
    monkeypatch.setattr(convforge.backends, "benchmark", False)
    layer.measure = True                                 # per layer, whatever the switch
    layer(x)
    assert set(layer.plans().values()) == {"shift"}
    assert convforge.conv2d(x, w, padding=1, measure=True).shape == (1, 4, 10, 10)
    dispatch.clear_measurements()


def test_time_algorithm_and_time_pass_measure_real_passes():
    spec = _spec((1, 2, 6, 6), (2, 2, 3, 3), dict(padding=1))
    for train in (False, True):
        assert 0 < dispatch.time_algorithm("im2col", spec, train=train, repeats=1) < 5
    for name in ("im2col", "direct", "torch"):
        for pass_ in dispatch.PASSES:
            for cl in (False, True):
                assert 0 < dispatch.time_pass(name, pass_, spec, repeats=1,
                                              channels_last=cl) < 5


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
            for pass_ in dispatch.PASSES:
                t = dispatch.predicted_seconds(name, spec, pass_=pass_)
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


def test_predictor_follows_measurements_near_them_and_the_fit_elsewhere():
    """A measured shape is predicted by its own measurement (up to the prior's pull), a
    shape of another kind by the fitted model alone."""
    dense = ((4, 16, 16, 16), (16, 16, 3, 3), {"padding": 1})
    model = {"forward": {"im2col": {"coef": [1.0, 0, 0, 0, 0]}}, "grad_input": {},
             "grad_weight": {}, "shapes": {"a": list(dense)},
             "measurements": [{"label": "a", "algo": "im2col", "forward": 1e-3}]}
    pred = dispatch.Predictor(model)
    spec = _spec(*dense)
    assert pred.seconds("im2col", spec) == pytest.approx(1e-3, rel=0.1)
    assert pred.fitted("im2col", spec) == pytest.approx(REGISTRY["im2col"].cost(spec, torch.float32,
                                                                               CPU))
    depthwise = _spec((4, 16, 16, 16), (16, 1, 3, 3), {"padding": 1, "groups": 16})
    assert pred.correction("im2col", depthwise, "forward") == 0.0
    wide = _spec((4, 32, 16, 16), (32, 32, 3, 3), {"padding": 1})     # twice the channels
    far = _spec((4, 512, 16, 16), (512, 512, 3, 3), {"padding": 1})
    bigger = _spec((16, 16, 32, 32), (16, 16, 3, 3), {"padding": 1})  # larger batch, image
    full = pred.correction("im2col", spec, "forward")
    assert 0 < abs(pred.correction("im2col", wide, "forward")) < abs(full)
    assert abs(pred.correction("im2col", far, "forward")) < 1e-3 * abs(full)
    # batch and pixels count a third: the same layer at 4x the batch and 4x the pixels
    # keeps more of the correction than twice the channels does
    assert abs(pred.correction("im2col", bigger, "forward")) > abs(
        pred.correction("im2col", wide, "forward"))


def test_one_fit_per_thread_count_nearest_is_used():
    models = dispatch.cost_models()
    assert {1, 2} <= set(models), "both shipped fits load"
    for t in (1, 2):
        assert dispatch.cost_model(t)["threads"] == t
    assert dispatch.cost_model(16)["threads"] == max(models)
    assert dispatch.cost_model(0)["threads"] == min(models)
    # the prediction is the chosen fit's: the two fits measured different machines states
    spec = _spec((8, 16, 16, 16), (16, 16, 3, 3), dict(padding=1))
    p1 = dispatch.predicted_seconds("torch", spec, threads=1)
    p2 = dispatch.predicted_seconds("torch", spec, threads=2)
    assert p1 != p2


def test_plan_follows_torch_thread_count(monkeypatch):
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    shapes = [((32, 1, 16, 16), (6, 1, 5, 5), 1), ((1, 32, 32, 32), (32, 1, 3, 3), 32),
              ((32, 3, 32, 32), (16, 3, 3, 3), 1), ((8, 16, 16, 16), (16, 16, 3, 3), 1)]
    before = torch.get_num_threads()
    differ = 0
    try:
        for xs, ws, groups in shapes:
            spec = _spec(xs, ws, dict(padding=1, groups=groups))
            wants = {}
            for t in (1, 2):
                wants[t] = dispatch.choose(
                    dispatch.candidates(spec), dispatch.PASSES,
                    lambda n, p, t=t, s=spec: dispatch.predicted_seconds(n, s, pass_=p, threads=t))
                torch.set_num_threads(t)
                assert dispatch.choose_plan(spec, grads=(True, True)) == wants[t], (xs, t)
            differ += wants[1] != wants[2]
    finally:
        torch.set_num_threads(before)
    assert differ, "the shapes must include one where the two fits disagree"
