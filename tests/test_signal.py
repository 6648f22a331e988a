"""correlate2d / convolve2d against scipy.signal over modes x boundaries x dtypes."""

import warnings

import numpy as np
import pytest
import scipy.signal as ss
import torch

import convforge as cf

DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64,
          np.complex64, np.complex128]
SHAPES = [((7, 6), (3, 4)), ((5, 5), (1, 1)), ((4, 5), (9, 7)), ((6, 3), (2, 3))]


def _data(shape, dtype, rng):
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -120), min(info.max, 120), shape).astype(dtype)


@pytest.mark.parametrize("func", ["correlate2d", "convolve2d"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_matches_scipy(func, mode, boundary, dtype):
    rng = np.random.default_rng(0)
    for s1, s2 in SHAPES:
        a, k = _data(s1, dtype, rng), _data(s2, dtype, rng)
        if mode == "valid" and not (all(p >= q for p, q in zip(s1, s2))
                                    or all(q >= p for p, q in zip(s1, s2))):
            continue
        ref = getattr(ss, func)(a, k, mode=mode, boundary=boundary, fillvalue=3)
        ours = getattr(cf, func)(a, k, mode=mode, boundary=boundary, fillvalue=3)
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        if np.issubdtype(dtype, np.integer):
            np.testing.assert_array_equal(ours, ref)   # exact, wrap-around included
        else:
            tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_integer_overflow_wraps_like_scipy():
    a = np.full((4, 4), 100, dtype=np.int8)
    k = np.full((2, 2), 3, dtype=np.int8)
    np.testing.assert_array_equal(cf.correlate2d(a, k), ss.correlate2d(a, k))


def test_mixed_dtypes_promote_like_scipy():
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    k = np.array([[0.5, -1.0]], dtype=np.float32)
    ref = ss.convolve2d(a, k, "same")
    ours = cf.convolve2d(a, k, "same")
    assert ours.dtype == ref.dtype
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_convolve_is_correlate_with_flipped_kernel():
    rng = np.random.default_rng(1)
    a, k = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    np.testing.assert_allclose(cf.convolve2d(a, k, "valid"),
                               cf.correlate2d(a, k[::-1, ::-1], "valid"), atol=1e-12)


def test_tensor_in_tensor_out():
    a = torch.arange(16.0).reshape(4, 4)
    out = cf.correlate2d(a, torch.ones(2, 2), mode="valid")
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ss.correlate2d(a.numpy(), np.ones((2, 2)), "valid"))


@pytest.mark.parametrize("args,kwargs,exc,fragment", [
    ((np.ones(3), np.ones((2, 2))), {}, ValueError, "must both be 2D"),
    ((np.ones((3, 3)), np.ones((2, 2))), {"mode": "half"}, ValueError, "but got 'half'"),
    ((np.ones((3, 3)), np.ones((2, 2))), {"boundary": "mirror"}, ValueError, "'mirror'"),
    ((np.ones((3, 3)), np.ones((2, 2))), {"fillvalue": [1, 2]}, ValueError, "scalar"),
    ((np.ones((3, 5)), np.ones((5, 3))), {"mode": "valid"}, ValueError, "at least as large"),
    ((np.ones((3, 3), np.float16), np.ones((2, 2), np.float16)), {}, ValueError, "float16"),
    ((np.ones((3, 3), bool), np.ones((2, 2), bool)), {}, ValueError, "bool"),
    (("abc", np.ones((2, 2))), {}, TypeError, "in1 must be an array, but got str"),
    ((object(), np.ones((2, 2))), {}, TypeError, "in1 must be an array"),
])
def test_errors(args, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        cf.correlate2d(*args, **kwargs)
    # scipy refuses the same inputs
    if exc is ValueError:
        with pytest.raises(ValueError):
            ss.correlate2d(*args, **kwargs)


@pytest.mark.parametrize("fillvalue", [1j, "a", [1, 2], [3], np.array([[2.0]]), True, 2.5,
                                       1 + 0j, np.array(2), np.array(1j), [2.5], [1j],
                                       np.float32(2), np.int64(3)], ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.int32, np.float32, np.uint8])
def test_fillvalue_validation_as_scipy(fillvalue, dtype):
    """scipy accepts or refuses each fill value for each output dtype; so do we (the
    same result when accepted, a ValueError naming fillvalue when refused)."""
    a, k = np.arange(9).reshape(3, 3).astype(dtype), np.ones((2, 2), dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ss.correlate2d(a, k, boundary="fill", fillvalue=fillvalue)
    except ValueError:
        with pytest.raises(ValueError, match="fillvalue"):
            cf.correlate2d(a, k, boundary="fill", fillvalue=fillvalue)
        return
    out = cf.correlate2d(a, k, boundary="fill", fillvalue=fillvalue)
    assert out.dtype == expected.dtype and np.array_equal(out, expected)
