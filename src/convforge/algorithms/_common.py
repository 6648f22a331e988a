"""Small helpers shared by the algorithm modules."""

from __future__ import annotations

import importlib

import torch


class LazyModule:
    """A module imported on first attribute access: the compiled-kernel modules load Numba
    (about 110 MiB of memory and 170 MiB of address space), which a process that never
    runs a compiled algorithm does not need."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name
        self.__dict__["_module"] = None

    def _load(self):
        module = self.__dict__["_module"]
        if module is None:
            module = importlib.import_module(self.__dict__["_name"])
            self.__dict__["_module"] = module
        return module

    def __getattr__(self, attr):
        return getattr(self._load(), attr)

    def __setattr__(self, attr, value):                 # monkeypatching reaches the module
        setattr(self._load(), attr, value)


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


def counts(spec) -> tuple[int, int, int, int]:
    """Elements of (the input as handed over, that input padded, the output, the weight)."""
    inp = spec.n * spec.c_in * spec.h * spec.w
    padded = spec.n * spec.c_in * spec.padded_h * spec.padded_w
    out = spec.n * spec.c_out * spec.out_h * spec.out_w
    weight = spec.c_out * (spec.c_in // spec.groups) * spec.kh * spec.kw
    return inp, padded, out, weight


def cols_chunk(n: int, per_sample: int, chunk_bytes: int) -> int:
    """Bytes of the largest batch chunk of a loop that takes as many samples as fit in
    ``chunk_bytes`` (at least one) with ``per_sample`` bytes each."""
    return max(1, min(n, chunk_bytes // max(1, per_sample))) * per_sample
