"""Every output printed in the seed notebooks, reproduced through the public API.

The expected values are the ones printed in ../shared/seeds/ (d2l 6.2-6.4).
"""

import numpy as np
import torch

import convforge as cf
from convforge.algorithms import REGISTRY
from convforge.chapter import edge_image, learn_edge_kernel, walkthrough


def test_corr2d_book_example():
    y = cf.corr2d(torch.arange(9).reshape(3, 3), torch.arange(4).reshape(2, 2))
    assert y.dtype == torch.float32          # integers in, float32 out, as in the book
    assert torch.equal(y, torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


def test_corr2d_numpy_in_numpy_out():
    y = cf.corr2d(np.arange(9.0).reshape(3, 3), np.arange(4.0).reshape(2, 2))
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, [[19, 25], [37, 43]])


def test_edge_detection_and_transposed_image():
    x = torch.ones(6, 8)
    x[:, 2:6] = 0
    k = torch.tensor([[1.0, -1.0]])
    row = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0])
    assert torch.equal(cf.corr2d(x, k), row.expand(6, 7))
    assert torch.equal(cf.corr2d(x.t(), k), torch.zeros(8, 5))
    assert torch.equal(edge_image(), x)


def test_diagonal_image_from_the_forum():
    x = torch.eye(8)
    k = torch.tensor([[1.0, -1.0]])
    y = cf.corr2d(x, k)                      # 1 on the diagonal, -1 below it
    expected = torch.from_numpy(np.eye(8, 7, dtype=np.float32) - np.eye(8, 7, -1, dtype=np.float32))
    assert torch.equal(y, expected)   # the forum's printed 8x7 matrix
    assert torch.equal(cf.corr2d(x.t(), k), y)          # transposing X changes nothing
    assert torch.equal(cf.corr2d(x, k.t()), y.t())      # transposing K transposes Y


def test_padding_and_stride_shapes():
    x = torch.rand(1, 1, 8, 8)
    cases = [((3, 3), 1, 1, (8, 8)), ((5, 3), (2, 1), 1, (8, 8)),
             ((3, 3), 1, 2, (4, 4)), ((3, 5), (0, 1), (3, 4), (2, 2))]
    for kernel, padding, stride, expected in cases:
        y = cf.conv2d(x, torch.randn(1, 1, *kernel), padding=padding, stride=stride)
        assert tuple(y.shape[2:]) == expected
        assert cf.output_shape((8, 8), kernel, stride, padding) == expected


def test_multi_input_and_multi_output_channels():
    x = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                      [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    k = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    assert torch.equal(cf.conv2d(x, k[None])[0], torch.tensor([[56.0, 72.0], [104.0, 120.0]]))
    k3 = torch.stack((k, k + 1, k + 2), 0)
    assert k3.shape == (3, 2, 2, 2)
    expected = torch.tensor([[[56.0, 72.0], [104.0, 120.0]],
                             [[76.0, 100.0], [148.0, 172.0]],
                             [[96.0, 128.0], [192.0, 224.0]]])
    assert torch.equal(cf.conv2d(x, k3), expected)


def test_1x1_convolution_is_a_matrix_product():
    x = torch.normal(0, 1, (3, 3, 3))
    k = torch.normal(0, 1, (2, 3, 1, 1))
    y1 = torch.matmul(k.reshape(2, 3), x.reshape(3, 9)).reshape(2, 3, 3)
    spec = cf.make_spec("conv2d", x.shape, k.shape)
    for algo in cf.algorithms():
        if REGISTRY[algo].supports(spec, x.dtype, x.device) is not None:
            continue                                   # e.g. winograd: 3x3 kernels only
        y2 = cf.conv2d(x, k, algorithm=algo)
        assert torch.allclose(y1, y2, atol=1e-6), algo


def test_learning_the_kernel_converges():
    w, history = learn_edge_kernel(steps=10)
    losses = [loss for _, loss in history]
    assert all(b < a for a, b in zip(losses, losses[1:]))   # the loss falls every time
    assert losses[-1] < 0.2
    assert torch.allclose(w, torch.tensor([[1.0, -1.0]]), atol=0.1)


def test_walkthrough_prints_the_chapter():
    text = "\n".join(f"{t}\n{b}" for t, b in walkthrough())
    for fragment in ["[[19., 25.]", "[ 56.,  72.]", "[104., 120.]", "output (2, 2)",
                     "[ 96., 128.]"]:
        assert fragment in text
