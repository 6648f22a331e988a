"""convforge.convolve / correlate / fftconvolve / oaconvolve / choose_conv_method against
scipy.signal: values, dtypes, shapes and errors, 1-D to 4-D."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

import convforge

SHAPES = [((10,), (4,)), ((4,), (7,)), ((5, 6), (2, 3)), ((3, 4), (5, 2)), ((3, 5), (3, 5)),
          ((4, 5, 6), (2, 3, 2)), ((3, 4, 3, 5), (2, 2, 3, 2))]
DTYPES = [np.float64, np.float32, np.int8, np.uint8, np.int64, np.complex128, np.complex64]


def _random(rng, shape, dtype):
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.standard_normal(shape) > 0
    return (rng.standard_normal(shape) * 50).astype(dtype)


def _same(ours, theirs, msg=""):
    assert ours.dtype == theirs.dtype, f"{msg}: dtype {ours.dtype} != {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{msg}: shape {ours.shape} != {theirs.shape}"
    if ours.dtype.kind in "biu":
        assert np.array_equal(ours, theirs), msg
    elif ours.size:
        tol = 1e-9 if ours.dtype.itemsize >= 8 and ours.dtype != np.complex64 else 2e-5
        scale = max(1.0, float(np.abs(theirs).max()))
        assert float(np.abs(ours - theirs).max()) <= tol * scale, msg


def _outcome(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except Exception as e:                            # noqa: BLE001 - compared below
        return None, e


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("func", ["convolve", "correlate"])
def test_convolve_correlate_match_scipy(func, shapes, dtype):
    rng = np.random.default_rng(0)
    a, b = _random(rng, shapes[0], dtype), _random(rng, shapes[1], dtype)
    for mode in ("full", "same", "valid"):
        for method in ("direct", "fft", "auto"):
            theirs, error = _outcome(getattr(signal, func), a, b, mode, method)
            if error is not None:
                with pytest.raises(type(error)):
                    getattr(convforge, func)(a, b, mode, method)
                continue
            if method == "auto" and np.dtype(dtype).kind == "f":
                method = signal.choose_conv_method(a, b, mode)      # the same rounding
            _same(getattr(convforge, func)(a, b, mode, method), theirs,
                  f"{func} {mode} {method}")


@pytest.mark.parametrize("dtype", DTYPES + [np.float16, bool], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shapes", SHAPES[:6], ids=str)
def test_fftconvolve_oaconvolve_match_scipy(shapes, dtype):
    rng = np.random.default_rng(1)
    a, b = _random(rng, shapes[0], dtype), _random(rng, shapes[1], dtype)
    for func in ("fftconvolve", "oaconvolve"):
        for mode in ("full", "same", "valid"):
            theirs, error = _outcome(getattr(signal, func), a, b, mode)
            if error is not None:
                with pytest.raises(type(error)):
                    getattr(convforge, func)(a, b, mode)
                continue
            _same(getattr(convforge, func)(a, b, mode), theirs, f"{func} {mode}")


@pytest.mark.parametrize("axes", [1, [1], (0, 1), [-1]])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_fft_axes_broadcast_like_scipy(axes, mode):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 30, 3)), rng.standard_normal((1, 7, 3))
    if axes in ((0, 1),):
        b = rng.standard_normal((2, 7, 3))
    for func in ("fftconvolve", "oaconvolve"):
        theirs, error = _outcome(getattr(signal, func), a, b, mode, axes=axes)
        if error is not None:                      # an axis neither convolved nor broadcast
            with pytest.raises(type(error), match="incompatible shapes"):
                getattr(convforge, func)(a, b, mode, axes=axes)
            continue
        _same(getattr(convforge, func)(a, b, mode, axes=axes), theirs, f"{func} {axes}")


def test_small_integer_and_bool_semantics():
    """Wrap-around, rounding of FFT results and NumPy's 1-D bool sums, as in scipy."""
    a = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
    b = np.array([[100, 100]], np.int8)
    for method in ("direct", "fft"):
        _same(convforge.correlate(a, b, method=method), signal.correlate(a, b, method=method))
    big = np.full(8, 2 ** 40, np.int64)
    _same(convforge.convolve(big, big), signal.convolve(big, big))          # exact int64
    assert convforge.choose_conv_method(big, big) == "direct"
    x, y = np.array([True, False, True]), np.array([False, True])
    for method in ("direct", "fft", "auto"):
        _same(convforge.convolve(x, y, method=method), signal.convolve(x, y, method=method))
    h = np.ones(3, np.float16)
    _same(convforge.convolve(h, h, method="direct"), signal.convolve(h, h, method="direct"))


def test_scalars_tensors_and_lists():
    assert convforge.convolve(np.array(2.0), np.array(3.0)) == 6.0
    assert convforge.correlate(np.array(1j), np.array(1j)) == signal.correlate(
        np.array(1j), np.array(1j))
    _same(convforge.convolve([1, 2, 3], [0, 1, 0.5]), signal.convolve([1, 2, 3], [0, 1, 0.5]))
    t = torch.arange(6.0).reshape(2, 3)
    _same(convforge.correlate(t, torch.ones(2, 2)), signal.correlate(t.numpy(),
                                                                     np.ones((2, 2), np.float32)))


ERRORS = [
    (np.ones(3), np.ones((2, 2)), {}, ValueError, "same dimensionality"),
    (np.ones((3, 3)), np.ones((2, 4)), dict(mode="valid"), ValueError, "at least as large"),
    (np.ones(3), np.ones(2), dict(mode="bad"), ValueError, "mode"),
    (np.ones(3), np.ones(2), dict(method="bad"), ValueError, "method"),
    (np.ones(0), np.ones(2), dict(method="direct"), ValueError, "empty"),
    (np.ones((2, 2), bool), np.ones((2, 2), bool), dict(method="direct"), ValueError,
     "does not support"),
    (np.array(["a"]), np.ones(2), {}, TypeError, "numeric"),
]


@pytest.mark.parametrize("a, b, kw, error, words", ERRORS)
def test_errors_are_scipys_type_and_name_the_rule(a, b, kw, error, words):
    for func in ("convolve", "correlate"):
        try:
            getattr(signal, func)(a, b, **kw)
        except Exception as e:                        # noqa: BLE001
            assert isinstance(e, error) or error is TypeError
        else:
            pytest.fail(f"scipy accepted {kw}")
        with pytest.raises(error, match=words) as info:
            getattr(convforge, func)(a, b, **kw)
        assert str(info.value).startswith(f"{func}: ")


def test_choose_conv_method_picks_the_faster_and_measures():
    assert convforge.choose_conv_method(np.ones(100), np.ones(3)) == "direct"
    assert convforge.choose_conv_method(np.ones((300, 300)), np.ones((60, 60))) == "fft"
    assert convforge.choose_conv_method(np.ones(10 ** 6), np.ones(255)) == "fft"
    method, times = convforge.choose_conv_method(np.ones(500), np.ones(50), measure=True)
    assert method in ("direct", "fft") and set(times) == {"direct", "fft"}
    assert times[method] == min(times.values())


@given(nd=st.integers(1, 3), data=st.data())
def test_property_direct_and_fft_agree_with_scipy(nd, data):
    s1 = data.draw(st.tuples(*[st.integers(1, 7)] * nd))
    s2 = data.draw(st.tuples(*[st.integers(1, 5)] * nd))
    mode = data.draw(st.sampled_from(["full", "same", "valid"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    a, b = rng.standard_normal(s1), rng.standard_normal(s2)
    for method in ("direct", "fft"):
        theirs, error = _outcome(signal.correlate, a, b, mode, method)
        if error is not None:
            with pytest.raises(type(error)):
                convforge.correlate(a, b, mode, method)
        else:
            _same(convforge.correlate(a, b, mode, method), theirs, f"{mode} {method}")


def test_long_signal_overlap_save_matches_direct_sum():
    rng = np.random.default_rng(3)
    x, h = rng.standard_normal(50_000), rng.standard_normal(255)
    _same(convforge.convolve(x, h, method="fft"), np.convolve(x, h))
    _same(convforge.oaconvolve(x, h, mode="same"), signal.oaconvolve(x, h, mode="same"))
    xc = x + 1j * rng.standard_normal(50_000)
    _same(convforge.fftconvolve(xc, h, mode="valid"), np.convolve(xc, h, mode="valid"))
