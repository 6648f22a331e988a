"""Shape helpers against torch's actual output shapes and the book's formula."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import convforge as cf
from convforge import shapes
from helpers import tf_same_padding


def test_book_formula_equals_torch_formula_with_total_padding():
    for n, k, p, s in itertools.product(range(3, 12), range(1, 6), range(0, 5), range(1, 4)):
        if n + p < k:
            continue
        torch_form = shapes.output_size(n, k, s, (p // 2, p - p // 2))
        assert shapes.book_output_size(n, k, p, s) == torch_form


@pytest.mark.parametrize("n,k,s,d", list(itertools.product([5, 8, 9, 16], [1, 2, 3, 4],
                                                           [1, 2, 3], [1, 2])))
def test_same_padding_tensorflow_rule(n, k, s, d):
    assert shapes.same_padding(n, k, s, d) == tf_same_padding(n, k, s, d)
    before, after = shapes.same_padding(n, k, s, d)
    assert shapes.output_size(n, k, s, (before, after), d) == -(-n // s)


def test_same_padding_stride1_matches_torch():
    for k in range(1, 7):
        x = torch.randn(1, 1, 9, 10)
        assert F.conv2d(x, torch.ones(1, 1, k, k), padding="same").shape == \
            cf.conv2d(x, torch.ones(1, 1, k, k), padding="same").shape


def test_output_shape_matches_torch_on_a_grid():
    x = torch.randn(1, 1, 11, 9)
    for kh, kw, s, p, d in itertools.product([1, 2, 3], [1, 3], [1, 2, 3], [0, 1, 2], [1, 2]):
        got = cf.output_shape((11, 9), (kh, kw), s, p, d)
        assert got == tuple(F.conv2d(x, torch.ones(1, 1, kh, kw), None, s, p, d).shape[2:])


def test_output_shape_full_and_per_side():
    assert cf.output_shape((5, 5), 3, padding="full") == (7, 7)
    assert cf.output_shape((6, 7), (3, 3), padding=((0, 2), (1, 0))) == (6, 6)
    with pytest.raises(ValueError, match="must fit"):
        cf.output_shape(3, 5)
    with pytest.raises(TypeError):
        cf.output_shape(3.5, 2)


def test_transpose_output_size_matches_torch():
    for n, k, s, p, op, d in itertools.product([3, 4], [2, 3], [1, 2, 3], [0, 1], [0, 1], [1, 2]):
        if op >= max(s, d) or shapes.transpose_output_size(n, k, s, p, op, d) < 1:
            continue
        y = F.conv_transpose2d(torch.ones(1, 1, n, n), torch.ones(1, 1, k, k), None, s, p, op,
                               1, d)
        assert y.shape[-1] == shapes.transpose_output_size(n, k, s, p, op, d)


def test_receptive_field_by_brute_force():
    """The receptive field equals the span of inputs that change one output (autograd)."""
    layers = [(3, 1, 1), (3, 2, 1), (3, 1, 2)]
    x = torch.zeros(1, 1, 1, 64, requires_grad=True)
    y = x
    for k, s, d in layers:
        y = F.conv2d(y, torch.ones(1, 1, 1, k), stride=(1, s), dilation=(1, d))
    (g,) = torch.autograd.grad(y[0, 0, 0, 0], x)
    touched = g[0, 0, 0].nonzero().flatten()
    span = (touched.max() - touched.min() + 1).item()
    assert shapes.receptive_field(layers)[-1]["rf"] == span


def test_flops_count_matches_a_count_of_multiplies():
    n, c_in, c_out, oh, ow, kh, kw, g = 2, 4, 6, 5, 3, 3, 2, 2
    mults = n * c_out * oh * ow * (c_in // g) * kh * kw
    assert shapes.conv_flops(n, c_in, c_out, (oh, ow), (kh, kw), g)["forward"] == 2 * mults
