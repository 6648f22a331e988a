"""torch's own kernels (F.conv2d, torch.nn.grad): a baseline for benchmarks, never "auto"."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supports(spec, dtype, device):
    if dtype.is_complex:
        return "torch's CPU gradient kernels (slow_conv2d_grad_input) have no complex version"
    return None


def forward(x, w, spec):
    return F.conv2d(x, w, None, spec.stride, 0, spec.dilation, spec.groups)


def grad_input(grad_out, w, spec, x_shape):
    return torch.nn.grad.conv2d_input(tuple(x_shape), w, grad_out, spec.stride, 0,
                                      spec.dilation, spec.groups)


def grad_weight(x, grad_out, spec, w_shape):
    return torch.nn.grad.conv2d_weight(x, tuple(w_shape), grad_out, spec.stride, 0,
                                       spec.dilation, spec.groups)


def cost(spec, dtype, device):
    return float("inf")
