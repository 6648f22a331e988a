"""Small helpers shared by the algorithm modules."""

from __future__ import annotations

import torch


def out_size(spec, hp: int, wp: int) -> tuple[int, int]:
    """Output (oH, oW) of a valid correlation of an (hp, wp) padded input."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    return ((hp - dh * (spec.kh - 1) - 1) // sh + 1, (wp - dw * (spec.kw - 1) - 1) // sw + 1)


def tap_slices(spec, i: int, j: int, oh: int, ow: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel tap (i, j) meets, for every output."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def no_cuda_reason(device) -> str | None:
    return None if torch.device(device).type == "cpu" else f"runs on the CPU only, not {device}"
