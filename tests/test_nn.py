"""convforge.nn: drop-ins for torch.nn.Conv2d / ConvTranspose2d, and the book's Corr2d."""

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn as tnn

import convforge
from convforge import nn as cnn

CONV_CASES = [
    ((3, 8, 3), {}),
    ((3, 8, (3, 5)), {"stride": 2, "padding": 1}),
    ((4, 8, 3), {"dilation": 2, "groups": 2, "bias": False}),
    ((4, 4, 3), {"groups": 4, "padding": (2, 1), "padding_mode": "reflect"}),
    ((2, 6, (2, 4)), {"padding": "same"}),
    ((2, 6, 3), {"padding": "valid", "padding_mode": "circular"}),
    ((2, 6, 3), {"padding": 1, "padding_mode": "replicate", "stride": (1, 2)}),
]


def _pair_of(cls_ours, cls_torch, args, kwargs, seed=0):
    torch.manual_seed(seed)
    ours = cls_ours(*args, **kwargs)
    torch.manual_seed(seed)
    theirs = cls_torch(*args, **kwargs)
    return ours, theirs


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("args,kwargs", CONV_CASES)
def test_conv2d_matches_torch(args, kwargs):
    ours, theirs = _pair_of(cnn.Conv2d, tnn.Conv2d, args, kwargs)
    # same parameters (names, shapes, and -- drawn in the same order -- the same values)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert p.shape == q.shape and torch.equal(p, q)
    assert repr(ours) == repr(theirs)
    x = torch.randn(2, args[0], 11, 13, dtype=torch.float64)
    ours, theirs = ours.double(), theirs.double()
    y, z = ours(x), theirs(x)
    torch.testing.assert_close(y, z, rtol=1e-10, atol=1e-10)
    # gradients of every parameter and the input
    xg, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(z)
    (ours(xg) * g).sum().backward()
    (theirs(xt) * g).sum().backward()
    torch.testing.assert_close(xg.grad, xt.grad)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_init_distribution_bounds():
    """Kaiming-uniform (a = sqrt 5) gives bound 1/sqrt(fan_in) for weight and bias alike."""
    layer = cnn.Conv2d(16, 64, 3)
    bound = 1 / math.sqrt(16 * 9)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert layer.weight.abs().max() > 0.9 * bound  # fills the interval (36864 draws)
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_state_dict_round_trip(direction):
    ours, theirs = cnn.Conv2d(3, 5, 3, padding=1), tnn.Conv2d(3, 5, 3, padding=1)
    src, dst = (ours, theirs) if direction == "ours->torch" else (theirs, ours)
    torch.nn.init.normal_(src.weight)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 8, 8)
    # "auto" may pick winograd: float32 tolerance of tests/helpers.py (2e-4), not torch's
    torch.testing.assert_close(src(x), dst(x), rtol=2e-4, atol=2e-4)
    t_ours, t_theirs = cnn.ConvTranspose2d(3, 4, 3, stride=2), tnn.ConvTranspose2d(3, 4, 3, 2)
    t_theirs.load_state_dict(t_ours.state_dict())
    xt = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(t_ours(xt), t_theirs(xt))


def test_extensions_beyond_torch():
    x = torch.randn(1, 2, 9, 10, dtype=torch.float64)
    layer = cnn.Conv2d(2, 3, 3, stride=2, padding="same", padding_mode="symmetric").double()
    y = layer(x)
    assert y.shape == (1, 3, 5, 5)  # ceil(9/2), ceil(10/2)
    # TF 'SAME' for 9, k3, s2: total 2 -> (1, 1); for 10: total 1 -> (0, 1); symmetric = numpy
    xp = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (0, 1)), "symmetric"))
    torch.testing.assert_close(y, F.conv2d(xp, layer.weight, layer.bias, stride=2))
    per_side = cnn.Conv2d(2, 3, 3, padding=((0, 2), (1, 0))).double()
    expected = F.conv2d(F.pad(x, (1, 0, 0, 2)), per_side.weight, per_side.bias)
    torch.testing.assert_close(per_side(x), expected)
    assert "padding=((0, 2), (1, 0))" in repr(per_side)
    algo = cnn.Conv2d(2, 3, 3, algorithm="im2col")
    assert repr(algo).endswith("algorithm=im2col)")
    assert "algorithm" not in repr(cnn.Conv2d(2, 3, 3))


@pytest.mark.parametrize("kwargs,exc,text", [
    ({"groups": 4}, ValueError, "in_channels (6) must be divisible by groups (4)"),
    ({"groups": 3, "out_channels": 7}, ValueError, "out_channels (7) must be divisible"),
    ({"padding": "full"}, ValueError, "padding must be"),
    ({"padding_mode": "mirror"}, ValueError, "padding_mode must be one of"),
    ({"stride": 0}, ValueError, "stride must be positive"),
    ({"kernel_size": 2.5}, TypeError, "kernel_size must be an int or a pair"),
    ({"in_channels": 0}, ValueError, "in_channels must be positive"),
    ({"padding": 4, "padding_mode": "reflect", "kernel_size": 1}, None, None),
    ({"algorithm": "magic"}, ValueError, "algorithm must be 'auto' or one of"),
])
def test_conv2d_constructor_errors(kwargs, exc, text):
    args = {"in_channels": 6, "out_channels": 12, "kernel_size": 3, **kwargs}
    if exc is None:
        cnn.Conv2d(**args)  # large reflect padding is only checked against a real input
        return
    with pytest.raises(exc) as info:
        cnn.Conv2d(**args)
    assert str(info.value).startswith("Conv2d: ") and text in str(info.value)


def test_works_in_sequential_with_optim_and_modes():
    torch.manual_seed(1)
    model = tnn.Sequential(cnn.Conv2d(1, 4, 3, padding=1), tnn.ReLU(), cnn.Conv2d(4, 1, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 6, 6)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        a = model(x)
    with torch.inference_mode():
        b = model(x)
    assert not a.requires_grad and not b.requires_grad
    torch.testing.assert_close(a, b)
    d = copy.deepcopy(model).to(torch.float64)
    assert d[0].weight.dtype == torch.float64
    torch.testing.assert_close(d(x.double()).float(), a, rtol=1e-5, atol=1e-5)
    half = copy.deepcopy(model).to(dtype=torch.bfloat16)
    with torch.no_grad():
        assert half(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_pickle_and_torch_save(tmp_path):
    layer = cnn.Conv2d(2, 3, 3, stride=2, padding="same", padding_mode="symmetric",
                       algorithm="shift")
    x = torch.randn(1, 2, 7, 7)
    clone = pickle.loads(pickle.dumps(layer))
    torch.testing.assert_close(clone(x), layer(x))
    assert repr(clone) == repr(layer)
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(loaded(x), layer(x))
    torch.save(layer.state_dict(), tmp_path / "sd.pt")
    fresh = cnn.Conv2d(2, 3, 3, stride=2, padding="same", padding_mode="symmetric")
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt"))
    torch.testing.assert_close(fresh(x), layer(x))


@pytest.mark.parametrize("args,kwargs", [
    ((4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
    ((4, 6, (3, 2)), {"dilation": 2, "bias": False}),
    ((3, 2, 4), {"stride": (2, 3), "padding": (1, 0)}),
])
def test_conv_transpose2d_matches_torch(args, kwargs):
    ours, theirs = _pair_of(cnn.ConvTranspose2d, tnn.ConvTranspose2d, args, kwargs)
    assert ours.weight.shape == (args[0], args[1] // kwargs.get("groups", 1), *theirs.kernel_size)
    assert torch.equal(ours.weight, theirs.weight)
    assert repr(ours) == repr(theirs)
    x = torch.randn(2, args[0], 5, 6, dtype=torch.float64)
    ours, theirs = ours.double(), theirs.double()
    torch.testing.assert_close(ours(x), theirs(x))


def test_conv_transpose2d_output_size():
    ours, theirs = _pair_of(cnn.ConvTranspose2d, tnn.ConvTranspose2d, (3, 2, 3),
                            {"stride": 3, "padding": 1})
    x = torch.randn(1, 3, 4, 5)
    for size in [(10, 13), (11, 14), (12, 15), [1, 2, 12, 13]]:
        torch.testing.assert_close(ours(x, output_size=size), theirs(x, output_size=size))
    for bad in [(9, 13), (10, 16)]:
        with pytest.raises(ValueError, match="valid sizes range from") as ours_err:
            ours(x, output_size=bad)
        with pytest.raises(ValueError, match="valid sizes range from"):
            theirs(x, output_size=bad)
        assert "[10, 13] to [12, 15]" in str(ours_err.value)
    with pytest.raises(ValueError, match="padding_mode must be 'zeros'"):
        cnn.ConvTranspose2d(3, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        cnn.ConvTranspose2d(3, 2, 3, stride=2, output_padding=2)


def test_corr2d_layer_learns_the_edge_kernel():
    """The chapter's loop with the book's layer (lr 0.03, no bias) recovers [[1, -1]]."""
    x = torch.ones(6, 8)
    x[:, 2:6] = 0
    k = torch.tensor([[1.0, -1.0]])
    y = convforge.corr2d(x, k)
    layer = cnn.Corr2d((1, 2), bias=False)
    for _ in range(30):
        loss = ((layer(x) - y) ** 2).sum()
        layer.zero_grad()
        loss.backward()
        with torch.no_grad():
            layer.weight -= 0.03 * layer.weight.grad
    torch.testing.assert_close(layer.weight.detach(), k, atol=1e-3, rtol=0)
    assert cnn.Corr2d(3).bias.shape == (1,)


def test_corr2d_layer_rejects_batches_clearly():
    layer = cnn.Corr2d((1, 2))
    with pytest.raises(ValueError) as info:
        layer(torch.ones(1, 1, 6, 8))
    msg = str(info.value)
    assert "(1, 1, 6, 8)" in msg and "2D (height, width)" in msg and "convforge.nn.Conv2d" in msg
