"""Plans: built and checked once per configuration, reused, forgotten when a layer changes;
passes of one call on different algorithms."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import dispatch, plan
from convforge import nn as cnn
from helpers import assert_close


@pytest.fixture
def builds(monkeypatch):
    """Counts ConvPlan constructions."""
    count = []
    original = plan.ConvPlan.__init__

    def counting(self, *args, **kwargs):
        count.append(args[0])
        original(self, *args, **kwargs)
    monkeypatch.setattr(plan.ConvPlan, "__init__", counting)
    plan.clear_plans()
    return count


def test_functional_plans_are_reused_per_configuration(builds):
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    y1 = convforge.conv2d(x, w, padding=1)
    y2 = convforge.conv2d(x + 1, w, padding=1)                # same configuration
    assert len(builds) == 1
    assert_close(y2, F.conv2d(x + 1, w, padding=1))
    assert_close(y1, F.conv2d(x, w, padding=1))
    convforge.conv2d(x[:1], w, padding=1)                     # another shape
    convforge.conv2d(x.requires_grad_(), w, padding=1)        # another gradient need
    convforge.conv2d(x, w, padding=2)                         # another argument
    assert len(builds) == 4
    convforge.conv2d(x, w, padding=[1, 1])                    # unhashable: works, uncached
    convforge.conv2d(x, w, padding=[1, 1])
    assert len(builds) == 6


def test_errors_are_raised_on_every_call(builds):
    x, w = torch.randn(1, 5, 8, 8), torch.randn(4, 2, 3, 3)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible by groups"):
            convforge.conv2d(x, w, groups=2)


def test_layer_plans_follow_its_arguments(builds):
    layer = cnn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    layer(x)
    layer(x)
    assert len(builds) == 1 and len(layer.plans()) == 1
    layer.stride = (2, 2)                                      # torch reads it every call
    assert layer(x).shape == (2, 4, 4, 4)
    assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, stride=2, padding=1))
    layer.weight = torch.nn.Parameter(torch.randn(4, 3, 5, 5))   # a new kernel size
    layer.kernel_size, layer.padding = (5, 5), (2, 2)
    assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, stride=2, padding=2))


def test_layers_copy_and_pickle_without_plans():
    layer = cnn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 6, 6)
    y = layer(x)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert other.plans() == {}
        assert_close(other(x), y)
    assert layer.plans()                                       # the original keeps its own


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_torch_kernels(dtype, monkeypatch):
    monkeypatch.setenv("CONVFORGE_ALGORITHM", "torch")
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    y = convforge.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=1)
    assert y.dtype == dtype
    ref = F.conv2d(x.to(dtype).float(), w.to(dtype).float(), b.to(dtype).float(), padding=1)
    assert_close(y, ref.to(dtype), dtype)


def test_unbatched_and_channels_last_inputs():
    layer = cnn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    ref = F.conv2d(x, layer.weight, layer.bias, padding=1)
    assert_close(layer(x[0]), ref[0])
    xl = x.contiguous(memory_format=torch.channels_last)
    assert_close(layer(xl), ref)
    assert set(dispatch.choose_plan(convforge.make_spec("conv2d", x.shape, (4, 3, 3, 3),
                                                        padding=1),
                                    channels_last=True)) == {"torch"}


def _mixed(monkeypatch, fastest):
    """A measured plan with a given fastest algorithm per pass."""
    dispatch.clear_measurements()
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    monkeypatch.setattr(dispatch, "time_pass",
                        lambda name, pass_, *a, **k: 0.1 if fastest[pass_] == name else 1.0)


def test_mixed_passes_gradients_and_double_backward(monkeypatch):
    _mixed(monkeypatch, {"forward": "torch", "grad_input": "depthwise",
                         "grad_weight": "direct"})
    layer = cnn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, measure=True).double()
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    layer(x)
    assert set(layer.plans().values()) == {"torch/depthwise/direct"}

    def f(a, w):
        return layer._conv_forward(a, w, None)
    w = layer.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))
    dispatch.clear_measurements()


def test_unneeded_passes_do_not_decide_native_torch(monkeypatch):
    """The first layer of a network needs no input gradient: torch's forward and weight
    gradient make it torch's own F.conv2d, whatever the input gradient would be."""
    _mixed(monkeypatch, {"forward": "torch", "grad_input": "im2col", "grad_weight": "torch"})
    layer = cnn.Conv2d(3, 4, 3, measure=True)
    x = torch.randn(1, 3, 8, 8)
    y = layer(x)
    assert set(layer.plans().values()) == {"torch"}
    assert y.grad_fn.name() == "ConvolutionBackward0"             # torch's own autograd
    dispatch.clear_measurements()


@pytest.mark.parametrize("name", ["auto"] + convforge.algorithms())
def test_output_layout_follows_the_input_as_in_torch(name):
    """NCHW in, NCHW-contiguous out; channels_last in, channels_last out -- whatever layout
    the algorithm computes in (winograd and im2col's NHWC columns work in NHWC)."""
    cases = [((2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1)),
             ((2, 3, 20, 20), (8, 3, 7, 7), dict(padding=3, stride=2)),
             ((2, 8, 12, 12), (8, 1, 3, 3), dict(padding=1, groups=8))]
    for xs, ws, kw in cases:
        spec = convforge.make_spec("conv2d", xs, ws, **kw)
        if name != "auto" and dispatch.REGISTRY[name].supports(spec, torch.float32,
                                                                torch.device("cpu")):
            continue
        x, w = torch.randn(xs), torch.randn(ws)
        for fmt in (torch.contiguous_format, torch.channels_last):
            for grad in (False, True):
                xin = x.clone(memory_format=fmt).requires_grad_(grad)
                y = convforge.conv2d(xin, w, algorithm=name, **kw)
                assert y.is_contiguous(memory_format=fmt), (name, xs, fmt, grad)
                assert_close(y, F.conv2d(x, w, **kw), factor=10.0)


def test_environment_override_reaches_cached_plans(monkeypatch):
    """CONVFORGE_ALGORITHM is part of every plan key: setting or changing it after a layer
    or function has cached a plan takes effect on the next call."""
    monkeypatch.delenv("CONVFORGE_ALGORITHM", raising=False)
    layer = cnn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 7, 7)
    with torch.no_grad():
        layer(x)
        for name in ("direct", "fft", "im2col"):
            monkeypatch.setenv("CONVFORGE_ALGORITHM", name)
            y = layer(x)
            assert list(layer.plans().values())[-1] == name
            assert_close(y, F.conv2d(x, layer.weight, layer.bias, padding=1))
            convforge.conv2d(x, layer.weight, padding=1)
            assert convforge.plan.conv_plan(
                "conv2d", x, layer.weight, None, 1, 1, 1, 1, "zeros", "auto").label == name
