"""The seed chapter (d2l 6.2-6.4) walked through with convforge's public API.

:func:`walkthrough` returns the chapter's results as ``(title, text)`` sections; the
``convforge demo`` command prints them. Every number comes from computing it here.
"""

from __future__ import annotations

import torch

from .functional import conv2d, corr2d
from .shapes import book_output_size, output_shape


def edge_image() -> torch.Tensor:
    """The chapter's 6x8 image: white (1) with a black (0) band in columns 2..5."""
    x = torch.ones(6, 8)
    x[:, 2:6] = 0
    return x


def learn_edge_kernel(steps=10, lr=3e-2, seed=0, every=2):
    """The book's loop: learn a 1x2 kernel from (X, Y) by gradient descent, no bias.

    Returns the learned kernel and the (step, loss) pairs printed every ``every`` steps.
    """
    x = edge_image().reshape(1, 1, 6, 8)
    y = corr2d(edge_image(), torch.tensor([[1.0, -1.0]])).reshape(1, 1, 6, 7)
    gen = torch.Generator().manual_seed(seed)
    w = (torch.rand(1, 1, 1, 2, generator=gen) * 2 - 1).requires_grad_()
    history = []
    for i in range(steps):
        loss = ((conv2d(x, w) - y) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= lr * grad
        if (i + 1) % every == 0:
            history.append((i + 1, loss.item()))
    return w.detach().reshape(1, 2), history


def walkthrough() -> list[tuple[str, str]]:
    """The chapter's results, section by section."""
    out = []
    x = torch.arange(9).reshape(3, 3)
    k = torch.arange(4).reshape(2, 2)
    out.append(("Cross-correlation (corr2d)",
                f"X =\n{str(x)}\nK =\n{str(k)}\ncorr2d(X, K) =\n{str(corr2d(x, k))}"))

    img = edge_image()
    kern = torch.tensor([[1.0, -1.0]])
    y = corr2d(img, kern)
    out.append(("Edge detection with K = [[1, -1]]",
                f"X =\n{str(img)}\nY = corr2d(X, K): 1 marks white->black, -1 black->white\n"
                f"{str(y)}\ncorr2d(X.T, K): the kernel sees only vertical edges\n"
                f"{str(corr2d(img.t(), kern))}"))

    w, history = learn_edge_kernel()
    lines = "\n".join(f"step {s}, loss {v:.3f}" for s, v in history)
    out.append(("Learning the kernel from (X, Y) by gradient descent (lr 0.03)",
                f"{lines}\nlearned kernel: {str(w)}"))

    x8 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = []
    for kernel, pad, stride in (((3, 3), (1, 1), (1, 1)), ((5, 3), (2, 1), (1, 1)),
                                ((3, 3), (1, 1), (2, 2)), ((3, 5), (0, 1), (3, 4))):
        wk = torch.randn(1, 1, *kernel)
        shape = tuple(conv2d(x8, wk, padding=pad, stride=stride).shape[2:])
        book = tuple(book_output_size(8, kernel[a], 2 * pad[a], stride[a]) for a in (0, 1))
        rows.append(f"kernel {kernel}, padding {pad}, stride {stride}: output {shape} "
                    f"(book formula {book}, output_shape {output_shape(8, kernel, stride, pad)})")
    out.append(("Padding and stride on an 8x8 input", "\n".join(rows)))

    xm = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    km = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    multi_in = conv2d(xm, km[None])[0]
    k3 = torch.stack((km, km + 1, km + 2), 0)
    out.append(("Multiple input and output channels",
                f"two input channels, one output:\n{str(multi_in)}\n"
                f"kernel stack K, K+1, K+2 of shape {tuple(k3.shape)}:\n{str(conv2d(xm, k3))}"))

    gen = torch.Generator().manual_seed(0)
    x1 = torch.normal(0, 1, (3, 3, 3), generator=gen)
    k1 = torch.normal(0, 1, (2, 3, 1, 1), generator=gen)
    y1 = (k1.reshape(2, 3) @ x1.reshape(3, 9)).reshape(2, 3, 3)
    y2 = conv2d(x1, k1)
    out.append(("1x1 convolution is a matrix product",
                f"max |matmul - conv2d| = {(y1 - y2).abs().max().item():.3g} "
                f"(allclose: {torch.allclose(y1, y2)}; bitwise equality is not guaranteed, "
                f"the two sum in different orders)"))
    return out


def print_walkthrough(write=print) -> None:
    for title, text in walkthrough():
        write(f"\n== {title} ==\n{text}")
