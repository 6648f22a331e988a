"""fit_kernel: the book's kernel learning, exactly (lstsq) and by gradient descent (gd)."""

import warnings

import numpy as np
import pytest
import torch

import convforge
from convforge import fit_kernel


def edge_image():
    x = torch.ones(6, 8)
    x[:, 2:6] = 0
    return x


EDGE_K = torch.tensor([[1.0, -1.0]])


def design(x, kw, bias):
    """The book's design matrix written independently: one row per output pixel."""
    rows = [[*x[i, j:j + kw].tolist(), *([1.0] if bias else [])]
            for i in range(x.shape[0]) for j in range(x.shape[1] - kw + 1)]
    return torch.tensor(rows, dtype=torch.float64)


def book_init():
    """The book's starting point: torch.nn.Conv2d(1, 1, (1, 2))'s initial weight, seeded."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 1, kernel_size=(1, 2)).weight.detach().reshape(1, 2)


@pytest.mark.parametrize("bias", [False, True])
def test_lstsq_recovers_the_edge_kernel(bias):
    x = edge_image()
    res = fit_kernel(x, convforge.corr2d(x, EDGE_K), (1, 2), bias=bias)
    torch.testing.assert_close(res.weight, EDGE_K, atol=1e-6, rtol=0)
    assert res.weight.shape == (1, 2) and res.weight.dtype == torch.float32
    if bias:
        assert res.bias.shape == () and abs(res.bias.item()) < 1e-6
    else:
        assert res.bias is None
    assert res.loss < 1e-20 and res.residual < 1e-10 and res.converged
    # the windows (1,1), (1,0), (0,0), (0,1) [and the ones column] have full rank
    a = design(x, 2, bias)
    assert res.rank == int(torch.linalg.matrix_rank(a)) == res.n_unknowns == 2 + bias
    assert res.identifiable
    lam = torch.linalg.eigvalsh(2 * a.T @ a).max().item()
    assert res.lambda_max == pytest.approx(lam, rel=1e-10)


def test_book_figures_lambda_max_and_stability_bound():
    """Why lr = 0.03 works without bias and fails with it (the forum question)."""
    x = edge_image()
    y = convforge.corr2d(x, EDGE_K)
    lam = {b: torch.linalg.eigvalsh(2 * design(x, 2, b).T @ design(x, 2, b)).max().item()
           for b in (False, True)}
    # by hand: A^T A = 6 [[3, 2], [2, 3]] (eigenvalues 30, 6) -> lambda_max = 60; with the
    # bias column 6 [[3, 2, 3], [2, 3, 3], [3, 3, 7]] -> lambda_max = 12 (6 + sqrt 19)
    assert lam[False] == pytest.approx(60.0)
    assert lam[True] == pytest.approx(12 * (6 + 19 ** 0.5))
    assert 0.03 < 2 / lam[False] and 0.03 > 2 / lam[True]   # 0.0333 vs 0.0161
    for b in (False, True):
        res = fit_kernel(x, y, (1, 2), bias=b, method="gd")
        assert res.lambda_max == pytest.approx(lam[b], rel=1e-8)  # power iteration
        assert res.lr == pytest.approx(1 / lam[b], rel=1e-8)
        assert res.converged and res.loss[-1] < 1e-10 and res.loss[0] == 12.0
        torch.testing.assert_close(res.weight, EDGE_K, atol=1e-5, rtol=0)
        assert all(b2 <= a2 for a2, b2 in zip(res.loss, res.loss[1:]))  # monotone


def test_book_lr_diverges_with_bias_from_the_book_start():
    x = edge_image()
    y = convforge.corr2d(x, EDGE_K)
    ok = fit_kernel(x, y, (1, 2), method="gd", lr=0.03, steps=40, init=book_init())
    assert ok.loss[-1] < 1e-6 * ok.loss[0]                       # the book: converges
    with pytest.warns(UserWarning) as rec:
        bad = fit_kernel(x, y, (1, 2), bias=True, method="gd", lr=0.03, steps=40,
                         init=book_init())
    msg = str(rec[0].message)
    assert "lr=0.03" in msg and f"2/lambda_max={2 / bad.lambda_max:.6g}" in msg
    assert not bad.converged and bad.loss[-1] > 1e6 * bad.loss[0]  # grows ~|1-0.03 lam|^2
    ratio = bad.loss[-1] / bad.loss[-2]
    assert ratio == pytest.approx((1 - 0.03 * bad.lambda_max) ** 2, rel=1e-3)
    # the forum's fix, lr = 0.003, is below the bound and converges (slowly)
    slow = fit_kernel(x, y, (1, 2), bias=True, method="gd", lr=0.003, steps=3000,
                      init=book_init())
    torch.testing.assert_close(slow.weight, EDGE_K, atol=1e-4, rtol=0)


def test_not_identifiable_warns_and_returns_min_norm():
    x = torch.ones(5, 5)  # a constant image cannot tell the taps of a 1x2 kernel apart
    y = convforge.corr2d(x, EDGE_K + 2)  # every output is 1 + 3 = 4
    with pytest.warns(UserWarning, match="not identifiable.*rank 1 < 2 unknowns"):
        res = fit_kernel(x, y, (1, 2))
    assert res.identifiable is False and res.rank == 1
    torch.testing.assert_close(res.weight, torch.tensor([[2.0, 2.0]]))  # minimum norm
    assert res.loss < 1e-20


def test_batched_multichannel_with_stride_padding():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 9, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    kw = {"stride": 2, "padding": 1, "dilation": (1, 2)}
    y = torch.nn.functional.conv2d(x, w, b, **kw)
    res = fit_kernel(x, y, (3, 2), bias=True, **kw)
    torch.testing.assert_close(res.weight, w)
    torch.testing.assert_close(res.bias, b)
    assert res.n_unknowns == 4 * (2 * 6 + 1) and res.identifiable
    gd = fit_kernel(x, y, (3, 2), bias=True, method="gd", steps=5000, **kw)
    assert gd.converged
    torch.testing.assert_close(gd.weight, w, atol=1e-4, rtol=0)
    assert gd.lambda_max == pytest.approx(res.lambda_max, rel=1e-6)


def test_numpy_inputs_and_noisy_fit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 20))
    k = rng.standard_normal((3, 3))
    y = convforge.correlate2d(x, k, mode="valid") + 0.01 * rng.standard_normal((18, 18))
    res = fit_kernel(x, y, 3)
    ref = np.linalg.lstsq(np.stack([x[i:i + 3, j:j + 3].ravel() for i in range(18)
                                    for j in range(18)]), y.ravel(), rcond=None)[0]
    np.testing.assert_allclose(res.weight.numpy().ravel(), ref, atol=1e-10)
    assert res.weight.dtype == torch.float64 and res.residual > 0


@pytest.mark.parametrize("kwargs,exc,text", [
    ({"method": "adam"}, ValueError, "method must be one of"),
    ({"Y": torch.ones(6, 6)}, ValueError, "Y must have the convolution's output size"),
    ({"Y": torch.ones(1, 1, 6, 7)}, ValueError, "both 2D (H, W) or both 4D"),
    ({"method": "gd", "lr": -1.0}, ValueError, "lr must be positive"),
    ({"method": "gd", "steps": 0}, ValueError, "steps must be a positive int"),
    ({"kernel_size": (0, 2)}, ValueError, "kernel_size must be positive"),
    ({"X": [[1.0]]}, TypeError, "X must be a torch.Tensor"),
])
def test_errors(kwargs, exc, text):
    args = {"X": edge_image(), "Y": torch.ones(6, 7), "kernel_size": (1, 2), **kwargs}
    with pytest.raises(exc) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_kernel(args.pop("X"), args.pop("Y"), args.pop("kernel_size"), **args)
    assert str(info.value).startswith("fit_kernel: ") and text in str(info.value)
