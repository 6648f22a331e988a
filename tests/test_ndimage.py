"""convforge.ndimage.correlate / convolve against scipy.ndimage: every mode, origins, dtypes
(output casting included), complex, 1-D to 4-D, and scipy's errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from convforge import ndimage as cnd

MODES = ["reflect", "constant", "nearest", "mirror", "wrap", "grid-mirror", "grid-constant",
         "grid-wrap"]
DTYPES = [np.float64, np.float32, np.uint8, np.int8, np.int32, np.uint16, np.int64,
          np.complex128, np.complex64, bool]
SHAPES = [((7,), (3,)), ((5,), (4,)), ((2,), (5,)), ((1,), (3,)), ((6, 7), (3, 2)),
          ((3, 4), (5, 5)), ((4, 5, 6), (3, 2, 3)), ((3, 3, 4, 2), (2, 3, 2, 1))]


def _random(rng, shape, dtype):
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.standard_normal(shape) > 0
    return (rng.standard_normal(shape) * 40).astype(dtype)


def _same(ours, theirs, msg=""):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, msg
    if ours.dtype.kind in "biu":
        assert np.array_equal(ours, theirs), msg
    else:
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
