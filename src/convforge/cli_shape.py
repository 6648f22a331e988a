"""``convforge shape``: output shapes, receptive fields, parameters and FLOPs of a layer stack.

Layers are written ``kind:value,key=value,...``:

* ``conv:C_OUT[,k=K][,s=S][,p=P][,d=D][,g=G]`` (k 3, s 1, p 0, d 1, g 1 by default; each of
  k, s, p, d may be ``AxB`` for height x width (``AxBxC`` for depth x height x width in 3D);
  ``p=same`` pads to ``ceil(H / s)``);
* ``pool:K[,s=S][,p=P]`` (also ``maxpool`` / ``avgpool``; s defaults to K);
* ``flatten``; ``linear:N`` (also ``fc`` / ``dense``; flattens first).

``--input`` is ``CxHxW`` (2D), ``CxDxHxW`` (3D, volumes and video) or, with ``--ndim 1``,
``CxL`` (1D, audio and sequences).

FLOPs count multiplies and adds separately (:func:`convforge.conv_flops`), biases not
counted; a pooling layer counts one operation per window element.
"""

from __future__ import annotations

import math

from .shapes import conv_flops, output_size, receptive_field, same_padding

PRESETS = {
    # d2l's LeNet (sigmoid activations and average pooling do not change shapes)
    "lenet": ["conv:6,k=5,p=2", "pool:2,s=2", "conv:16,k=5", "pool:2,s=2", "flatten",
              "linear:120", "linear:84", "linear:10"],
}
_KINDS = {"conv": "conv", "pool": "pool", "maxpool": "pool", "avgpool": "pool",
          "flatten": "flatten", "linear": "linear", "fc": "linear", "dense": "linear"}


_AXES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def parse_axb(text: str, minimum: int, nd: int = 2):
    """``"3x5"`` -> ``(3, 5)``, ``"3"`` -> ``(3, 3)`` (``nd`` sizes: ``"3x5x5"`` in 3D);
    None if malformed or below minimum."""
    try:
        vals = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        return None
    if len(vals) == 1:
        vals = vals * nd
    return vals if len(vals) == nd and min(vals) >= minimum else None


def _sizes(spec, key, text, nd):
    vals = parse_axb(text, 0, nd)
    if vals is None:
        form = "x".join("ABC"[:nd])
        raise ValueError(f"shape: {key} must be an int or {form}, but got {text!r} in {spec!r}")
    return vals


def parse_layer(spec: str, nd: int = 2) -> dict:
    """``"conv:6,k=5,p=2"`` -> ``{"kind": "conv", "out": 6, "k": (5, 5), ...}`` (``nd``
    sizes per option).

    Example:
        >>> parse_layer("pool:2")["s"]
        (2, 2)
        >>> parse_layer("conv:8,k=3x5x5", nd=3)["k"]
        (3, 5, 5)
    """
    name, _, rest = spec.strip().lower().partition(":")
    if name not in _KINDS:
        raise ValueError(f"shape: layer kind must be one of {sorted(_KINDS)}, but got {spec!r}")
    kind = _KINDS[name]
    items = [i for i in rest.split(",") if i] if rest else []
    layer = {"kind": kind, "spec": spec, "k": (3,) * nd if kind == "conv" else None,
             "s": (1,) * nd, "p": (0,) * nd, "d": (1,) * nd, "g": 1, "out": None}
    allowed = {"conv": "ksdpg", "pool": "ksp", "linear": "", "flatten": ""}[kind]
    for n, item in enumerate(items):
        key, eq, val = item.partition("=")
        if not eq and n == 0:
            key, val = ("out", key) if kind in ("conv", "linear") else ("k", key)
        if key == "out":
            if not val.isdigit() or int(val) < 1:
                raise ValueError(f"shape: the output size must be a positive int, but got "
                                 f"{val!r} in {spec!r}")
            layer["out"] = int(val)
        elif key == "g" and key in allowed:
            if not val.isdigit():
                raise ValueError(f"shape: g must be a positive int, but got {val!r} in {spec!r}")
            layer["g"] = int(val)
        elif key == "p" and val == "same" and key in allowed:
            layer["p"] = "same"
        elif len(key) == 1 and key in allowed:
            layer[key] = _sizes(spec, key, val, nd)
        else:
            raise ValueError(f"shape: {name} accepts options {list(allowed) or 'none'} after its "
                             f"first value, but got {item!r} in {spec!r}")
    if kind == "pool":
        if layer["k"] is None:
            raise ValueError(f"shape: pool needs a window size (pool:2), but got {spec!r}")
        if "s=" not in spec.replace(" ", ""):
            layer["s"] = layer["k"]
    if kind in ("conv", "linear") and layer["out"] is None:
        raise ValueError(f"shape: {name} needs an output size ({name}:16), but got {spec!r}")
    if min(layer["s"]) < 1 or min(layer["d"]) < 1 or (layer["k"] and min(layer["k"]) < 1) \
            or layer["g"] < 1:
        raise ValueError(f"shape: k, s, d and g must be positive, but got {spec!r}")
    return layer


def _axis(n, k, s, p, d):
    """(output size, padding per side, the formula with its numbers)."""
    before, after = same_padding(n, k, s, d) if p == "same" else (p, p)
    pad = f"2*{before}" if before == after else f"{before} + {after}"
    out = output_size(n, k, s, (before, after), d)
    return out, f"floor(({n} + {pad} - {d}*({k}-1) - 1)/{s}) + 1 = {out}"


def describe(input_shape, layers, batch=1) -> list[str]:
    """The report's lines for ``input_shape = (C, *spatial)`` (1, 2 or 3 spatial sizes)
    and parsed ``layers``."""
    c, size = input_shape[0], list(input_shape[1:])
    nd = len(size)
    axes = _AXES[nd]
    flat = None                          # features after flatten, or None while spatial
    rf = [[] for _ in range(nd)]
    total_params = total_flops = 0
    wid = max([len(layer["spec"]) for layer in layers] + [5]) + 2
    lines = [f"input {'x'.join(map(str, (c, *size)))} (C x {' x '.join(axes)}), batch {batch}",
             f"{'#':>2}  {'layer':<{wid}}{'output':<16}{'receptive field':<24}{'params':>10}"
             f"{'FLOPs':>16}"]
    for i, layer in enumerate(layers, 1):
        kind, steps, params, flops = layer["kind"], [], 0, 0
        if kind in ("conv", "pool"):
            if flat is not None:
                raise ValueError(f"shape: {layer['spec']} cannot follow a flatten/linear layer")
            k, st, dl = layer["k"], layer["s"], layer["d"]
            pads = ("same",) * nd if layer["p"] == "same" else layer["p"]
            outs, formulas = zip(*(_axis(size[a], k[a], st[a], pads[a], dl[a])
                                   for a in range(nd)), strict=True)
            if min(outs) < 1:
                raise ValueError(f"shape: {layer['spec']} does not fit its "
                                 f"{'x'.join(map(str, size))} input")
            steps = [f"{axes[a]}: {formulas[a]}" if a == 0 or formulas[a] != formulas[a - 1]
                     else f"{axes[a]}: same" for a in range(nd)]
            if kind == "conv":
                g, co = layer["g"], layer["out"]
                if c % g or co % g:
                    raise ValueError(f"shape: channels {c} -> {co} must be divisible by groups "
                                     f"{g} in {layer['spec']}")
                params = co * (c // g) * math.prod(k) + co
                flops = conv_flops(batch, c, co, outs, k, g)["forward"]
                c = co
            else:
                flops = batch * c * math.prod(outs) * math.prod(k)
            size = list(outs)
            fields = []
            for a in range(nd):
                rf[a].append((k[a], st[a], dl[a]))
                fields.append(receptive_field(rf[a])[-1])
            field = (f"{'x'.join(str(f['rf']) for f in fields)} "
                     f"(jump {'x'.join(str(f['jump']) for f in fields)})")
            shape = "x".join(map(str, (c, *size)))
        else:
            features = flat if flat is not None else c * math.prod(size)
            if kind == "linear":
                params = features * layer["out"] + layer["out"]
                flops = 2 * batch * features * layer["out"]
                flat = layer["out"]
                steps = [f"{features} inputs x {layer['out']} outputs + {layer['out']} biases"]
            else:
                flat = features
                steps = ([f"{'*'.join(map(str, (c, *size)))} = {features}"]
                         if features == c * math.prod(size) else [])
            field, shape = "whole input", str(flat)
        total_params += params
        total_flops += flops
        lines.append(f"{i:>2}  {layer['spec']:<{wid}}{shape:<16}{field:<24}{params:>10,}"
                     f"{flops:>16,}")
        lines.extend(f"{'':>4}{s}" for s in steps)
    lines.append(f"total: {total_params:,} parameters, {total_flops:,} forward FLOPs "
                 f"(multiply and add counted separately; biases not counted; pooling: one "
                 f"operation per window element)")
    return lines


def _parse_input(text, ndim=None):
    """``CxHxW`` (or ``HxW``: one channel), ``CxDxHxW``, or ``CxL`` with ``ndim=1``."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if ndim is None:
        ndim = 3 if len(dims) == 4 else 2
    if ndim == 2 and len(dims) == 2:
        dims = (1,) + dims
    if len(dims) != ndim + 1 or min(dims) < 1:
        form = {1: "CxL", 2: "CxHxW or HxW", 3: "CxDxHxW"}[ndim]
        raise ValueError(f"shape: --input must be {form} for {ndim}D layers, but got {text!r}")
    return dims


def _cmd_shape(args) -> int:
    specs = list(PRESETS[args.preset]) if args.preset else []
    specs += args.layer or []
    if not specs:
        raise ValueError("shape: give layers with --layer or a --preset, but got none")
    if args.batch < 1:
        raise ValueError(f"shape: --batch must be positive, but got {args.batch}")
    default_input = "1x28x28" if args.preset == "lenet" else None
    if args.input is None and default_input is None:
        raise ValueError("shape: --input CxHxW is required without a preset")
    dims = _parse_input(args.input or default_input, args.ndim)
    nd = len(dims) - 1
    for line in describe(dims, [parse_layer(s, nd) for s in specs], args.batch):
        print(line)
    return 0


def add_shape_parser(sub, make):
    """Register the ``shape`` subcommand (``make`` is cli's parser factory)."""
    p = make(sub, "shape", "shapes, receptive fields, parameters and FLOPs of a layer stack",
             __doc__.split("\n", 2)[2].strip(),
             ["convforge shape --preset lenet",
              "convforge shape --input 1x28x28 --layer conv:6,k=5,p=2 --layer pool:2,s=2 "
              "--layer conv:16,k=5 --layer pool:2,s=2",
              "convforge shape --input 3x224x224 --layer conv:64,k=7,s=2,p=3 --layer pool:3,"
              "s=2,p=1",
              "convforge shape --input 3x32x32 --layer conv:32,k=3,p=same,s=2,g=1",
              "convforge shape --input 1x16x112x112 --layer conv:64,k=3x7x7,s=1x2x2,p=same",
              "convforge shape --ndim 1 --input 1x16000 --layer conv:32,k=255,p=same"])
    p.add_argument("--input", metavar="CxHxW", help="input size (default 1x28x28 for lenet)")
    p.add_argument("--layer", action="append", metavar="SPEC", help="a layer (repeatable)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a known network, before --layer")
    p.add_argument("--batch", type=int, default=1, help="batch size for FLOPs (default 1)")
    p.add_argument("--ndim", type=int, choices=(1, 2, 3), default=None,
                   help="spatial axes (default: 3 for a CxDxHxW --input, else 2)")
    p.set_defaults(func=_cmd_shape)
