"""Argument normalisation and the exact error messages users see."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convforge as cf
from convforge.spec import ConvDTypeError, ConvShapeError, make_spec, pad_input

X = torch.randn(2, 6, 8, 8)
W = torch.randn(4, 6, 3, 3)


@pytest.mark.parametrize("padding,expected", [
    (0, (0, 0, 0, 0)),
    (2, (2, 2, 2, 2)),
    ((1, 2), (1, 1, 2, 2)),
    ([3], (3, 3, 3, 3)),
    (((0, 1), (2, 3)), (0, 1, 2, 3)),
    ("valid", (0, 0, 0, 0)),
    ("same", (1, 1, 1, 1)),
])
def test_padding_normalisation(padding, expected):
    assert make_spec("conv2d", X.shape, W.shape, padding=padding).padding == expected


def test_strided_same_follows_tensorflow():
    # TensorFlow: out = ceil(8 / 2) = 4, total = (4-1)*2 + 3 - 8 = 1, extra at the end
    spec = make_spec("conv2d", (1, 1, 8, 7), (1, 1, 3, 3), padding="same", stride=2)
    assert spec.padding == (0, 1, 1, 1) and (spec.out_h, spec.out_w) == (4, 4)


def test_spec_is_frozen_and_hashable():
    spec = make_spec("conv2d", X.shape, W.shape, stride=(2, 1))
    with pytest.raises(AttributeError):
        spec.groups = 2
    assert hash(spec) == hash(make_spec("conv2d", X.shape, W.shape, stride=[2, 1]))


ERRORS = [
    # (kwargs for conv2d, exception type, message fragments)
    ({"input": torch.randn(8, 8)}, ValueError,
     ["conv2d: input must be 3D (C, H, W) or 4D (N, C, H, W)", "(8, 8)"]),
    ({"weight": torch.randn(4, 6, 3)}, ValueError, ["conv2d: weight must be 4D", "(4, 6, 3)"]),
    ({"weight": torch.randn(4, 5, 3, 3)}, ValueError,
     ["weight.shape[1] * groups must equal the input's channels (6)", "(4, 5, 3, 3)"]),
    ({"groups": 4, "weight": torch.randn(4, 1, 3, 3)}, ValueError,
     ["conv2d: in_channels (6) must be divisible by groups (4)"]),
    ({"groups": 2, "weight": torch.randn(3, 3, 3, 3)}, ValueError,
     ["out_channels (3) must be divisible by groups (2)"]),
    ({"groups": 0}, ValueError, ["groups must be positive, but got 0"]),
    ({"groups": 1.5}, TypeError, ["groups must be an int, but got 1.5"]),
    ({"weight": torch.randn(4, 6, 9, 9)}, ValueError,
     ["the dilated kernel (9, 9) must fit in the padded input (8, 8)"]),
    ({"dilation": 4}, ValueError, ["the dilated kernel (9, 9) must fit"]),
    ({"stride": 0}, ValueError, ["conv2d: stride must be positive, but got 0"]),
    ({"stride": (1, -2)}, ValueError, ["stride must be positive, but got (1, -2)"]),
    ({"stride": 1.5}, TypeError, ["stride must be an int or a pair of ints, but got 1.5"]),
    ({"stride": True}, TypeError, ["stride must be an int or a pair of ints, but got True"]),
    ({"dilation": 0}, ValueError, ["dilation must be positive, but got 0"]),
    ({"dilation": "2"}, TypeError, ["dilation must be an int or a pair of ints"]),
    ({"padding": -1}, ValueError, ["padding must be non-negative, but got -1"]),
    ({"padding": ((1, -1), (0, 0))}, ValueError, ["padding must be non-negative"]),
    ({"padding": (1, 1, 1, 1)}, TypeError, ["((top, bottom), (left, right))"]),
    ({"padding": "full"}, ValueError, ["'same' or 'valid', but got 'full'"]),
    ({"padding": "SAME"}, ValueError, ["but got 'SAME'"]),
    ({"padding_mode": "mirror", "padding": 1}, ValueError,
     ["padding_mode must be one of", "but got 'mirror'"]),
    ({"algorithm": "magic"}, ValueError, ["algorithm must be 'auto' or one of", "'magic'"]),
    ({"algorithm": 3}, TypeError, ["algorithm must be a string, but got 3"]),
    ({"bias": torch.randn(5)}, ValueError,
     ["bias must be a 1D tensor of length out_channels (4), but got shape (5,)"]),
    ({"bias": torch.randn(4, 1)}, ValueError, ["but got shape (4, 1)"]),
    ({"weight": torch.randn(4, 6, 3, 3, dtype=torch.float64)}, TypeError,
     ["weight must have the input's dtype (torch.float32), but got torch.float64"]),
    ({"bias": torch.randn(4, dtype=torch.float64)}, TypeError, ["bias must have the input's"]),
    ({"input": torch.ones(2, 6, 8, 8, dtype=torch.int64),
      "weight": torch.ones(4, 6, 3, 3, dtype=torch.int64)}, TypeError,
     ["input must be a floating-point or complex tensor, but got torch.int64"]),
    ({"padding": 8, "padding_mode": "reflect"}, ValueError,
     ["reflect padding must be smaller than the input size", "(8, 8)"]),
    ({"padding": 9, "padding_mode": "circular"}, ValueError,
     ["circular padding must not exceed the input size"]),
    ({"input": [[1.0, 2.0]]}, TypeError,
     ["input must be a torch.Tensor or numpy.ndarray, but got list"]),
    ({"weight": "kernel"}, TypeError, ["weight must be a torch.Tensor or numpy.ndarray"]),
]


@pytest.mark.parametrize("kwargs,exc,fragments", ERRORS,
                         ids=[str(i) for i in range(len(ERRORS))])
def test_conv2d_errors(kwargs, exc, fragments):
    args = {"input": X, "weight": W, **kwargs}
    with pytest.raises(exc) as info:
        cf.conv2d(**args)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert str(info.value).startswith("conv2d: ")


def test_shape_and_dtype_errors_are_also_runtime_errors():
    """Code written against torch catches RuntimeError; it keeps working."""
    with pytest.raises(RuntimeError):
        cf.conv2d(X, torch.randn(4, 5, 3, 3))
    with pytest.raises(RuntimeError):
        cf.conv2d(X, W.double())
    assert issubclass(ConvShapeError, ValueError) and issubclass(ConvDTypeError, TypeError)


def test_transpose_zero_output_only_for_an_empty_batch():
    """torch: a 0x0 transposed output raises unless the batch is empty."""
    w = torch.randn(3, 1, 3, 3)
    kw = dict(stride=2, padding=2, output_padding=1)              # output size 0
    for x in (torch.randn(1, 3, 1, 1), torch.randn(3, 1, 1)):
        with pytest.raises(RuntimeError):
            F.conv_transpose2d(x, w, **kw)
        with pytest.raises(ConvShapeError, match="must be positive"):
            cf.conv_transpose2d(x, w, **kw)
    empty = torch.randn(0, 3, 1, 1)
    assert cf.conv_transpose2d(empty, w, **kw).shape == F.conv_transpose2d(empty, w, **kw).shape


TRANSPOSE_ERRORS = [
    ({"output_padding": 2, "stride": 2}, ["output_padding must be smaller than stride or "
                                          "dilation"]),
    ({"weight": torch.randn(5, 2, 3, 3)}, ["weight.shape[0] must equal the input's channels (4)"]),
    ({"groups": 3}, ["in_channels (4) must be divisible by groups (3)"]),
    ({"padding": 5}, ["the output size must be positive (zero only for an empty batch)"]),
    ({"padding": "same"}, ["padding must be an int or a pair of ints, but got 'same'"]),
    ({"bias": torch.randn(3)}, ["bias must be a 1D tensor of length out_channels (2)"]),
]


@pytest.mark.parametrize("kwargs,fragments", TRANSPOSE_ERRORS)
def test_conv_transpose2d_errors(kwargs, fragments):
    args = {"input": torch.randn(1, 4, 3, 3), "weight": torch.randn(4, 2, 3, 3), **kwargs}
    with pytest.raises(ValueError) as info:
        cf.conv_transpose2d(**args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_algorithm_that_cannot_says_why():
    """Asking an algorithm for what it cannot do names it and the reason."""
    from convforge.algorithms import REGISTRY
    x = torch.randn(1, 2, 6, 6, dtype=torch.complex128)
    w = torch.randn(2, 2, 3, 3, dtype=torch.complex128)
    spec = make_spec("conv2d", x.shape, w.shape)
    refusing = [n for n, a in REGISTRY.items() if a.supports(spec, x.dtype, x.device)]
    assert "torch" in refusing
    for name in refusing:
        with pytest.raises(ValueError, match=f"algorithm '{name}' does not support"):
            cf.conv2d(x, w, algorithm=name)


def test_corr2d_points_to_conv2d_for_batches():
    with pytest.raises(ValueError, match=r"corr2d: X must be 2D .* use convforge.conv2d"):
        cf.corr2d(torch.ones(1, 1, 6, 8), torch.ones(1, 2))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
def test_pad_input_matches_numpy(mode):
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap",
               "symmetric": "symmetric"}[mode]
    pads = (2, 1, 3, 0)
    ours = pad_input(x, pads, mode)[0, 0].numpy()
    ref = np.pad(x[0, 0].numpy(), ((2, 1), (3, 0)), mode=np_mode)
    np.testing.assert_array_equal(ours, ref)
