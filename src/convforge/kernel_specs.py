"""Spec strings for the kernel zoo: ``name[-variant][:arg,key=value,...]``.

The table maps each name to its factory in :mod:`convforge.kernels`, the keyword its
``-variant`` sets, the variants allowed, and the parameters positional options fill.
:func:`convforge.kernels.get` and :func:`convforge.kernels.names` are the public face.
"""

from __future__ import annotations

import re

from . import kernels as K

# name -> (factory, variant keyword or None, variants, positional parameter names)
_REGISTRY = {
    "sobel": (K.sobel, "direction", K._DIRECTIONS, ("size",)),
    "scharr": (K.scharr, "direction", K._DIRECTIONS, ()),
    "prewitt": (K.prewitt, "direction", K._DIRECTIONS, ()),
    "edge": (K.book_edge, "axis", K._AXES, ()),
    "book_edge": (K.book_edge, "axis", K._AXES, ()),
    "diagonal_edge": (K.diagonal_edge, "direction", ("diagonal", "antidiagonal"), ()),
    "finite_difference": (K.finite_difference, "axis", K._AXES, ("order",)),
    "laplacian": (K.laplacian, None, (), ("neighbours",)),
    "log": (K.log, None, (), ("size",)),
    "gaussian": (K.gaussian, None, (), ("size",)),
    "box": (K.box, None, (), ("size",)),
    "sharpen": (K.sharpen, None, (), ("amount",)),
    "emboss": (K.emboss, None, (), ()),
    "integral": (K.integral, "axis", ("x", "y", "both"), ("size",)),
    "identity": (K.identity, None, (), ("size",)),
}
_SPEC_RE = re.compile(r"^(?P<name>[a-z_]+)(?:-(?P<variant>[a-z]+))?(?::(?P<args>.*))?$")


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if not re.fullmatch(r"[a-z_]+", text):
        raise ValueError(text)
    return text


def build(spec: str, *, dtype=None, device=None):
    """:func:`convforge.kernels.get`'s work: parse ``spec`` and call the factory."""
    if not isinstance(spec, str):
        raise TypeError(f"kernels.get: spec must be a string, but got {type(spec).__name__}")
    m = _SPEC_RE.match(spec.strip().lower().replace(" ", ""))
    if not m or m["name"].replace("-", "_") not in _REGISTRY:
        raise ValueError(f"kernels.get: spec must be name[-variant][:options] with a name from "
                         f"{sorted(_REGISTRY)}, but got {spec!r}")
    factory, variant_kw, variants, positional = _REGISTRY[m["name"]]
    kwargs = {}
    if m["variant"] is not None:
        if m["variant"] not in variants:
            raise ValueError(f"kernels.get: {m['name']} variants are {list(variants)}, "
                             f"but got {spec!r}")
        kwargs[variant_kw] = m["variant"]
    if m["args"] is not None:
        pos = list(positional)
        for item in m["args"].split(","):
            key, eq, text = item.partition("=")
            if not eq:
                key, text = (pos.pop(0) if pos else None), item
            if key is None or not key or not text:
                raise ValueError(f"kernels.get: options must be values or key=value pairs "
                                 f"({', '.join(positional) or 'none'} positional), "
                                 f"but got {spec!r}")
            try:
                kwargs[key] = _value(text)
            except ValueError:
                raise ValueError(f"kernels.get: option {key} must be a number or a word, "
                                 f"but got {text!r} in {spec!r}") from None
    try:
        return factory(**kwargs, dtype=dtype, device=device)
    except TypeError as exc:
        raise ValueError(f"kernels.get: bad options for {m['name']} in {spec!r}: {exc}") from None


def spec_names() -> list[str]:
    """Every base spec: each name, and each ``name-variant``.

    Example:
        >>> "laplacian" in spec_names()
        True
    """
    out = []
    for name, (_, _, variants, _) in _REGISTRY.items():
        out.append(name)
        out.extend(f"{name}-{v}" for v in variants)
    return sorted(out)
