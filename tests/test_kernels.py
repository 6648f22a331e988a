"""The kernel zoo against OpenCV, scipy and mathematical identities."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from convforge import filter2d
from convforge import kernels as K

F64 = torch.float64


@pytest.fixture(scope="module")
def camera():
    from skimage import data
    return data.camera()


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t


# ---------------------------------------------------------------- finite differences

@pytest.mark.parametrize("order", range(0, 6))
@pytest.mark.parametrize("extra", [0, 1, 2, 3])
def test_finite_difference_exact_on_polynomials(order, extra):
    """Correlating samples of any polynomial of degree < size gives its exact derivative."""
    size = order + 1 + extra
    k = K.finite_difference(order, "x", size=size, dtype=F64)[0]
    offsets = np.arange(size) - size // 2
    rng = np.random.default_rng(order * 10 + extra)
    for degree in range(size):
        coeffs = rng.integers(-5, 6, degree + 1).astype(float)
        x0 = 0.75
        samples = np.polyval(coeffs, x0 + offsets)
        want = np.polyval(np.polyder(coeffs, order), x0) if order <= degree else 0.0
        got = float((k.numpy() * samples).sum())
        assert got == pytest.approx(want, abs=1e-7 * max(1.0, abs(want)))


def test_finite_difference_classic_stencils():
    assert K.finite_difference(1, dtype=F64).tolist() == [[-0.5, 0.0, 0.5]]
    assert K.finite_difference(2, dtype=F64).tolist() == [[1.0, -2.0, 1.0]]
    assert K.finite_difference(4, dtype=F64).tolist() == [[1.0, -4.0, 6.0, -4.0, 1.0]]
    assert K.finite_difference(1, size=2, dtype=F64).tolist() == [[-1.0, 1.0]]
    assert K.finite_difference(2, accuracy=4, dtype=F64)[0].tolist() == pytest.approx(
        [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12])
    assert K.finite_difference(2, "y", dtype=F64).shape == (3, 1)
    # the second-order cv2 derivative kernel of size 3 is the same stencil
    kx, _ = cv2.getDerivKernels(2, 0, 3, ktype=cv2.CV_64F)
    assert np.array_equal(_np(K.finite_difference(2, dtype=F64))[0], kx.ravel())


def test_finite_difference_matches_numpy_gradient_inside():
    x = np.random.default_rng(0).normal(size=(6, 20))
    got = _np(filter2d(x, K.finite_difference(1, dtype=F64)))[:, 1:-1]
    assert np.allclose(got, np.gradient(x, axis=1)[:, 1:-1], atol=1e-12)


@pytest.mark.parametrize("bad, exc", [
    (dict(order=2, size=2), ValueError), (dict(order=1, accuracy=3), ValueError),
    (dict(order=-1), ValueError), (dict(order=1.5), TypeError),
    (dict(order=1, axis="z"), ValueError)])
def test_finite_difference_errors(bad, exc):
    with pytest.raises(exc, match="finite_difference"):
        K.finite_difference(**bad)


# ---------------------------------------------------------------- gradient operators

@pytest.mark.parametrize("order, size", [(1, 3), (1, 5), (2, 5), (1, 7), (3, 7), (2, 3)])
def test_sobel_equals_cv2_deriv_kernels(order, size):
    kx, ky = cv2.getDerivKernels(order, 0, size, ktype=cv2.CV_64F)
    assert np.array_equal(_np(K.sobel("x", size, order=order, dtype=F64)), np.outer(ky, kx))
    kx, ky = cv2.getDerivKernels(0, order, size, ktype=cv2.CV_64F)
    assert np.array_equal(_np(K.sobel("y", size, order=order, dtype=F64)), np.outer(ky, kx))
    kx, ky = cv2.getDerivKernels(order, 0, size, normalize=True, ktype=cv2.CV_64F)
    assert np.allclose(_np(K.sobel("x", size, order=order, normalize=True, dtype=F64)),
                       np.outer(ky, kx))


def test_scharr_equals_cv2():
    for dx, dy, d in ((1, 0, "x"), (0, 1, "y")):
        kx, ky = cv2.getDerivKernels(dx, dy, -1, ktype=cv2.CV_64F)  # ksize=-1: Scharr
        assert np.array_equal(_np(K.scharr(d, dtype=F64)), np.outer(ky, kx))


@pytest.mark.parametrize("name", ["sobel", "scharr", "prewitt"])
def test_gradient_responses_on_photo_match_cv2_and_scipy(name, camera):
    x = camera[:128, :160]
    dx = {"sobel": lambda a: cv2.Sobel(a, cv2.CV_64F, 1, 0, ksize=3),
          "scharr": lambda a: cv2.Scharr(a, cv2.CV_64F, 1, 0),
          "prewitt": lambda a: ndi.prewitt(a.astype(float), axis=1, mode="mirror")}[name]
    dy = {"sobel": lambda a: cv2.Sobel(a, cv2.CV_64F, 0, 1, ksize=3),
          "scharr": lambda a: cv2.Scharr(a, cv2.CV_64F, 0, 1),
          "prewitt": lambda a: ndi.prewitt(a.astype(float), axis=0, mode="mirror")}[name]
    factory = getattr(K, name)
    assert np.array_equal(filter2d(x, factory("x", dtype=F64), dtype=F64), dx(x))
    assert np.array_equal(filter2d(x, factory("y", dtype=F64), dtype=F64), dy(x))


@pytest.mark.parametrize("name", ["sobel", "scharr", "prewitt"])
def test_diagonal_operators_measure_directional_derivatives(name):
    """On f = a*row + b*col, x gives ~b, y ~a, diagonal ~(a+b), antidiagonal ~(b-a)."""
    a, b = 3.0, 5.0
    r, c = np.mgrid[0:9, 0:9]
    f = a * r + b * c
    resp = {d: _np(filter2d(f, getattr(K, name)(d, dtype=F64)))[4, 4]
            for d in ("x", "y", "diagonal", "antidiagonal")}
    gain = resp["x"] / b
    assert resp["y"] == pytest.approx(gain * a)
    assert resp["diagonal"] / (a + b) == pytest.approx(resp["antidiagonal"] / (b - a))
    assert resp["diagonal"] > 0 and resp["antidiagonal"] > 0
    # perpendicular ramps give zero
    assert _np(filter2d(r - c + 0.0, getattr(K, name)("diagonal", dtype=F64)))[4, 4] == 0
    assert _np(filter2d(r + c + 0.0, getattr(K, name)("antidiagonal", dtype=F64)))[4, 4] == 0


def test_book_and_diagonal_edges():
    assert K.book_edge(dtype=F64).tolist() == [[1.0, -1.0]]
    assert torch.equal(K.book_edge("y"), K.book_edge("x").t())
    img = torch.ones(6, 8)
    img[:, 2:6] = 0
    from convforge import corr2d
    y = corr2d(img, K.book_edge())
    assert y[0].tolist() == [0, 1, 0, 0, 0, -1, 0]             # the book's printed row
    tri = torch.tril(torch.ones(6, 6))                           # a diagonal edge
    d = corr2d(tri, K.diagonal_edge("diagonal"))
    assert torch.equal(d, torch.zeros(5, 5))                    # along the edge: no response
    assert corr2d(tri, K.diagonal_edge("antidiagonal")).abs().sum() > 0


# ---------------------------------------------------------------- smoothing and 2nd derivatives

@pytest.mark.parametrize("size, sigma", [(3, 0.8), (5, 1.3), (7, 1.5), (11, 2.0)])
def test_gaussian_equals_cv2(size, sigma):
    g = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F).ravel()
    assert np.allclose(_np(K.gaussian_1d(size, sigma, dtype=F64)), g, atol=1e-15)
    assert np.allclose(_np(K.gaussian(size, sigma, dtype=F64)), np.outer(g, g), atol=1e-15)


def test_gaussian_even_size_is_symmetric_and_normalised():
    g = K.gaussian_1d(4, 1.0, dtype=F64)
    assert torch.equal(g, g.flip(0)) and float(g.sum()) == pytest.approx(1.0)


def test_gaussian_defaults():
    assert K.gaussian(sigma=2).shape == (13, 13)
    assert K.gaussian().shape == (7, 7)
    s = 0.3 * ((9 - 1) * 0.5 - 1) + 0.8                           # OpenCV's sigma rule
    assert np.allclose(_np(K.gaussian_1d(9, dtype=F64)),
                       cv2.getGaussianKernel(9, s, ktype=cv2.CV_64F).ravel())


def test_laplacians_match_cv2_and_scipy(camera):
    x = camera[:96, :96].astype(np.float64)
    ours = filter2d(x, K.laplacian(4, dtype=F64))
    assert np.array_equal(ours, cv2.Laplacian(x, cv2.CV_64F, ksize=1))
    assert np.array_equal(ours, ndi.laplace(x, mode="mirror"))
    eight = np.ones((3, 3))
    eight[1, 1] = -8
    assert np.array_equal(_np(K.laplacian(8, dtype=F64)), eight)


@pytest.mark.parametrize("sigma", [1.0, 1.6])
def test_log_matches_scipy_gaussian_laplace(sigma):
    x = np.random.default_rng(1).normal(size=(40, 40))
    k = K.log(sigma=sigma, dtype=F64)
    radius = k.shape[0] // 2
    ref = ndi.gaussian_laplace(x, sigma, mode="constant", truncate=radius / sigma)
    assert np.allclose(filter2d(x, k, border="zeros"), ref, atol=1e-12)
    assert abs(float(K.log(sigma=sigma, zero_sum=True, dtype=F64).sum())) < 1e-14


def test_box_sharpen_emboss_identity_integral():
    x = np.random.default_rng(2).normal(size=(12, 12))
    assert np.allclose(filter2d(x, K.box(3, dtype=F64)),
                       cv2.blur(x, (3, 3), borderType=cv2.BORDER_REFLECT_101))
    assert np.allclose(filter2d(x, K.box((3, 5), normalize=False, dtype=F64)),
                       cv2.boxFilter(x, -1, (5, 3), normalize=False))
    assert np.array_equal(filter2d(x, K.identity(5, dtype=F64)), x)
    assert torch.equal(K.sharpen(dtype=F64),
                       K.identity(dtype=F64) - K.laplacian(dtype=F64))
    assert float(K.sharpen(2.5, dtype=F64).sum()) == 1.0
    assert float(K.emboss(dtype=F64).sum()) == 1.0
    ramp = np.arange(10.0)[None, :].repeat(3, 0)
    s = filter2d(ramp, K.integral(3, dtype=F64), border="zeros")
    assert s[1, 4] == 3 + 4 + 5                                    # sum over the window
    assert K.integral(4, "y").shape == (4, 1) and K.integral(2, "both").shape == (2, 2)


def test_dtype_and_device_keywords():
    assert K.sobel(dtype=torch.float16).dtype == torch.float16
    assert K.gaussian(5, 1.0).dtype == torch.get_default_dtype()
    assert K.get("box:3", dtype=F64).dtype == F64
    assert K.laplacian(device="cpu").device.type == "cpu"


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("spec, expected", [
    ("sobel-x", lambda: K.sobel("x")), ("sobel-diagonal", lambda: K.sobel("diagonal")),
    ("laplacian", lambda: K.laplacian(4)), ("laplacian:8", lambda: K.laplacian(8)),
    ("gaussian:sigma=2", lambda: K.gaussian(sigma=2)),
    ("gaussian:size=7,sigma=1.5", lambda: K.gaussian(7, 1.5)), ("box:5", lambda: K.box(5)),
    ("finite_difference:order=2,axis=x", lambda: K.finite_difference(2, "x")),
    ("finite_difference-y:3", lambda: K.finite_difference(3, "y")),
    ("edge-y", lambda: K.book_edge("y")), ("Sobel-X:5", lambda: K.sobel("x", 5)),
    ("log:sigma=1.4", lambda: K.log(sigma=1.4)), ("integral-both:4", lambda: K.integral(4, "both")),
])
def test_get_parses_specs(spec, expected):
    assert torch.equal(K.get(spec), expected())


def test_names_all_build():
    names = K.names()
    assert {"sobel-x", "laplacian", "gaussian", "box", "scharr-antidiagonal"} <= set(names)
    for name in names:
        assert K.get(name).dim() == 2, name


@pytest.mark.parametrize("spec", ["nope", "sobel-z", "gaussian:sigma=-1", "box:a=3", "box:5,6",
                                  "gaussian:sigma=2=3", "sobel:", "laplacian:3", "box:1.5",
                                  "box:", "gaussian:sigma=(1)", "", "sobel-x:size=4",
                                  "finite_difference:order=3,size=2"])
def test_get_rejects_malformed_specs(spec):
    with pytest.raises(ValueError):
        K.get(spec)


def test_get_error_mentions_names():
    with pytest.raises(ValueError, match="sobel"):
        K.get("sobol-x")
    with pytest.raises(TypeError, match="kernels.get"):
        K.get(3)


def test_math_helpers_are_exact():
    w = K.finite_difference_weights(1, [-2, -1, 0, 1, 2])
    assert [str(v) for v in w] == ["1/12", "-2/3", "0", "2/3", "-1/12"]
    assert sum(w) == 0 and sum(v * o for v, o in zip(w, [-2, -1, 0, 1, 2])) == 1
