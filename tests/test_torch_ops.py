"""convforge's custom operators: schema, fake (meta) implementations, AOT dispatch,
checked by torch.library.opcheck on several configurations."""

from __future__ import annotations

import pytest
import torch

from convforge import ops

CONFIGS = [  # (x shape, w shape, stride, [top, bottom, left, right], dilation, groups)
    ((2, 3, 9, 8), (4, 3, 3, 3), [1, 1], [1, 1, 0, 2], [1, 1], 1),
    ((1, 4, 11, 10), (4, 1, 3, 3), [2, 1], [1, 1, 1, 1], [1, 2], 4),
    ((3, 9, 9), (6, 1, 2, 2), [1, 1], [0, 0, 0, 0], [1, 1], 3),           # unbatched
]
UTILS = ("test_schema", "test_faketensor", "test_aot_dispatch_static")


def _grad_out_shape(xs, ws, stride, pad, dil):
    h = (xs[-2] + pad[0] + pad[1] - dil[0] * (ws[2] - 1) - 1) // stride[0] + 1
    w = (xs[-1] + pad[2] + pad[3] - dil[1] * (ws[3] - 1) - 1) // stride[1] + 1
    return (*xs[:-3], ws[0], h, w)


@pytest.mark.parametrize("config, layout", [(c, "contiguous") for c in CONFIGS]
                         + [(c, "channels_last") for c in CONFIGS if len(c[0]) == 4])
def test_opcheck(config, layout):
    xs, ws, stride, pad, dil, groups = config
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(_grad_out_shape(xs, ws, stride, pad, dil))
    args = [stride, pad, dil, groups, "auto"]
    for op, inputs in ((ops.conv2d, (x, w, b, *args)),
                       (ops.conv2d_grad_input, (g, w, list(xs), *args)),
                       (ops.conv2d_grad_weight, (x, g, list(ws), *args))):
        result = torch.library.opcheck(op, inputs, test_utils=UTILS)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


def test_operators_agree_with_torch():
    x, w, b = torch.randn(2, 3, 9, 8, dtype=torch.float64), torch.randn(
        4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    args = [[2, 1], [1, 1, 1, 1], [1, 1], 1, "auto"]
    y = ops.conv2d(x, w, b, *args)
    ref = torch.nn.functional.conv2d(x, w, b, stride=(2, 1), padding=1)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(ops.conv2d_grad_input(g, w, list(x.shape), *args),
                               torch.nn.grad.conv2d_input(x.shape, w, g, (2, 1), 1))
    torch.testing.assert_close(ops.conv2d_grad_weight(x, g, list(w.shape), *args),
                               torch.nn.grad.conv2d_weight(x, w.shape, g, (2, 1), 1))


def test_eager_calls_do_not_use_the_operators():
    x, w = torch.randn(1, 2, 5, 5), torch.nn.Parameter(torch.randn(3, 2, 3, 3))
    assert not ops.tracing(x, w, None)
    sub = type("Sub", (torch.Tensor,), {})
    assert ops.tracing(x.as_subclass(sub), w)          # fake and functional tensors are such
