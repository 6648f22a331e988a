"""filter2d against cv2.filter2D and scipy.ndimage on scikit-image's sample photographs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from convforge import filter2d, filters
from convforge import kernels as K

CV_BORDER = {"zeros": cv2.BORDER_CONSTANT, "constant": cv2.BORDER_CONSTANT,
             "reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE,
             "symmetric": cv2.BORDER_REFLECT}
ND_MODE = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest",
           "circular": "wrap", "symmetric": "reflect"}


@pytest.fixture(scope="module")
def photos():
    from skimage import data
    return {"camera": data.camera(), "astronaut": data.astronaut(), "coins": data.coins()}


def _kernels():
    rng = np.random.default_rng(0)
    return {
        "sobel-x": K.sobel("x", dtype=torch.float64).numpy(),
        "gaussian": K.gaussian(7, 1.5, dtype=torch.float32).numpy(),
        "even": np.array([[1, 2], [3, -4], [0.5, 7], [1, 1]]),                # 4x2
        "random5x4": rng.normal(size=(5, 4)).astype(np.float32),
    }


def test_constant_is_zeros():
    x = np.random.default_rng(7).normal(size=(9, 11))
    k = np.random.default_rng(8).normal(size=(3, 4))
    assert np.array_equal(filter2d(x, k, border="constant"), filter2d(x, k, border="zeros"))
    assert np.allclose(filter2d(x, k, border="constant"),
                       cv2.filter2D(x, -1, k, borderType=cv2.BORDER_CONSTANT), atol=1e-12)


def test_cv2_filter2d_rejects_wrap():
    """Why circular is checked against scipy: OpenCV's filter2D refuses BORDER_WRAP."""
    with pytest.raises(cv2.error):
        cv2.filter2D(np.zeros((8, 8), np.uint8), cv2.CV_32F, np.ones((3, 3), np.float32),
                     borderType=cv2.BORDER_WRAP)


@pytest.mark.parametrize("photo", ["camera", "astronaut", "coins"])
@pytest.mark.parametrize("kname", list(_kernels()))
@pytest.mark.parametrize("border", ["zeros", "reflect", "replicate", "symmetric"])
def test_float_result_equals_cv2_filter2d(photos, photo, kname, border):
    img, k = photos[photo][::2, ::2].copy(), _kernels()[kname]   # every other pixel: fast
    ours = filter2d(img, k, border=border, dtype=torch.float64)
    ref = cv2.filter2D(img, cv2.CV_64F, k, borderType=CV_BORDER[border])
    assert ours.shape == img.shape and ours.dtype == np.float64
    assert np.abs(ours - ref).max() <= 1e-9 * max(1.0, np.abs(ref).max())
    ours32 = filter2d(img, k, border=border)                          # float32 by default
    ref32 = cv2.filter2D(img, cv2.CV_32F, k.astype(np.float32), borderType=CV_BORDER[border])
    assert ours32.dtype == np.float32
    assert np.abs(ours32 - ref32).max() <= 1e-5 * max(1.0, np.abs(ref32).max())


@pytest.mark.parametrize("photo", ["camera", "astronaut", "coins"])
@pytest.mark.parametrize("kname", list(_kernels()))
def test_uint8_result_equals_cv2_saturate_cast(photos, photo, kname):
    img, k = photos[photo], _kernels()[kname].astype(np.float32)
    ours = filter2d(img, k, output="same")
    ref = cv2.filter2D(img, -1, k)
    assert ours.dtype == np.uint8 and ours.shape == img.shape
    diff = np.abs(ours.astype(int) - ref)
    if kname in ("sobel-x", "even"):             # exact sums: bitwise equal
        assert diff.max() == 0
    else:                                         # OpenCV sums in float32, we in float64:
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3     # ties near .5 may differ


def test_rounding_is_half_to_even_like_cvround():
    img = np.arange(0, 20, dtype=np.uint8).reshape(4, 5)
    half = np.array([[0.5]], np.float32)
    ours = filter2d(img, half, output="same")
    assert np.array_equal(ours, cv2.filter2D(img, -1, half))
    assert ours.ravel()[[1, 3, 5]].tolist() == [0, 2, 2]     # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    neg = filter2d(img, np.array([[-1.0]]), output="same")
    assert neg.max() == 0                                     # saturated at 0


def test_uint16_and_int16_saturate_like_cv2():
    img16 = (np.arange(40, dtype=np.uint16) * 1700).reshape(5, 8)
    k = np.array([[1, 1]], np.float32)
    assert np.array_equal(filter2d(img16, k, output="same"), cv2.filter2D(img16, -1, k))
    s16 = (np.arange(40, dtype=np.int16) * 1700 - 30000).reshape(5, 8)
    k2 = np.array([[1.5, -2.0]], np.float32)
    assert np.array_equal(filter2d(s16, k2, output="same"), cv2.filter2D(s16, -1, k2))
    t = torch.from_numpy(img16.astype(np.int32)).to(torch.uint16)
    out = filter2d(t, torch.tensor([[1.0, 1.0]]), output="same")
    assert out.dtype == torch.uint16
    assert np.array_equal(out.to(torch.int32).numpy(), cv2.filter2D(img16, -1, k))


@pytest.mark.parametrize("border", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_every_border_matches_scipy_ndimage(photos, border):
    img = photos["coins"][:64, :80].astype(np.float64)
    k = np.random.default_rng(3).normal(size=(4, 5))       # even height: anchor row 2
    ours = filter2d(img, k, border=border)
    ref = ndi.correlate(img, k, mode=ND_MODE[border], cval=0.0)
    assert np.allclose(ours, ref, atol=1e-4)


def test_circular_matches_cv2_copymakeborder_wrap(photos):
    img = photos["camera"][:50, :60]
    k = np.random.default_rng(4).normal(size=(5, 4))
    ah, aw = 2, 2
    padded = cv2.copyMakeBorder(img, ah, 5 - 1 - ah, aw, 4 - 1 - aw, cv2.BORDER_WRAP)
    ref = cv2.filter2D(padded, cv2.CV_64F, k)[ah:ah + 50, aw:aw + 60]
    assert np.allclose(filter2d(img, k, border="circular", dtype=torch.float64), ref,
                       atol=1e-9)


def test_layouts_agree(photos):
    rgb = photos["astronaut"][:40, :48]                                # (H, W, C)
    k = K.sobel("y", dtype=torch.float64)
    hwc = filter2d(rgb, k)
    chw = filter2d(np.ascontiguousarray(rgb.transpose(2, 0, 1)), k)
    nchw = filter2d(torch.from_numpy(rgb).permute(2, 0, 1)[None], k)
    assert hwc.shape == rgb.shape and chw.shape == (3, 40, 48) and nchw.shape == (1, 3, 40, 48)
    assert np.array_equal(chw.transpose(1, 2, 0), hwc)
    assert np.array_equal(nchw[0].permute(1, 2, 0).numpy(), hwc)
    ref = cv2.filter2D(rgb, cv2.CV_32F, k.numpy().astype(np.float32))    # cv2 is HWC
    assert np.allclose(hwc, ref, atol=1e-3)
    gray = rgb[:, :, :1].copy()                                          # (40, 48, 1): HWC
    assert np.array_equal(filter2d(gray, k)[..., 0], filter2d(gray[..., 0], k))
    forced = filter2d(gray, k, layout="CHW", border="zeros")             # 40 images of 48x1
    assert forced.shape == (40, 48, 1)
    row_kernel = k[:, 1][None, :]
    assert np.array_equal(forced[:, :, 0], filter2d(gray[:, :, 0], row_kernel, border="zeros"))


def test_resolve_layout_rule():
    r = filters.resolve_layout
    assert r((5, 6)) == "HW" and r((5, 6, 3)) == "HWC" and r((3, 5, 6)) == "CHW"
    assert r((3, 6, 3)) == "CHW" and r((5, 6, 7)) == "CHW" and r((2, 3, 5, 6)) == "NCHW"
    with pytest.raises(ValueError, match="layout"):
        r((5, 6), "HWC")
    with pytest.raises(ValueError, match="2D, 3D or 4D"):
        r((5,))


def test_per_channel_kernels(photos):
    rgb = photos["astronaut"][:32, :32].astype(np.float32)
    ks = np.stack([K.sobel("x").numpy(), K.box(3).numpy(), K.laplacian().numpy()])
    out = filter2d(rgb, ks)
    for c in range(3):
        assert np.allclose(out[..., c], cv2.filter2D(rgb[..., c], -1, ks[c]), atol=1e-3)
    with pytest.raises(ValueError, match="kernel must be"):
        filter2d(rgb, ks[:2])


def test_tensor_in_tensor_out_and_float_dtypes():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = filter2d(x, K.gaussian(5, 1.0, dtype=torch.float64), border="replicate")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and y.shape == x.shape
    ref = ndi.correlate(x.numpy(), K.gaussian(5, 1.0, dtype=torch.float64).numpy()[None, None],
                        mode="nearest")
    assert np.allclose(y.numpy(), ref, atol=1e-12)
    h = filter2d(x.to(torch.float16), K.box(3))
    assert h.dtype == torch.float16
    same = filter2d(x.float(), K.box(3), output="same")
    assert same.dtype == torch.float32


def test_anchor_matches_cv2():
    img = np.random.default_rng(5).integers(0, 255, (20, 30)).astype(np.uint8)
    k = np.random.default_rng(6).normal(size=(3, 4)).astype(np.float32)
    ref = cv2.filter2D(img, cv2.CV_64F, k, anchor=(0, 2))                # Point(x=col, y=row)
    assert np.allclose(filter2d(img, k, anchor=(2, 0), dtype=torch.float64), ref, atol=1e-9)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(border="wrap"), ValueError, "border"), (dict(output="uint8"), ValueError, "output"),
    (dict(layout="WH"), ValueError, "layout"), (dict(anchor=(3, 0)), ValueError, "anchor"),
])
def test_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=f"filter2d: {match}"):
        filter2d(np.zeros((8, 8)), np.ones((3, 3)), **kwargs)


def test_input_errors():
    with pytest.raises(TypeError, match="filter2d: image"):
        filter2d([[1, 2]], np.ones((1, 1)))
    with pytest.raises(TypeError, match="filter2d: image"):
        filter2d(np.zeros((4, 4), dtype=bool), np.ones((1, 1)))
    with pytest.raises(ValueError, match="more reflect border"):
        filter2d(np.zeros((3, 3)), np.ones((7, 7)))
    assert filter2d(np.zeros((3, 3)), np.ones((7, 7)), border="zeros").shape == (3, 3)


def test_gradient_helpers_match_cv2(photos):
    img = photos["coins"]
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    mag = filters.gradient_magnitude(img)
    assert mag.dtype == np.float32 and np.allclose(mag, cv2.magnitude(gx, gy), atol=1e-3)
    ang = filters.gradient_direction(img)
    phase = cv2.phase(gx, gy)                                  # [0, 2 pi)
    strong = mag > 50
    delta = np.angle(np.exp(1j * (ang[strong] - phase[strong])))
    assert np.abs(delta).max() < 1e-3
    sch = filters.gradient_magnitude(torch.from_numpy(img), operator="scharr")
    ref = cv2.magnitude(cv2.Scharr(img, cv2.CV_32F, 1, 0), cv2.Scharr(img, cv2.CV_32F, 0, 1))
    assert np.allclose(sch.numpy(), ref, atol=1e-2)
    with pytest.raises(ValueError, match="operator"):
        filters.gradient_magnitude(img, operator="canny")


def test_blur_and_sharpen_helpers(photos):
    img = photos["camera"]
    ref = cv2.GaussianBlur(img.astype(np.float32), (7, 7), 1.2)
    assert np.allclose(filters.blur(img, sigma=1.2, size=7, output="float"), ref, atol=1e-3)
    sharp = filters.sharpen(img)
    assert sharp.dtype == np.uint8
    assert np.array_equal(sharp, cv2.filter2D(img, -1, K.sharpen().numpy()))


def test_algorithm_is_passed_to_conv2d(photos):
    img = photos["coins"][:40, :50]
    k = K.scharr("x", dtype=torch.float64)
    ref = cv2.Scharr(img, cv2.CV_64F, 1, 0)
    for algorithm in ("reference", "im2col"):
        assert np.array_equal(filter2d(img, k, dtype=torch.float64, algorithm=algorithm), ref)
    with pytest.raises(ValueError, match="algorithm"):
        filter2d(img, k, algorithm="magic")
