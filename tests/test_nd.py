"""conv3d, conv_transpose1d, conv_transpose3d and their layers against torch (float64),
forward and every gradient, for every algorithm that runs the 2D sub-problems."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import convforge
from convforge import nn as cnn
from helpers import assert_close, tf_same_padding

ALGORITHMS = ["auto", "reference", "im2col", "fft", "direct", "torch"]


def _grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                    dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g, allow_unused=True)


def _compare(ours, theirs, inputs, msg):
    assert_close(ours, theirs, msg=msg)
    for a, b, name in zip(_grads(ours, inputs), _grads(theirs, inputs), "xwb", strict=False):
        if b is None:
            assert a is None or not a.abs().max(), f"{msg}: d{name}"
        else:
            assert_close(a, b, msg=f"{msg}: d{name}")


def _leaf(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


CONV3D_CASES = [
    dict(),
    dict(padding=1),
    dict(stride=2, padding=(1, 0, 2)),
    dict(stride=(2, 1, 3), padding=(1, 0, 1), dilation=(2, 1, 1)),
    dict(dilation=2, padding="same"),
    dict(padding="valid", groups=2),
    dict(stride=(1, 2, 1), padding=((2, 0), (1, 0), (0, 1))),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", range(len(CONV3D_CASES)))
def test_conv3d_matches_torch(algorithm, case):
    kw = CONV3D_CASES[case]
    groups = kw.get("groups", 1)
    x, w, b = _leaf(2, 4, 7, 8, 9), _leaf(6, 4 // groups, 3, 2, 3), _leaf(6)
    padding = kw.get("padding", 0)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):   # per side: pad first
        (f, bk), (t, bt), (lf, r) = padding
        xr = F.pad(x, (lf, r, t, bt, f, bk))
        ref = F.conv3d(xr, w, b, stride=kw.get("stride", 1), dilation=kw.get("dilation", 1))
    else:
        ref = F.conv3d(x, w, b, **kw)
    ours = convforge.conv3d(x, w, b, **kw, algorithm=algorithm)
    _compare(ours, ref, (x, w, b), f"{algorithm} {kw}")


def test_conv3d_depthwise_and_bias_free():
    x, w = _leaf(3, 6, 6, 7, 5), _leaf(6, 1, 3, 3, 3)
    for kw in (dict(padding=1, groups=6), dict(padding=2, dilation=2, groups=6),
               dict(stride=2, groups=6)):
        _compare(convforge.conv3d(x, w, **kw), F.conv3d(x, w, **kw), (x, w), str(kw))


@pytest.mark.parametrize("stride", [1, 2, 3, (3, 1, 2)])
def test_conv3d_strided_same(stride):
    x, w, b = _leaf(1, 2, 7, 8, 10), _leaf(3, 2, 3, 4, 2), _leaf(3)
    s = (stride,) * 3 if isinstance(stride, int) else stride
    pads = [tf_same_padding(n, k, si) for n, k, si in zip((7, 8, 10), (3, 4, 2), s,
                                                          strict=True)]
    xr = F.pad(x, (*pads[2], *pads[1], *pads[0]))
    ref = F.conv3d(xr, w, b, stride=s)
    ours = convforge.conv3d(x, w, b, stride=stride, padding="same")
    assert ours.shape[2:] == tuple(-(-n // si) for n, si in zip((7, 8, 10), s, strict=True))
    _compare(ours, ref, (x, w, b), f"same stride {stride}")


def _symmetric_pad3d(x, p):
    """NumPy's 'symmetric' pad (edge sample repeated) on the last three axes; as a
    differentiable gather built from NumPy's own index result."""
    idx = [np.pad(np.arange(n), (p, p), mode="symmetric") for n in x.shape[2:]]
    return x[:, :, idx[0]][:, :, :, idx[1]][..., idx[2]]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv3d_padding_modes(mode, stride):
    x, w, b = _leaf(2, 2, 5, 6, 7), _leaf(3, 2, 3, 3, 2), _leaf(3)
    if mode == "symmetric":
        xr = _symmetric_pad3d(x, 2)
    else:
        xr = F.pad(x, (2,) * 6, mode=mode)
    ref = F.conv3d(xr, w, b, stride=stride)
    ours = convforge.conv3d(x, w, b, stride=stride, padding=2, padding_mode=mode)
    _compare(ours, ref, (x, w, b), mode)


def test_conv3d_unbatched_and_numpy():
    x, w = torch.randn(2, 4, 5, 6, dtype=torch.float64), torch.randn(3, 2, 2, 2, 2,
                                                                    dtype=torch.float64)
    assert_close(convforge.conv3d(x, w), F.conv3d(x, w))
    out = convforge.conv3d(x.numpy(), w.numpy(), padding=1)
    assert isinstance(out, np.ndarray)
    assert_close(torch.from_numpy(out), F.conv3d(x, w, padding=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_conv3d_low_precision_dtypes(dtype):
    x, w = torch.randn(1, 3, 5, 6, 7), torch.randn(4, 3, 3, 3, 3)
    ours = convforge.conv3d(x.to(dtype), w.to(dtype), padding=1)
    assert ours.dtype == dtype
    ref = F.conv3d(x.to(dtype).double(), w.to(dtype).double(), padding=1)
    assert_close(ours, ref, dtype=dtype, factor=4.0)


TRANSPOSE3D_CASES = [
    dict(),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), groups=2),
    dict(stride=2, dilation=(1, 2, 1), output_padding=(0, 1, 0)),
    dict(padding=(2, 1, 1)),           # the crop removes taps entirely
]


@pytest.mark.parametrize("algorithm", ["auto", "reference", "im2col", "direct"])
@pytest.mark.parametrize("case", range(len(TRANSPOSE3D_CASES)))
def test_conv_transpose3d_matches_torch(algorithm, case):
    kw = TRANSPOSE3D_CASES[case]
    g = kw.get("groups", 1)
    x, w, b = _leaf(2, 4, 4, 5, 3), _leaf(4, 6 // g, 3, 2, 3), _leaf(6)
    ref = F.conv_transpose3d(x, w, b, **kw)
    ours = convforge.conv_transpose3d(x, w, b, **kw, algorithm=algorithm)
    _compare(ours, ref, (x, w, b), f"{algorithm} {kw}")


@pytest.mark.parametrize("kw", [dict(), dict(stride=3, padding=2, output_padding=1),
                                dict(stride=2, dilation=3, groups=2, output_padding=1)])
def test_conv_transpose1d_matches_torch(kw):
    g = kw.get("groups", 1)
    x, w, b = _leaf(3, 4, 11), _leaf(4, 6 // g, 5), _leaf(6)
    _compare(convforge.conv_transpose1d(x, w, b, **kw), F.conv_transpose1d(x, w, b, **kw),
             (x, w, b), str(kw))


def test_gradcheck_and_gradgradcheck():
    x, w, b = _leaf(1, 2, 4, 4, 3), _leaf(2, 2, 2, 3, 2), _leaf(2)
    f3 = lambda x, w, b: convforge.conv3d(x, w, b, stride=(2, 1, 1), padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(f3, (x, w, b))
    assert torch.autograd.gradgradcheck(f3, (x, w, b))
    t3 = lambda x, w, b: convforge.conv_transpose3d(x, w, b, stride=2)  # noqa: E731
    assert torch.autograd.gradcheck(t3, (x, w, b))
    assert torch.autograd.gradgradcheck(t3, (x, w, b))
    x1, w1 = _leaf(1, 2, 6), _leaf(2, 3, 3)
    t1 = lambda x, w: convforge.conv_transpose1d(x, w, stride=2, padding=1)  # noqa: E731
    assert torch.autograd.gradgradcheck(t1, (x1, w1))


BAD = [
    ("conv3d", (1, 4, 5, 5, 5), (6, 2, 3, 3, 3), dict(groups=4)),       # 4 % 4 ok, 6 % 4 no
    ("conv3d", (1, 6, 5, 5, 5), (6, 2, 3, 3, 3), dict(groups=4)),
    ("conv3d", (1, 2, 2, 5, 5), (3, 2, 3, 3, 3), dict()),              # kernel > depth
    ("conv3d", (1, 2, 5, 5, 5), (3, 2, 3, 3, 3), dict(stride=0)),
    ("conv3d", (1, 2, 5, 5, 5), (3, 2, 3, 3, 3), dict(padding=-1)),
    ("conv3d", (2, 5, 5, 5), (3, 2, 3, 3), dict()),                    # 4D weight
    ("conv3d", (1, 2, 5, 5, 5), (3, 3, 3, 3, 3), dict()),              # channels differ
    ("conv3d", (1, 2, 5, 5, 5), (3, 2, 3, 3, 3), dict(stride=(1, 2))),
    ("conv_transpose3d", (1, 2, 3, 3, 3), (2, 2, 3, 3, 3), dict(output_padding=1)),
    ("conv_transpose3d", (1, 2, 3, 3, 3), (2, 2, 3, 3, 3), dict(stride=2, output_padding=1)),
    ("conv_transpose3d", (1, 2, 3, 3, 3), (3, 2, 3, 3, 3), dict()),
    ("conv_transpose3d", (1, 2, 1, 1, 1), (2, 2, 1, 1, 1), dict(padding=1)),  # empty out
    ("conv_transpose1d", (1, 2, 3), (2, 2, 3), dict(stride=2, output_padding=2)),
    ("conv_transpose1d", (1, 2, 3), (2, 2, 3), dict(stride=2, output_padding=1)),
]


@pytest.mark.parametrize("name, xs, ws, kw", BAD)
def test_raises_iff_torch_raises(name, xs, ws, kw):
    x, w = torch.randn(xs), torch.randn(ws)
    try:
        ref = getattr(F, name)(x, w, **kw)
    except (RuntimeError, ValueError, TypeError) as e:
        torch_error = e
    else:
        torch_error = None
    if torch_error is None:
        out = getattr(convforge, name)(x, w, **kw)
        assert_close(out, ref, msg=name)
        return
    with pytest.raises((RuntimeError, ValueError, TypeError)) as info:
        getattr(convforge, name)(x, w, **kw)
    assert info.value.args[0].startswith(f"{name}: "), info.value.args[0]
    # torch's RuntimeError is matched by our errors (ConvShapeError is both)
    assert isinstance(info.value, type(torch_error)) or isinstance(info.value, RuntimeError)


def test_strided_same_error_is_not_raised_by_convforge():
    """torch refuses padding='same' with stride; convforge computes it (TF's rule)."""
    y = convforge.conv3d(torch.randn(1, 2, 5, 5, 5), torch.randn(3, 2, 3, 3, 3),
                         padding="same", stride=2)
    assert y.shape == (1, 3, 3, 3, 3)


@given(n=st.integers(1, 2), c=st.sampled_from([1, 2, 4]), m=st.integers(1, 2),
       size=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
       k=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       p=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
       d=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
       depthwise=st.booleans())
def test_conv3d_property_matches_torch(n, c, m, size, k, s, p, d, depthwise):
    groups = c if depthwise else 1
    x = torch.randn(n, c, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c * m, c // groups, *k, dtype=torch.float64, requires_grad=True)
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    try:
        ref = F.conv3d(x, w, **kw)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            convforge.conv3d(x, w, **kw)
        return
    _compare(convforge.conv3d(x, w, **kw), ref, (x, w), str(kw))


# ------------------------------------------------------------------------------- layers

LAYERS = [
    (nn.Conv3d, cnn.Conv3d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 3),
                                 stride=(2, 1, 1), padding=1, groups=2), (2, 4, 6, 7, 5)),
    (nn.Conv3d, cnn.Conv3d, dict(in_channels=2, out_channels=3, kernel_size=3, padding=1,
                                 padding_mode="reflect", bias=False), (1, 2, 5, 5, 5)),
    (nn.ConvTranspose3d, cnn.ConvTranspose3d,
     dict(in_channels=4, out_channels=2, kernel_size=3, stride=2, padding=1,
          output_padding=1), (1, 4, 3, 4, 2)),
    (nn.ConvTranspose1d, cnn.ConvTranspose1d,
     dict(in_channels=4, out_channels=6, kernel_size=5, stride=3, padding=1, groups=2,
          dilation=2), (2, 4, 9)),
]


@pytest.mark.parametrize("case", range(len(LAYERS)))
def test_layers_are_drop_ins(case):
    theirs_cls, ours_cls, kw, shape = LAYERS[case]
    torch.manual_seed(3)
    theirs = theirs_cls(**kw).double()
    torch.manual_seed(3)
    ours = ours_cls(**kw).double()
    assert repr(ours) == repr(theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for key, value in theirs.state_dict().items():      # torch's init, same draws
        assert torch.equal(ours.state_dict()[key], value), key
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = [x, ours.weight] + ([ours.bias] if ours.bias is not None else [])
    tparams = [x, theirs.weight] + ([theirs.bias] if theirs.bias is not None else [])
    a, b = ours(x), theirs(x)
    assert_close(a, b)
    g = torch.randn_like(b)
    for u, v in zip(torch.autograd.grad(a, params, g), torch.autograd.grad(b, tparams, g),
                    strict=True):
        assert_close(u, v)


def test_transpose_layer_output_size():
    up = cnn.ConvTranspose3d(2, 2, 3, stride=2, padding=1)
    ref = nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1)
    ref.load_state_dict(up.state_dict())
    x = torch.randn(1, 2, 3, 4, 5)
    out = up(x, output_size=(6, 8, 9))
    assert out.shape[2:] == (6, 8, 9)
    assert_close(out, ref(x, output_size=(6, 8, 9)))
    with pytest.raises(ValueError, match="ConvTranspose3d: requested an output size"):
        up(x, output_size=(9, 8, 9))


def test_convert_and_revert_cover_every_dimension():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose3d(4, 2, 2, stride=2), nn.Flatten(2),
                          nn.ConvTranspose1d(2, 3, 3, stride=2), nn.Conv1d(3, 2, 3))
    ref = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cnn.convert(model)
    kinds = {type(m) for m in model}
    assert {cnn.Conv3d, cnn.ConvTranspose3d, cnn.ConvTranspose1d, cnn.Conv1d} <= kinds
    x = torch.randn(2, 2, 3, 4, 4)
    assert_close(model(x), ref(x))
    model(x).square().mean().backward()
    optimizer.step()                                   # the same parameter tensors
    assert model[0].weight is optimizer.param_groups[0]["params"][0]
    cnn.revert(model)
    assert {type(m) for m in model} >= {nn.Conv3d, nn.ConvTranspose3d, nn.ConvTranspose1d}
    model(x)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="Conv3d: out_channels \\(6\\) must be divisible"):
        cnn.Conv3d(4, 6, 3, groups=4)
    with pytest.raises(TypeError, match="Conv3d: kernel_size"):
        cnn.Conv3d(4, 6, "3")
    with pytest.raises(ValueError, match="ConvTranspose1d: padding_mode must be 'zeros'"):
        cnn.ConvTranspose1d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        cnn.ConvTranspose3d(2, 2, 3, stride=2, output_padding=2)


# ------------------------------------------------------------- the depthwise 3D loops

DEPTHWISE3D = [
    dict(padding=1),
    dict(padding=(0, 1, 2)),
    dict(padding="same", dilation=(1, 2, 1)),
    dict(),
    dict(padding=((1, 0), (0, 1), (2, 1))),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(DEPTHWISE3D)))
def test_depthwise3d_loops_match_torch(case, dtype):
    kw = DEPTHWISE3D[case]
    x = torch.randn(2, 3, 5, 6, 7, dtype=dtype, requires_grad=True)
    w = torch.randn(3, 1, 3, 2, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(3, dtype=dtype, requires_grad=True)
    padding = kw.get("padding", 0)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (f, bk), (t, bt), (lf, r) = padding
        ref = F.conv3d(F.pad(x, (lf, r, t, bt, f, bk)), w, b, groups=3)
    else:
        ref = F.conv3d(x, w, b, groups=3, **kw)
    ours = convforge.conv3d(x, w, b, groups=3, algorithm="depthwise", **kw)
    _compare(ours, ref, (x, w, b), str(kw))


def test_depthwise3d_loops_gradgradcheck():
    x, w, b = _leaf(1, 2, 4, 4, 3), _leaf(2, 1, 2, 3, 2), _leaf(2)
    f = lambda x, w, b: convforge.conv3d(x, w, b, padding=1, groups=2,  # noqa: E731
                                         algorithm="depthwise")
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_depthwise3d_loops_propagate_non_finite_like_torch():
    x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)
    x[0, 0, 0, 0, 0] = float("inf")
    x[0, 1, 4, 4, 4] = float("nan")
    x.requires_grad_()
    w = torch.randn(2, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    ours = convforge.conv3d(x, w, padding=1, groups=2, algorithm="depthwise")
    ref = F.conv3d(x, w, padding=1, groups=2)
    assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.isinf(), ref.isinf())
    g = torch.ones_like(ref)
    dw, dw_ref = torch.autograd.grad(ours, w, g)[0], torch.autograd.grad(ref, w, g)[0]
    assert torch.equal(dw.isnan(), dw_ref.isnan()) and torch.equal(dw.isinf(), dw_ref.isinf())


def test_auto_runs_depthwise3d_loops(monkeypatch):
    from convforge.algorithms import _depthwise3d

    calls = []
    real = _depthwise3d.conv3d
    monkeypatch.setattr(_depthwise3d, "conv3d", lambda *a: calls.append(1) or real(*a))
    x, w = torch.randn(1, 4, 6, 6, 6), torch.randn(4, 1, 3, 3, 3)
    assert_close(convforge.conv3d(x, w, padding=1, groups=4), F.conv3d(x, w, padding=1,
                                                                        groups=4))
    assert calls                                   # the kernels are warm in the tests
    convforge.conv3d(x, w, padding=1, groups=4, stride=2)     # strided: per depth tap
    assert len(calls) == 1


# ------------------------------------------------------------------- shape arithmetic

@pytest.mark.parametrize("size, k, kw", [
    ((9,), (3,), dict(stride=2, padding=1)),
    ((10,), (4,), dict(padding="same", dilation=2)),
    ((7, 8, 9), (3, 2, 3), dict(stride=(2, 1, 3), padding=(1, 0, 1), dilation=(1, 2, 1))),
    ((6, 6, 6), (3, 3, 3), dict(padding="valid")),
    ((5, 6, 7), (2, 3, 4), dict(padding="same")),
])
def test_output_shape_1d_3d_matches_torch(size, k, kw):
    conv = F.conv1d if len(size) == 1 else F.conv3d
    out = conv(torch.zeros(1, 1, *size), torch.zeros(1, 1, *k), **kw).shape[2:]
    assert convforge.output_shape(size, k, **kw) == tuple(out)


def test_output_shape_strided_same_3d_and_per_side_1d():
    out = convforge.conv3d(torch.zeros(1, 1, 7, 9, 10), torch.zeros(1, 1, 3, 3, 3),
                           stride=(2, 3, 4), padding="same").shape[2:]
    assert convforge.output_shape((7, 9, 10), 3, stride=(2, 3, 4), padding="same") == out
    out1 = convforge.conv1d(torch.zeros(1, 1, 10), torch.zeros(1, 1, 5), padding=(4, 0))
    assert convforge.output_shape((10,), (5,), padding=(4, 0)) == tuple(out1.shape[2:])


def test_conv_flops_3d_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.zeros(2, 8, 6, 7, 8), torch.zeros(4, 4, 3, 3, 3)
    with FlopCounterMode(display=False) as counter:
        y = F.conv3d(x, w, groups=2)
    ours = convforge.conv_flops(2, 8, 4, tuple(y.shape[2:]), (3, 3, 3), groups=2)
    assert ours["forward"] == counter.get_total_flops()


def test_shape_command_3d_and_1d_match_torch_layers(capsys):
    from convforge.cli import main

    assert main(["shape", "--input", "2x9x16x16", "--layer", "conv:4,k=3x5x5,s=1x2x2,p=1x2x2",
                 "--layer", "pool:1x2x2"]) == 0
    text = capsys.readouterr().out
    model = nn.Sequential(nn.Conv3d(2, 4, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
                          nn.MaxPool3d((1, 2, 2)))
    a = model[0](torch.zeros(1, 2, 9, 16, 16))
    b = model(torch.zeros(1, 2, 9, 16, 16))
    assert "x".join(map(str, a.shape[1:])) in text and "x".join(map(str, b.shape[1:])) in text
    params = sum(p.numel() for p in model.parameters())
    assert f"{params:,}" in text
    assert main(["shape", "--ndim", "1", "--input", "1x100", "--layer", "conv:3,k=5,s=2"]) == 0
    out1 = nn.Conv1d(1, 3, 5, stride=2)(torch.zeros(1, 1, 100))
    assert "3x48" in capsys.readouterr().out and out1.shape[1:] == (3, 48)


@pytest.mark.parametrize("algorithm", ["auto", "reference", "im2col", "fft", "direct"])
def test_conv_transpose3d_is_the_adjoint_of_conv3d(algorithm):
    """<conv3d(x, w), y> == <x, conv_transpose3d(y, w)>, with stride, padding, dilation
    and groups (the identity, not torch, is the reference)."""
    kw = dict(stride=(2, 1, 2), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2)
    x = torch.randn(2, 4, 7, 8, 9, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 2, 3, dtype=torch.float64)
    y = convforge.conv3d(x, w, **kw, algorithm=algorithm)
    r = torch.randn_like(y)
    op = tuple((n + 2 * p - dl * (k - 1) - 1) % s for n, p, dl, k, s in zip(
        (7, 8, 9), kw["padding"], kw["dilation"], (3, 2, 3), kw["stride"], strict=True))
    xt = convforge.conv_transpose3d(r, w, output_padding=op, **kw, algorithm=algorithm)
    assert xt.shape == x.shape
    lhs, rhs = (y * r).sum(), (x * xt).sum()
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


def test_3d_layers_compile_export_and_vmap():
    torch.manual_seed(0)
    ours = nn.Sequential(cnn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                         cnn.Conv3d(4, 4, 3, padding=1, groups=4),
                         cnn.ConvTranspose3d(4, 2, 2, stride=2))
    ref = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv3d(4, 4, 3, padding=1, groups=4),
                        nn.ConvTranspose3d(4, 2, 2, stride=2))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 5, 6, 6)
    expected = ref(x)
    compiled = torch.compile(ours, fullgraph=True)
    assert_close(compiled(x), expected)
    program = torch.export.export(ours, (x,))
    assert_close(program.module()(x), expected)
    assert_close(torch.func.vmap(lambda xi: ours(xi[None])[0])(x), expected)
    dx = torch.func.grad(lambda xi: ours(xi).sum())(x)
    dx_ref = torch.autograd.grad(ref(x.requires_grad_()).sum(), x)[0]
    assert_close(dx, dx_ref)


@pytest.mark.parametrize("algorithm", ["reference", "im2col", "fft", "direct", "shift"])
def test_conv3d_gradgradcheck_per_algorithm(algorithm):
    x, w, b = _leaf(1, 2, 4, 3, 4), _leaf(2, 1, 2, 2, 3), _leaf(2)
    f = lambda x, w, b: convforge.conv3d(x, w, b, stride=(1, 2, 1), padding=(1, 0, 1),  # noqa: E731
                                         groups=2, algorithm=algorithm)
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
