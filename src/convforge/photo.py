"""The chapter's ideas on a real photograph (scikit-image's ``camera``), for ``convforge demo``.

:func:`walkthrough` returns ``(sections, figures)``: ``(title, text)`` pairs computed here, and
``name -> callable`` building each matplotlib figure (:mod:`convforge.plot`) on demand.
"""

from __future__ import annotations

import torch

from . import kernels as K
from .filters import filter2d, gradient_magnitude
from .functional import conv2d, corr2d
from .shapes import output_shape

FIGURES = ("edges.png", "sobel.png", "gallery.png", "learned.png", "loss.png")


class MissingDependency(ValueError):
    """scikit-image (the photograph) is not installed."""


def camera() -> torch.Tensor:
    """scikit-image's 512x512 ``camera`` photograph as float32 in [0, 1]."""
    try:
        from skimage import data
    except ImportError:
        raise MissingDependency("demo: the photograph needs scikit-image "
                         "(pip install 'convforge[image]'), but it is not installed") from None
    return torch.from_numpy(data.camera()).to(torch.float32) / 255


def _stats(y: torch.Tensor) -> str:
    strong = (y.abs() > 0.1).float().mean().item()
    return (f"output {tuple(y.shape)}, mean |Y| {y.abs().mean().item():.4f}, "
            f"|Y| > 0.1 at {100 * strong:.1f}% of pixels")


def _edges(x):
    book = K.book_edge()
    detectors = {"vertical edges, K = [[1, -1]]": book,
                 "horizontal edges, K.T = [[1], [-1]]": book.t(),
                 "diagonal edges, [[1, 0], [0, -1]]": K.diagonal_edge("diagonal"),
                 "antidiagonal edges, [[0, 1], [-1, 0]]": K.diagonal_edge("antidiagonal")}
    responses = {name: corr2d(x, k) for name, k in detectors.items()}
    text = "\n".join(f"{name}: {_stats(y)}" for name, y in responses.items())
    return text, responses


def _transpose_text(x):
    k = K.book_edge()
    diff = (corr2d(x.t(), k).t() - corr2d(x, k.t())).abs().max().item()
    tri = torch.tril(torch.ones(6, 8))                                # a diagonal edge
    return (f"corr2d(X.T, K).T == corr2d(X, K.T): max |difference| = {diff:g}. Transposing the\n"
            f"image (or the kernel) turns the vertical-edge detector into a horizontal one.\n"
            f"A diagonal edge (X = tril(ones(6, 8))) has a horizontal step in every row, so K\n"
            f"sees it:\n{corr2d(tri, k)}\n"
            f"and so does K.T (a vertical step in every column):\n{corr2d(tri, k.t())}")


def _shapes_text(x):
    xb = x[None, None]
    rows = []
    for kernel, pad, stride in (((3, 3), (1, 1), (1, 1)), ((5, 3), (2, 1), (1, 1)),
                                ((3, 3), (1, 1), (2, 2)), ((3, 5), (0, 1), (3, 4))):
        y = conv2d(xb, torch.randn(1, 1, *kernel), padding=pad, stride=stride)
        rows.append(f"kernel {kernel}, padding {pad}, stride {stride}: "
                    f"{tuple(x.shape)} -> {tuple(y.shape[2:])} "
                    f"(output_shape: {output_shape(tuple(x.shape), kernel, stride, pad)})")
    return "\n".join(rows)


def _opencv_text(x):
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed: comparison skipped."
    img = (x * 255).round().to(torch.uint8).numpy()
    rows = []
    for name, ours, ref in (
            ("sobel-x", K.sobel("x"), cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3)),
            ("sobel-y", K.sobel("y"), cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3)),
            ("scharr-x", K.scharr("x"), cv2.Scharr(img, cv2.CV_64F, 1, 0)),
            ("laplacian", K.laplacian(4), cv2.Laplacian(img, cv2.CV_64F, ksize=1))):
        got = filter2d(img, ours.double(), dtype=torch.float64)
        rows.append(f"{name:<10} filter2d vs OpenCV: max |difference| = "
                    f"{abs(got - ref).max():g}")
    return "\n".join(rows)


def _learn(x):
    from .fit import fit_kernel

    crop = x[:128, :128]
    true = K.sobel("x")
    y = filter2d(crop, true)[1:-1, 1:-1]                               # the valid part
    exact = fit_kernel(crop, y, (3, 3))
    gd = fit_kernel(crop, y, (3, 3), method="gd", steps=300)
    noise = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
    gd_noise = fit_kernel(noise, filter2d(noise, true)[1:-1, 1:-1], (3, 3), method="gd",
                          steps=300)
    err = lambda w: (w - true).abs().max().item()                      # noqa: E731
    text = (f"Y = filter2d(X, sobel-x) on a 128x128 crop; learn a 3x3 kernel back from (X, Y).\n"
            f"least squares: max |K - sobel| = {err(exact.weight):.2e}, loss "
            f"{float(exact.loss):.2e}\n"
            f"gradient descent (lr = 1/lambda_max): loss {gd.loss[0]:.4g} -> {gd.loss[-1]:.4g} "
            f"in {gd.steps} steps, max |K - sobel| = {err(gd.weight):.3f}\n"
            f"the same on white noise: loss {gd_noise.loss[0]:.4g} -> {gd_noise.loss[-1]:.2e} "
            f"in {gd_noise.steps} steps, max |K - sobel| = {err(gd_noise.weight):.1e}\n"
            f"Neighbouring pixels of a photograph are strongly correlated: the loss is a long,\n"
            f"narrow valley (a badly conditioned Hessian) and gradient descent crawls along it.\n"
            f"White noise is uncorrelated, so the valley is round and a few steps suffice;\n"
            f"least squares solves either exactly at once.")
    return text, {"sobel-x (true)": true, "least squares (photo)": exact.weight,
                  "gradient descent (photo)": gd.weight}, \
        {"photo": gd.loss, "white noise": gd_noise.loss}


def walkthrough():
    """The photo chapter: ``(sections, figures)``; figures are built only when called."""
    from . import plot

    x = camera()
    sections = [("The chapter on a real photograph",
                 f"X = scikit-image's camera, {tuple(x.shape)}, scaled to [0, 1]")]
    edge_text, responses = _edges(x)
    sections.append(("Edges in the photograph", edge_text))
    sections.append(("Transposing the image or the kernel (exercise)", _transpose_text(x)))
    sections.append(("Padding and stride on the photograph", _shapes_text(x)))
    sections.append(("The kernel zoo against OpenCV (uint8 photo)", _opencv_text(x)))
    learn_text, learned, losses = _learn(x)
    sections.append(("Learning a kernel back from its output", learn_text))
    gallery = ["edge-x", "edge-y", "diagonal_edge-diagonal", "sobel-x", "sobel-y",
               "sobel-diagonal", "scharr-x", "prewitt-x", "laplacian", "laplacian:8",
               "log:sigma=1", "gaussian:size=5,sigma=1", "box:3", "sharpen", "emboss",
               "finite_difference:order=2"]
    grid = {"photo": x, **{k.split(",")[0]: v for k, v in responses.items()},
            "Sobel gradient magnitude": gradient_magnitude(x)}
    figures = {
        "edges.png": lambda: plot.image_grid(grid, title="edges in the photograph"),
        "sobel.png": lambda: plot.filter_figure(x, K.sobel("x"), title="Sobel x on camera"),
        "gallery.png": lambda: plot.kernel_gallery(gallery),
        "learned.png": lambda: plot.kernel_gallery(learned, ncols=3,
                                                   title="a kernel learned back"),
        "loss.png": lambda: plot.loss_figure(losses, relative=True,
                                             title="gradient descent: photo vs white noise"),
    }
    return sections, figures


def save_figure(fig, path) -> None:
    """Save ``fig`` atomically to ``path`` (:func:`convforge.plot.save`)."""
    from .plot import save

    save(fig, path)
