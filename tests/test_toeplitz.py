"""conv_matrix: the convolution as a matrix, checked against corr2d, F.conv2d and adjoints."""

import pytest
import torch
import torch.nn.functional as F

import convforge
from convforge import conv_matrix

CASES = [
    ((3, 2), (7, 9), {}),
    ((1, 2), (6, 8), {}),
    ((3, 3), (8, 8), {"stride": 2, "padding": 1}),
    ((2, 3), (7, 9), {"stride": (2, 3), "padding": (1, 2), "dilation": (2, 1)}),
    ((3, 3), (5, 6), {"padding": "same", "dilation": 2}),
]


def _torch_conv(x, k, stride=1, padding=0, dilation=1):
    """Torch's F.conv2d on a 1x1-channel input (padding by F.pad; 'same' only at stride 1)."""
    x4, k4 = x[None, None], k[None, None]
    return F.conv2d(x4, k4, stride=stride, padding=padding, dilation=dilation)[0, 0]


def test_matches_corr2d_and_doc_example():
    x = torch.randn(6, 8, dtype=torch.float64)
    k = torch.randn(3, 2, dtype=torch.float64)
    m = conv_matrix(k, (6, 8))
    assert m.shape == (4 * 7, 6 * 8)
    torch.testing.assert_close(m @ x.flatten(), convforge.corr2d(x, k).flatten())
    # the book's edge kernel on a 1x3 strip: each row is [1, -1] slid by one column
    edge = conv_matrix(torch.tensor([[1.0, -1.0]]), (1, 3))
    assert edge.tolist() == [[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kshape,xshape,kw", CASES)
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_torch_conv2d(kshape, xshape, kw, sparse):
    x = torch.randn(xshape, dtype=torch.float64)
    k = torch.randn(kshape, dtype=torch.float64)
    m = conv_matrix(k, xshape, sparse=sparse, **kw)
    assert m.is_sparse == sparse
    y = (m @ x.flatten()[:, None])[:, 0]
    torch.testing.assert_close(y, _torch_conv(x, k, **kw).flatten())
    # nonzeros: every tap that lands inside the input, no more
    assert int((m.to_dense() if sparse else m).ne(0).sum()) <= m.shape[0] * k.numel()


@pytest.mark.parametrize("kshape,xshape,kw", CASES[:4])
def test_transpose_is_the_adjoint(kshape, xshape, kw):
    """M^T is the transposed convolution: torch.nn.grad.conv2d_input and conv_transpose2d."""
    k = torch.randn(kshape, dtype=torch.float64)
    m = conv_matrix(k, xshape, **kw)
    x = torch.randn(xshape, dtype=torch.float64)
    y = _torch_conv(x, k, **kw)
    g = torch.randn_like(y)
    expected = torch.nn.grad.conv2d_input((1, 1, *xshape), k[None, None], g[None, None], **kw)
    torch.testing.assert_close((m.T @ g.flatten()).reshape(xshape), expected[0, 0])
    # <M x, g> == <x, M^T g>
    torch.testing.assert_close((m @ x.flatten()) @ g.flatten(), x.flatten() @ (m.T @ g.flatten()))
    if not kw:  # no padding, stride 1: conv_transpose2d is exactly M^T
        ct = convforge.conv_transpose2d(g[None, None], k[None, None])[0, 0]
        torch.testing.assert_close((m.T @ g.flatten()).reshape(xshape), ct)


def test_differentiable_in_the_kernel_and_dtypes():
    k = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 5, dtype=torch.float64)
    (conv_matrix(k, (4, 5)) @ x.flatten()).sum().backward()
    expected = torch.nn.grad.conv2d_weight(x[None, None], (1, 1, 2, 2), torch.ones(1, 1, 3, 4,
                                           dtype=torch.float64))[0, 0]
    torch.testing.assert_close(k.grad, expected)
    assert conv_matrix(torch.ones(2, 2, dtype=torch.int64), (3, 3)).dtype == torch.float32


@pytest.mark.parametrize("kernel,shape,kw,exc,text", [
    (torch.ones(1, 1, 2, 2), (4, 4), {}, ValueError, "kernel must be 2D"),
    (torch.ones(2, 2), (4, 4, 4), {}, ValueError, "input_shape must be (H, W)"),
    (torch.ones(5, 5), (4, 4), {}, ValueError, "must fit in the padded input"),
    (torch.ones(2, 2), (4, 4), {"stride": 0}, ValueError, "stride must be positive"),
    ([[1, 2]], (4, 4), {}, TypeError, "kernel must be a torch.Tensor or numpy.ndarray"),
])
def test_errors(kernel, shape, kw, exc, text):
    with pytest.raises(exc) as info:
        conv_matrix(kernel, shape, **kw)
    assert str(info.value).startswith("conv_matrix: ") and text in str(info.value)
