"""``convforge.nn.convert`` / ``revert``: a model's torch convolutions to convforge's and back.

Conversion changes each layer's class in place (``module.__class__``), so the layer *is*
the same object afterwards: the same parameter tensors (an optimizer built before still
updates them), buffers, hooks, attributes and place in every parent (a layer shared by two
parents stays shared). torch's layers and convforge's store the same attributes; convert
adds ``algorithm``, ``measure`` and the layer's plan cache, revert removes them.
"""

from __future__ import annotations

from torch import nn as tnn

from . import nn as cnn
from .algorithms import REGISTRY

_TORCH = {cnn.Conv1d: tnn.Conv1d, cnn.Conv2d: tnn.Conv2d, cnn.Conv3d: tnn.Conv3d,
          cnn.ConvTranspose1d: tnn.ConvTranspose1d, cnn.ConvTranspose2d: tnn.ConvTranspose2d,
          cnn.ConvTranspose3d: tnn.ConvTranspose3d}
_OURS = {v: k for k, v in _TORCH.items()}
_TORCH_MODES = frozenset({"zeros", "reflect", "replicate", "circular"})


def convert(module, *, algorithm="auto", measure=None):
    """Replace, in place and recursively, every ``torch.nn.Conv1d``, ``Conv2d``,
    ``Conv3d`` and ``ConvTranspose1d/2d/3d`` of ``module`` (itself included) by convforge's layer.

    Each converted layer keeps its parameter tensors, buffers, hooks and attributes, so
    an optimizer or a ``state_dict`` made before the call keeps working; subclasses of
    torch's layers (which may compute something else) and layers that already are
    convforge's are left as they are.

    Args:
        module: a ``torch.nn.Module``.
        algorithm: ``"auto"`` or a name from :func:`convforge.algorithms`, for every
            converted layer.
        measure: the converted layers' ``measure`` (see :class:`convforge.nn.Conv2d`).

    Returns:
        ``module``, converted (like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``).

    Example:
        >>> model = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU())
        >>> convert(model)[0]
        Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
        >>> type(model[0]).__module__
        'convforge.nn'
    """
    if not isinstance(module, tnn.Module):
        raise TypeError(f"convert: module must be a torch.nn.Module, but got "
                        f"{type(module).__name__}")
    if algorithm != "auto" and algorithm not in REGISTRY:
        raise ValueError(f"convert: algorithm must be 'auto' or one of {sorted(REGISTRY)}, "
                         f"but got {algorithm!r}")
    for layer in list(module.modules()):            # each shared layer once
        target = _OURS.get(type(layer))
        if target is None:
            continue
        layer.__class__ = target
        layer.algorithm = algorithm
        layer.measure = measure
    return module


def _torch_padding(layer):
    """The layer's padding as torch's layer stores it, or the reason torch has none."""
    padding, stride = layer.padding, layer.stride
    if layer.padding_mode not in _TORCH_MODES:
        return None, f"padding_mode {layer.padding_mode!r} (torch has {sorted(_TORCH_MODES)})"
    if isinstance(padding, str):
        if padding == "same" and any(s != 1 for s in stride):
            return None, f"padding='same' with stride {stride} (torch: stride 1 only)"
        return padding, None
    if all(isinstance(p, tuple) for p in padding):            # per side: symmetric only
        if any(a != b for a, b in padding):
            return None, f"per-side padding {padding} (torch pads both sides alike)"
        return tuple(a for a, _ in padding), None
    if len(padding) == 2 and len(layer.kernel_size) == 1:     # Conv1d's (left, right)
        if padding[0] != padding[1]:
            return None, f"padding (left, right) = {padding} (torch pads both sides alike)"
        return (padding[0],), None
    return tuple(padding), None


def _reversed_padding_twice(layer, padding):
    """torch's ``_reversed_padding_repeated_twice``: F.pad's (last dim first) padding."""
    pads = []
    for axis in reversed(range(len(layer.kernel_size))):
        if padding == "valid":
            before = after = 0
        elif padding == "same":
            total = layer.dilation[axis] * (layer.kernel_size[axis] - 1)
            before, after = total // 2, total - total // 2
        else:
            before = after = padding[axis]
        pads += [before, after]
    return pads


def revert(module):
    """Turn every convforge ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` of ``module``
    back into torch's layer, in place (the inverse of :func:`convert`).

    Raises:
        ValueError: a layer uses something torch's layer cannot express (strided
            ``"same"``, unequal per-side padding, ``padding_mode="symmetric"``); nothing
            is changed then.

    Example:
        >>> model = convert(tnn.Sequential(tnn.Conv2d(3, 8, 3)))
        >>> type(revert(model)[0]) is tnn.Conv2d
        True
    """
    if not isinstance(module, tnn.Module):
        raise TypeError(f"revert: module must be a torch.nn.Module, but got "
                        f"{type(module).__name__}")
    layers = [(name, layer, *_torch_padding(layer)) for name, layer in module.named_modules()
              if type(layer) in _TORCH]
    for name, layer, _, reason in layers:
        if reason is not None:
            raise ValueError(f"revert: layer {name or '(the module itself)'} ({layer!r}) has "
                             f"no torch equivalent: {reason}")
    for _, layer, padding, _ in layers:
        layer.__class__ = _TORCH[type(layer)]
        for attr in ("algorithm", "measure", "_plans"):
            layer.__dict__.pop(attr, None)
        layer.padding = padding
        layer._reversed_padding_repeated_twice = _reversed_padding_twice(layer, padding)
    return module
