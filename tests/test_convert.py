"""convforge.nn.convert / revert: torch's convolutions in a model to convforge's, in place."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convforge
from convforge import nn as cnn
from helpers import assert_close


class Net(nn.Module):
    """Nested modules, a conv shared by two parents, BatchNorm buffers, every conv type."""

    def __init__(self):
        super().__init__()
        shared = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.a = nn.Sequential(shared, nn.ReLU())
        self.b = nn.Sequential(shared, nn.Conv2d(8, 4, 1))
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.seq = nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular")

    def forward(self, x):
        y = self.b(self.a(self.stem(x)))                       # (N, 4, 8, 8)
        y = self.up(y)                                         # (N, 2, 16, 16)
        return self.seq(y.flatten(2))                          # (N, 3, 256)


def _pair(seed=0):
    torch.manual_seed(seed)
    model = Net()
    return model, copy.deepcopy(model)


def _loss_and_grads(model, x):
    model.zero_grad()
    loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_outputs_and_gradients_match_torch():
    model, ref = _pair()
    x = torch.randn(2, 3, 16, 16)
    convforge.nn.convert(model)
    kinds = {type(m) for m in model.modules()}
    assert {cnn.Conv1d, cnn.Conv2d, cnn.ConvTranspose2d} <= kinds
    assert not kinds & {nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d}
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(ref, mode)()
        (lo, go), (lr, gr) = _loss_and_grads(model, x), _loss_and_grads(ref, x)
        assert_close(lo, lr, msg=mode)
        for a, b in zip(go, gr, strict=True):
            assert_close(a, b, msg=f"{mode} gradient")


def test_same_parameters_buffers_and_hooks():
    model, _ = _pair()
    params = {name: p for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}
    calls = []
    model.stem[0].register_forward_hook(lambda *args: calls.append("hook"))
    out = convforge.nn.convert(model)
    assert out is model
    assert all(p is params[name] for name, p in model.named_parameters())
    assert all(b is buffers[name] for name, b in model.named_buffers())
    model(torch.randn(1, 3, 16, 16))
    assert calls == ["hook"]
    assert model.a[0] is model.b[0]                            # still shared, converted once
    assert isinstance(model.a[0], cnn.Conv2d)


def test_optimizer_built_before_keeps_working():
    model, ref = _pair()
    x = torch.randn(2, 3, 16, 16)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref)]
    for step in range(3):
        if step == 1:                                          # convert between steps
            convforge.nn.convert(model)
        for m, opt in zip((model, ref), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert_close(p, q, msg="parameters after three momentum steps")
    state = opts[0].state_dict()["state"]
    assert len(state) == len(list(model.parameters()))        # momentum buffers kept


def test_state_dict_round_trip_both_ways():
    model, ref = _pair()
    convforge.nn.convert(model)
    assert list(model.state_dict()) == list(ref.state_dict())
    torch.manual_seed(1)
    other = Net()
    buf = io.BytesIO()
    torch.save(other.state_dict(), buf)
    buf.seek(0)
    model.load_state_dict(torch.load(buf))                     # torch's into convforge's
    x = torch.randn(1, 3, 16, 16)
    assert_close(model.eval()(x), other.eval()(x))
    ref.load_state_dict(model.state_dict())                   # and back
    assert_close(ref.eval()(x), other(x))


def test_converting_twice_no_convolutions_and_a_bare_layer():
    model, _ = _pair()
    convforge.nn.convert(model, algorithm="im2col")
    before = {n: (type(m), getattr(m, "algorithm", None)) for n, m in model.named_modules()}
    convforge.nn.convert(model)                                # convforge's layers: untouched
    assert before == {n: (type(m), getattr(m, "algorithm", None))
                      for n, m in model.named_modules()}
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    assert convforge.nn.convert(plain) is plain
    assert [type(m) for m in plain.modules()] == [nn.Sequential, nn.Linear, nn.ReLU]
    layer = nn.Conv2d(2, 2, 3)
    assert convforge.nn.convert(layer) is layer and type(layer) is cnn.Conv2d


def test_subclasses_are_left_alone():
    class Special(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2
    model = nn.Sequential(Special(1, 1, 3))
    convforge.nn.convert(model)
    assert type(model[0]) is Special


def test_convert_arguments():
    with pytest.raises(ValueError, match="algorithm must be 'auto' or one of"):
        convforge.nn.convert(nn.Conv2d(1, 1, 3), algorithm="fastest")
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        convforge.nn.convert("model")
    layer = convforge.nn.convert(nn.Conv2d(1, 2, 3), algorithm="direct", measure=False)
    assert (layer.algorithm, layer.measure) == ("direct", False)
    assert "algorithm=direct" in repr(layer)


def test_revert_restores_torch_layers():
    model, ref = _pair()
    x = torch.randn(2, 3, 16, 16)
    convforge.nn.revert(convforge.nn.convert(model))
    assert {type(m) for m in model.modules()} == {type(m) for m in ref.modules()}
    assert not hasattr(model.stem[0], "algorithm")
    assert_close(model(x), ref(x))


@pytest.mark.parametrize("layer,reason", [
    (cnn.Conv2d(2, 2, 3, stride=2, padding="same"), "stride"),
    (cnn.Conv2d(2, 2, 3, padding=((0, 1), (1, 1))), "per-side padding"),
    (cnn.Conv2d(2, 2, 3, padding=1, padding_mode="symmetric"), "symmetric"),
    (cnn.Conv1d(2, 2, 3, padding=(0, 2)), "left, right"),
])
def test_revert_refuses_what_torch_cannot_express(layer, reason):
    model = nn.Sequential(nn.Conv2d(2, 2, 1), layer)
    with pytest.raises(ValueError, match=reason):
        convforge.nn.revert(convforge.nn.convert(model))
    assert type(model[0]) is cnn.Conv2d                        # nothing changed


def test_reverted_padding_modes_and_same_match_torch():
    for kw in ({"padding": "same", "dilation": 2}, {"padding": (2, 1), "padding_mode": "reflect"},
               {"padding": ((1, 1), (2, 2)), "padding_mode": "circular"}):
        torch.manual_seed(0)
        ours = nn.Sequential(cnn.Conv2d(2, 3, (3, 4), **kw))
        x = torch.randn(1, 2, 9, 10)
        expected = ours(x)
        convforge.nn.revert(ours)
        assert type(ours[0]) is nn.Conv2d
        assert_close(ours(x), expected, msg=str(kw))


def test_torch_kernels_keep_convforge_checks_and_extras(monkeypatch):
    """Forced onto torch's kernels, a layer still has strided 'same', padding modes and
    convforge's error messages."""
    from helpers import tf_same_padding, torch_pad

    monkeypatch.setenv("CONVFORGE_ALGORITHM", "torch")
    layer = cnn.Conv2d(3, 4, 3, stride=2, padding="same", padding_mode="symmetric")
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    y = layer(x)
    assert set(layer.plans().values()) == {"torch"}
    pads = tf_same_padding(11, 3, 2) + tf_same_padding(10, 3, 2)
    xt = x.detach().clone().requires_grad_()
    ref = F.conv2d(torch_pad(xt, pads, "symmetric"), layer.weight, layer.bias, stride=2)
    assert_close(y, ref)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    assert_close(x.grad, xt.grad)
    with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible"):
        convforge.conv2d(torch.randn(1, 5, 8, 8), torch.randn(4, 2, 3, 3), groups=2)
    with pytest.raises(RuntimeError, match="weight.shape\\[1\\] \\* groups must equal"):
        layer(torch.randn(1, 4, 8, 8, dtype=torch.float64))
