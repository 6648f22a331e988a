"""convforge.ndimage.correlate / convolve against scipy.ndimage: every mode, origins, dtypes
(output casting included), complex, 1-D to 4-D, and scipy's errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from convforge import ndimage as cnd
from helpers import random_array

MODES = ["reflect", "constant", "nearest", "mirror", "wrap", "grid-mirror", "grid-constant",
         "grid-wrap"]
DTYPES = [np.float64, np.float32, np.uint8, np.int8, np.int32, np.uint16, np.int64,
          np.complex128, np.complex64, bool]
SHAPES = [((7,), (3,)), ((5,), (4,)), ((2,), (5,)), ((1,), (3,)), ((6, 7), (3, 2)),
          ((3, 4), (5, 5)), ((4, 5, 6), (3, 2, 3)), ((3, 3, 4, 2), (2, 3, 2, 1))]


def _random(rng, shape, dtype):
    return random_array(rng, shape, dtype, 40)


def _same(ours, theirs, msg=""):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, msg
    if ours.dtype.kind in "biu":
        assert np.array_equal(ours, theirs), msg
    else:
        finite = np.isfinite(theirs)
        assert np.array_equal(ours[~finite], theirs[~finite], equal_nan=True), msg
        ours, theirs = ours[finite], theirs[finite]
        if theirs.size:
            tol = 1e-10 if ours.dtype in (np.float64, np.complex128) else 1e-5
            assert np.abs(ours - theirs).max() <= tol * max(1.0, np.abs(theirs).max()), msg


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_every_mode_and_origin_matches_scipy(shapes, dtype):
    rng = np.random.default_rng(0)
    a = _random(rng, shapes[0], dtype)
    w = rng.standard_normal(shapes[1])
    wc = w + 1j * rng.standard_normal(shapes[1])
    for weights in (w, wc):
        for mode in MODES:
            for origin in (0, -(shapes[1][0] // 2), (shapes[1][0] - 1) // 2):
                for func in ("correlate", "convolve"):
                    kw = dict(mode=mode, cval=2.5, origin=origin)
                    try:
                        theirs = getattr(ndimage, func)(a, weights, **kw)
                    except ValueError:     # an origin out of range on another axis
                        with pytest.raises(ValueError, match="origin must satisfy"):
                            getattr(cnd, func)(a, weights, **kw)
                        continue
                    _same(getattr(cnd, func)(a, weights, **kw), theirs, f"{func} {kw}")


def test_output_argument_and_per_axis_origin():
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((6, 7)), rng.standard_normal((3, 4))
    for output in (np.float32, np.int16, np.dtype("uint8")):
        _same(cnd.correlate(a * 50, w, output=output),
              ndimage.correlate(a * 50, w, output=output), str(output))
    out = np.empty((6, 7))
    assert cnd.convolve(a, w, output=out, origin=(1, -2)) is out
    _same(out, ndimage.convolve(a, w, origin=(1, -2)))


@pytest.mark.parametrize("kw, error", [
    (dict(origin=2), ValueError), (dict(origin=-2), ValueError), (dict(cval=1j), TypeError),
    (dict(cval="a"), TypeError), (dict(mode="bogus"), RuntimeError),
    (dict(mode=["reflect"]), RuntimeError), (dict(output=np.complex128), RuntimeError),
    (dict(origin=(0, 0)), RuntimeError),
])
def test_errors_like_scipy(kw, error):
    a, w = np.arange(5.0), np.array([1.0, 0.0, 0.0])
    with pytest.raises(error):
        ndimage.correlate(a, w, **kw)
    with pytest.raises(error, match="^correlate: "):
        cnd.correlate(a, w, **kw)


def test_wrong_weights_and_dtypes_like_scipy():
    with pytest.raises(RuntimeError):
        ndimage.correlate(np.arange(5.0), np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="weights must have one non-zero size per"):
        cnd.correlate(np.arange(5.0), np.ones((2, 2)))
    with pytest.raises(RuntimeError):
        ndimage.correlate(np.ones(3, np.float16), np.ones(2))
    with pytest.raises(RuntimeError, match="float16 is not supported"):
        cnd.correlate(np.ones(3, np.float16), np.ones(2))


@given(nd=st.integers(1, 3), data=st.data())
def test_property_matches_scipy(nd, data):
    shape = data.draw(st.tuples(*[st.integers(1, 6)] * nd))
    wshape = data.draw(st.tuples(*[st.integers(1, 5)] * nd))
    mode = data.draw(st.sampled_from(MODES))
    origin = [data.draw(st.integers(-(w // 2), (w - 1) // 2)) for w in wshape]
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    a = (rng.standard_normal(shape) * 100).astype(np.int16)
    w = rng.standard_normal(wshape)
    for func in ("correlate", "convolve"):
        kw = dict(mode=mode, origin=origin, cval=-3.0)
        _same(getattr(cnd, func)(a, w, **kw), getattr(ndimage, func)(a, w, **kw), func)


def _outcome(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except Exception as e:                            # noqa: BLE001 - compared below
        return None, e


def _both(func, *args, **kw):
    """Our result against scipy's: the same exception type, or the same values."""
    theirs, error = _outcome(getattr(ndimage, func), *args, **kw)
    if error is not None:
        with pytest.raises(type(error), match=f"^{func}: "):
            getattr(cnd, func)(*args, **kw)
        return
    _same(getattr(cnd, func)(*args, **kw), theirs, f"{func} {kw}")


@pytest.mark.parametrize("func", ["correlate", "convolve"])
@pytest.mark.parametrize("axes, wshape, origin", [
    ((0,), (3,), 1), ((1, 2), (2, 3), (0, 1)), ((2, 0), (3, 2), (1, 0)), ((-1,), (4,), -2),
    ((0, 1, 2), (2, 2, 2), 0), ((3,), (2,), 0), ((0, 0), (2, 2), 0), ((1,), (2, 2), 0),
    ((0, 1), (3, 3), (0, 0, 0)),
])
def test_axes_like_scipy(func, axes, wshape, origin):
    rng = np.random.default_rng(4)
    a, w = rng.standard_normal((5, 6, 7)), rng.standard_normal(wshape)
    _both(func, a, w, mode="mirror", origin=origin, axes=axes)


def test_output_dtypes_names_and_complex_promotion_like_scipy():
    rng = np.random.default_rng(5)
    a, w = rng.standard_normal((6, 7)) * 40, rng.standard_normal((3, 2))
    for output in ("int16", "f4", "bool", "U1", np.bool_, bool, int, float, np.float16,
                   np.longdouble, np.complex64, np.empty((6, 7), np.int8),
                   np.empty((7, 6))):
        _both("correlate", a, w, output=output)
    for output in (np.float32, float, np.dtype("int16")):       # a dtype: promoted, warned
        with pytest.warns(UserWarning):
            theirs = ndimage.correlate(a, w + 1j, output=output)
        with pytest.warns(UserWarning, match="promoting the output dtype"):
            _same(cnd.correlate(a, w + 1j, output=output), theirs)
    for output in ("float32", np.empty((6, 7))):                 # a name or an array: error
        _both("correlate", a, w + 1j, output=output)
    out = np.empty((6, 7), np.complex64)
    assert cnd.convolve(a + 1j * a, w + 2j * w, output=out) is out
    _same(out, ndimage.convolve(a + 1j * a, w + 2j * w, output=np.complex64))


def test_in_place_output_like_scipy():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 8))
    expected = ndimage.correlate(x, np.ones((3, 3)))
    assert cnd.correlate(x, np.ones((3, 3)), output=x) is x
    _same(x, expected)


@pytest.mark.parametrize("cval", [1j, "1", np.array([1.0]), np.array(2.0), None, True,
                                  np.float32(2), np.int8(3), 2 ** 70, [1.0], np.nan, -np.inf])
def test_cval_kinds_like_scipy(cval):
    a, w = np.arange(12.0).reshape(3, 4), np.ones((3, 2))
    for inp, weights in ((a, w), (a.astype(np.int8), w), (a + 1j, w), (a, w + 1j)):
        _both("correlate", inp, weights, mode="constant", cval=cval)
    _both("correlate", a + 1j, w, mode="constant", cval=np.complex128(2 - 3j))


@pytest.mark.parametrize("origin", [1.0, 0.0, True, [True, 0], np.int64(1), np.array([1, 0]),
                                    (np.int8(-1), 0), "1", None, [1, 0, 0], [[1, 0]]])
def test_origin_kinds_like_scipy(origin):
    a, w = np.arange(12.0).reshape(3, 4), np.ones((3, 2))
    for func in ("correlate", "convolve"):
        _both(func, a, w, origin=origin)


def test_scipys_c_loop_details():
    """Tiny weights are skipped, zero weights never meet NaN/inf, integer outputs get C's
    casts (out-of-range and NaN included), empty and 0-d inputs work."""
    a = np.array([1e20, 0.0, np.nan, 2.0, np.inf, 3.0, 0.0, 1e20])
    for w in ([1e-17, 1.0, 0.0], [2.3e-16, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]):
        _both("correlate", a, w)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 2.0 ** 63, 2.0 ** 64,
                        -2.0 ** 63, 3e9, -3e9, 2.0 ** 31, -2.0 ** 31 - 1, 70000.7,
                        -70000.7, 300.9, -300.9, -1.5, 255.5, 1.5e19])
    for output in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                   np.int64, np.uint64):
        theirs = ndimage.correlate(special, [1.0], output=output)
        ours = cnd.correlate(special, [1.0], output=output)
        assert np.array_equal(ours, theirs.astype(bool) if output is np.bool_ else theirs)
    for shape, wshape in (((0, 3), (2, 2)), ((), ())):
        for mode in MODES:
            _both("correlate", np.ones(shape), np.ones(wshape), mode=mode)


@pytest.mark.parametrize("shape, weights", [
    ((300, 310), np.full((3, 3), 1 / 9)), ((257, 263), np.full((5, 5), 1 / 25)),
    ((40, 41, 42), np.full((3, 3, 3), 1 / 27)), ((8, 9, 10, 11), np.full((2, 3, 2, 3), 1 / 36)),
])
def test_integer_outputs_bit_exact_on_large_inputs(shape, weights):
    """Box filters of uint8 images: sums that land within rounding of an integer truncate
    exactly as scipy's (the convolution path redoes those in scipy's order)."""
    a = np.random.default_rng(7).integers(0, 256, shape).astype(np.uint8)
    for mode in ("reflect", "constant"):
        for func in ("correlate", "convolve"):
            _same(getattr(cnd, func)(a, weights, mode=mode, cval=3),
                  getattr(ndimage, func)(a, weights, mode=mode, cval=3), f"{func} {mode}")


def test_tensors_in_tensors_out():
    t = torch.arange(20.0).reshape(4, 5)
    ours = cnd.convolve(t, torch.ones(2, 3), mode="wrap")
    assert isinstance(ours, torch.Tensor)
    _same(ours.numpy(), ndimage.convolve(t.numpy(), np.ones((2, 3)), mode="wrap"))


@settings(max_examples=30)
@given(nd=st.integers(1, 4), data=st.data())
def test_property_dtypes_outputs_axes_match_scipy(nd, data):
    """Random shapes, an axis subset (in any order: scipy places the weights' axes in
    sorted order but the origins at ``axes[k]``), dtypes and integer outputs: scipy's
    values exactly (integer outputs bit for bit), or scipy's exception."""
    shape = data.draw(st.tuples(*[st.integers(1, 5)] * nd))
    axes = data.draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
    wshape = data.draw(st.tuples(*[st.integers(1, 4)] * len(axes)))
    dtype = data.draw(st.sampled_from([np.uint8, np.int32, np.float32, np.float64, bool]))
    output = data.draw(st.sampled_from([None, np.int16, np.uint8, np.float64]))
    mode = data.draw(st.sampled_from(MODES))
    origin = [data.draw(st.integers(-(w // 2), (w - 1) // 2)) for w in wshape]
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    a = _random(rng, shape, dtype)
    w = np.round(rng.standard_normal(wshape), 1)
    for func in ("correlate", "convolve"):
        _both(func, a, w, output=output, mode=mode, origin=origin, cval=1.5, axes=axes)
