"""convforge.convolve / correlate / fftconvolve / oaconvolve / choose_conv_method against
scipy.signal: values, dtypes, shapes and errors, 1-D to 4-D."""

import warnings
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

import convforge
from helpers import random_array

SHAPES = [((10,), (4,)), ((4,), (7,)), ((5, 6), (2, 3)), ((3, 4), (5, 2)), ((3, 5), (3, 5)),
          ((4, 5, 6), (2, 3, 2)), ((3, 4, 3, 5), (2, 2, 3, 2))]
DTYPES = [np.float64, np.float32, np.int8, np.uint8, np.int64, np.complex128, np.complex64]


def _random(rng, shape, dtype):
    return random_array(rng, shape, dtype, 50)


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


def _like_scipy(func, args, compare, *, match=None, **kw):
    """convforge's ``func`` against scipy.signal's on the same arguments: where scipy
    raises, the same exception type (its message matching ``match``); else
    ``compare(ours, theirs)``."""
    theirs, error = _outcome(getattr(signal, func), *args, **kw)
    if error is not None:
        with pytest.raises(type(error), match=match):
            getattr(convforge, func)(*args, **kw)
        return
    compare(getattr(convforge, func)(*args, **kw), theirs)


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
            _like_scipy(func, (a, b, mode),
                        partial(_same, msg=f"{func} {mode}"))


@pytest.mark.parametrize("axes", [1, [1], (0, 1), [-1]])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_fft_axes_broadcast_like_scipy(axes, mode):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 30, 3)), rng.standard_normal((1, 7, 3))
    if axes in ((0, 1),):
        b = rng.standard_normal((2, 7, 3))
    for func in ("fftconvolve", "oaconvolve"):     # an error: an axis neither convolved
        _like_scipy(func, (a, b, mode),              # nor broadcast
                    partial(_same, msg=f"{func} {axes}"),
                    match="incompatible shapes", axes=axes)


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
    for func in ("correlate", "convolve", "fftconvolve", "oaconvolve"):
        ours = getattr(convforge, func)(t, torch.ones(2, 2))   # a tensor in1: a tensor back
        assert isinstance(ours, torch.Tensor)
        _same(ours.numpy(), getattr(signal, func)(t.numpy(), np.ones((2, 2), np.float32)))


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
        _like_scipy("correlate", (a, b, mode, method),
                    partial(_same, msg=f"{mode} {method}"))


def test_long_signal_overlap_save_matches_direct_sum():
    rng = np.random.default_rng(3)
    x, h = rng.standard_normal(50_000), rng.standard_normal(255)
    _same(convforge.convolve(x, h, method="fft"), np.convolve(x, h))
    _same(convforge.oaconvolve(x, h, mode="same"), signal.oaconvolve(x, h, mode="same"))
    xc = x + 1j * rng.standard_normal(50_000)
    _same(convforge.fftconvolve(xc, h, mode="valid"), np.convolve(xc, h, mode="valid"))


def _random_any(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0 if dtype.kind == "u" else -100, 100, shape).astype(dtype)
    return _random(rng, shape, dtype)


def _agrees(ours, theirs, dtypes, msg):
    """Same dtype and shape; integers and bool equal; floats within the precision of the
    narrowest input (scipy transforms float32 inputs in single precision)."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, msg
    if ours.dtype.kind in "biu":
        assert np.array_equal(ours, theirs), msg
    elif ours.size:
        single = any(np.dtype(d) in (np.float16, np.float32, np.complex64) for d in dtypes)
        half = any(np.dtype(d) == np.float16 for d in dtypes)
        tol = 3e-2 if half else 3e-4 if single else 1e-9
        scale = max(1.0, float(np.abs(theirs).max()))
        assert float(np.abs(ours - theirs).max()) <= tol * scale, msg


MORE_DTYPES = ["bool", "int16", "uint16", "int32", "uint32", "uint64", "float16",
               "longdouble", "clongdouble"]


@pytest.mark.parametrize("dtypes", [(d, d) for d in MORE_DTYPES]
                         + [("int8", "float32"), ("uint8", "complex64"), ("bool", "int32"),
                            ("float32", "float64"), ("int64", "uint64"),
                            ("longdouble", "int8")], ids=str)
@pytest.mark.parametrize("shapes", [((6,), (3,)), ((3,), (6,)), ((4, 5), (2, 3)),
                                    ((3, 4, 3), (2, 2, 2))], ids=str)
def test_every_dtype_and_method_like_scipy(shapes, dtypes):
    rng = np.random.default_rng(8)
    a, b = _random_any(rng, shapes[0], dtypes[0]), _random_any(rng, shapes[1], dtypes[1])
    for func in ("convolve", "correlate"):
        for mode in ("full", "same", "valid"):
            for method in ("direct", "fft", "auto"):
                theirs, error = _outcome(getattr(signal, func), a, b, mode, method)
                if error is not None:
                    if method == "auto" and "Unsupported type" in str(error):
                        continue            # scipy's auto picks direct for float16 N-D
                    with pytest.raises(type(error)):
                        getattr(convforge, func)(a, b, mode, method)
                    continue
                _agrees(getattr(convforge, func)(a, b, mode, method), theirs, dtypes,
                        f"{func} {mode} {method}")
        for func in ("fftconvolve", "oaconvolve"):
            _agrees(getattr(convforge, func)(a, b), getattr(signal, func)(a, b), dtypes, func)


EMPTY_SHAPES = [((0,), (3,)), ((3,), (0,)), ((0,), (0,)), ((0,), (1,)), ((2, 0), (1, 2)),
                ((1, 2), (2, 0)), ((0, 3), (0, 2)), ((0, 3), (1, 2)), ((2, 3), (0, 2)),
                ((1, 1), (3, 0)), ((0, 0), (0, 0))]


@pytest.mark.parametrize("shapes", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "int64", "bool"])
def test_empty_inputs_like_scipy(shapes, dtype):
    a, b = np.ones(shapes[0], dtype), np.ones(shapes[1], dtype)
    for func in ("convolve", "correlate", "fftconvolve", "oaconvolve"):
        methods = ("direct", "fft", "auto") if func in ("convolve", "correlate") else (None,)
        for mode in ("full", "same", "valid"):
            for method in methods:
                args = (a, b, mode) if method is None else (a, b, mode, method)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs, error = _outcome(getattr(signal, func), *args)
                if error is not None:
                    with pytest.raises(type(error), match=f"^{func}: "):
                        getattr(convforge, func)(*args)
                    continue
                _same(getattr(convforge, func)(*args), theirs, f"{func} {mode} {method}")


def test_fft_empty_error_is_both_value_and_index_error():
    with pytest.raises(ValueError, match="needs non-empty inputs"):
        convforge.convolve(np.ones(0), np.ones(3), method="fft")
    with pytest.raises(IndexError):
        convforge.correlate(np.ones((2, 0)), np.ones((1, 2)), method="fft")
    with pytest.raises(ValueError, match="empty integer inputs"):
        convforge.choose_conv_method(np.ones(0, int), np.ones(3))


@pytest.mark.parametrize("shapes", [((1,), (5,)), ((5,), (1,)), ((3, 1), (1, 4)),
                                    ((2, 1), (3, 4)), ((1, 1), (3, 4)), ((2, 3, 4), (1, 3, 1))],
                         ids=str)
@pytest.mark.parametrize("dtype", ["int64", "bool", "int8", "float32", "complex64"])
def test_fftconvolve_broadcasts_size_one_axes_like_scipy(shapes, dtype):
    """Axes where either input has size 1 are multiplied, not transformed: with none left
    scipy returns the plain product in its own dtype (and 'valid' ignores them)."""
    rng = np.random.default_rng(9)
    a, b = _random_any(rng, shapes[0], dtype), _random_any(rng, shapes[1], dtype)
    for func in ("fftconvolve", "oaconvolve"):
        for mode in ("full", "same", "valid"):
            _like_scipy(func, (a, b, mode),
                        partial(_agrees, dtypes=(dtype,), msg=f"{func} {mode}"))


@pytest.mark.parametrize("axes", [(), 1.5, (5,), (0, 0), "a"])
def test_fft_axes_errors_like_scipy(axes):
    a, b = np.ones((4, 5)), np.ones((2, 3))
    for func in ("fftconvolve", "oaconvolve"):
        theirs, error = _outcome(getattr(signal, func), a, b, axes=axes)
        assert error is not None
        with pytest.raises(type(error), match=f"^{func}: "):
            getattr(convforge, func)(a, b, axes=axes)


def test_huge_unsigned_and_mixed_integer_rules():
    a = np.array([2 ** 63 + 5, 2 ** 64 - 1, 7], np.uint64)
    b = np.array([3, 2 ** 63 + 1], np.uint64)
    for method in ("direct", "auto"):
        _same(convforge.convolve(a, b, method=method), signal.convolve(a, b, method=method))
    x, h = np.full(50, 2 ** 30, np.int64), np.full(50, 2.0 ** 30)      # either is an integer
    assert convforge.choose_conv_method(x, h) == signal.choose_conv_method(x, h) == "direct"


@settings(max_examples=30)
@given(nd=st.integers(1, 4), data=st.data())
def test_property_integer_dtypes_match_scipy_exactly(nd, data):
    """Integer inputs of any size and mode: scipy's wrapped / rounded integers exactly,
    by every method."""
    s1 = data.draw(st.tuples(*[st.integers(1, 5)] * nd))
    s2 = data.draw(st.tuples(*[st.integers(1, 4)] * nd))
    dtype = data.draw(st.sampled_from([np.int8, np.uint8, np.int16, np.int64, np.uint64]))
    mode = data.draw(st.sampled_from(["full", "same", "valid"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    a, b = _random_any(rng, s1, dtype), _random_any(rng, s2, dtype)
    for func in ("convolve", "correlate"):
        for method in ("direct", "fft", "auto"):
            _like_scipy(func, (a, b, mode, method),
                        partial(_same, msg=f"{func} {method}"))


@settings(max_examples=30)
@given(nd=st.integers(1, 4), data=st.data())
def test_property_fft_axes_and_broadcast_match_scipy(nd, data):
    """fftconvolve / oaconvolve over a random axis subset, with size-1 (broadcast) axes:
    scipy's shapes, dtypes and values, or scipy's exception."""
    s1 = data.draw(st.tuples(*[st.integers(1, 5)] * nd))
    s2 = tuple(data.draw(st.sampled_from([1, n, 3])) for n in s1)
    axes = data.draw(st.none() | st.lists(st.integers(-nd, nd - 1), min_size=1, max_size=nd))
    dtype = data.draw(st.sampled_from([np.float64, np.float32, np.complex128, np.int16]))
    mode = data.draw(st.sampled_from(["full", "same", "valid"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    a, b = _random_any(rng, s1, dtype), _random_any(rng, s2, dtype)
    for func in ("fftconvolve", "oaconvolve"):
        _like_scipy(func, (a, b, mode),
                    partial(_agrees, dtypes=(dtype,), msg=func),
                    match=f"^{func}: ", axes=axes)


@pytest.mark.parametrize("s1, s2, dtype", [
    ((300, 310), (9, 8), np.float64), ((300, 310), (9, 8), np.int32),
    ((300, 310), (9, 8), np.complex128), ((40, 40), (150, 150), np.float64),
    ((50_000,), (101,), np.float64), ((101,), (50_000,), np.int32),
], ids=str)
def test_direct_on_convforge_convolutions_like_scipy(s1, s2, dtype):
    """Work above NumPy's passes runs on convforge's convolutions; every mode (the
    padding gives scipy's 'same' window directly), in1 larger or smaller."""
    rng = np.random.default_rng(10)
    a, b = _random_any(rng, s1, dtype), _random_any(rng, s2, dtype)
    for func in ("convolve", "correlate"):
        for mode in ("full", "same", "valid"):
            theirs = getattr(signal, func)(a, b, mode, "direct")
            _same(getattr(convforge, func)(a, b, mode, "direct"), theirs, f"{func} {mode}")
