"""Figures render headless, save valid PNGs with real content, and centre signed maps at 0."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from convforge import kernels as K
from convforge import plot

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path, size):
    data = path.read_bytes()
    assert data[:8] == PNG
    with Image.open(path) as im:
        assert im.size == size
        a = np.asarray(im.convert("RGB")).astype(float)
    assert a.std() > 10                                          # not a blank canvas
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50         # many colours drawn
    return a


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_filter_figure_saves_png_and_centres_signed_maps(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((48, 64))
    path = tmp_path / "f.png"
    fig = plot.filter_figure(img, K.sobel("x"), title="sobel", path=path)
    _check_png(path, (1100, 400))
    image, kernel, response = _images(fig)
    assert image.get_cmap().name == "gray"
    assert kernel.get_cmap().name == plot.DIVERGING and kernel.get_clim() == (-2.0, 2.0)
    lo, hi = response.get_clim()
    assert response.get_cmap().name == plot.DIVERGING and lo == -hi and hi > 0
    assert not list(tmp_path.glob(".*"))                         # no temporary left behind
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_filter_figure_accepts_colour_and_given_response(tmp_path):
    rgb = (np.random.default_rng(1).random((32, 40, 3)) * 255).astype(np.uint8)
    blurred = np.random.default_rng(2).random((32, 40))
    fig = plot.filter_figure(torch.from_numpy(rgb).permute(2, 0, 1), K.box(3), blurred)
    assert _images(fig)[2].get_cmap().name == "gray"             # non-negative: grey
    fig = plot.filter_figure(rgb, K.laplacian())                  # response computed (HWC)
    assert _images(fig)[2].get_cmap().name == plot.DIVERGING


def test_kernel_gallery(tmp_path):
    path = tmp_path / "g.png"
    fig = plot.kernel_gallery(["sobel-x", "sobel-y", "laplacian:8", "gaussian:size=5,sigma=1",
                               "edge-x"], ncols=3, path=path)
    _check_png(path, (720, 520))
    ims = _images(fig)
    assert len(ims) == 5
    for im in ims:
        lo, hi = im.get_clim()
        assert lo == -hi and im.get_cmap().name == plot.DIVERGING
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["-1", "0", "1", "-2", "0", "2", "-1", "0", "1"]
    fig = plot.kernel_gallery({"mine": np.array([[1.0, -1.0]])})
    assert len(_images(fig)) == 1
    with pytest.raises(ValueError, match="kernel_gallery"):
        plot.kernel_gallery({})
    with pytest.raises(ValueError, match="kernels.get"):
        plot.kernel_gallery(["sobol"])


def test_loss_figure(tmp_path):
    path = tmp_path / "loss.png"
    fig = plot.loss_figure([8.83, 1.69, 0.369, 0.097, 0.031], path=path)
    _check_png(path, (600, 400))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert np.allclose(ax.lines[0].get_ydata(), [8.83, 1.69, 0.369, 0.097, 0.031])
    fig = plot.loss_figure({"a": [4.0, 2.0], "b": [10.0, 1.0]}, relative=True)
    ys = [line.get_ydata().tolist() for line in fig.axes[0].lines]
    assert ys == [[1.0, 0.5], [1.0, 0.1]]
    assert plot.loss_figure([1.0, 0.0]).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="loss_figure"):
        plot.loss_figure([])


def test_image_grid_and_errors(tmp_path):
    path = tmp_path / "grid.png"
    plot.image_grid({"a": np.random.default_rng(3).random((20, 20)),
                     "b": np.random.default_rng(4).normal(size=(20, 20))}, path=path)
    _check_png(path, (720, 380))
    with pytest.raises(ValueError, match="image_grid"):
        plot.image_grid([])
    with pytest.raises(ValueError, match="2D"):
        plot.image_grid({"x": np.zeros(5)})


def test_save_failure_leaves_nothing(tmp_path):
    fig = plot.loss_figure([1.0, 0.5])
    with pytest.raises(ValueError):
        plot.save(fig, tmp_path / "bad.unknownformat")
    assert list(tmp_path.iterdir()) == []
