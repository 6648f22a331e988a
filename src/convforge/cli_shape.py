"""``convforge shape``: output shapes, receptive fields, parameters and FLOPs of a layer stack.

Layers are written ``kind:value,key=value,...``:

* ``conv:C_OUT[,k=K][,s=S][,p=P][,d=D][,g=G]`` (k 3, s 1, p 0, d 1, g 1 by default; each of
  k, s, p, d may be ``AxB`` for height x width; ``p=same`` pads to ``ceil(H / s)``);
* ``pool:K[,s=S][,p=P]`` (also ``maxpool`` / ``avgpool``; s defaults to K);
* ``flatten``; ``linear:N`` (also ``fc`` / ``dense``; flattens first).

FLOPs count multiplies and adds separately (:func:`convforge.conv_flops`), biases not
counted; a pooling layer counts one operation per window element.
"""

from __future__ import annotations

from .shapes import conv_flops, output_size, receptive_field, same_padding

PRESETS = {
    # d2l's LeNet (sigmoid activations and average pooling do not change shapes)
    "lenet": ["conv:6,k=5,p=2", "pool:2,s=2", "conv:16,k=5", "pool:2,s=2", "flatten",
              "linear:120", "linear:84", "linear:10"],
}
_KINDS = {"conv": "conv", "pool": "pool", "maxpool": "pool", "avgpool": "pool",
          "flatten": "flatten", "linear": "linear", "fc": "linear", "dense": "linear"}


def parse_axb(text: str, minimum: int):
    """``"3x5"`` -> ``(3, 5)``, ``"3"`` -> ``(3, 3)``; None if malformed or below minimum."""
    try:
        vals = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        return None
    if len(vals) == 1:
        vals = vals * 2
    return vals if len(vals) == 2 and min(vals) >= minimum else None


def _pair(spec, key, text):
    vals = parse_axb(text, 0)
    if vals is None:
        raise ValueError(f"shape: {key} must be an int or AxB, but got {text!r} in {spec!r}")
    return vals


def parse_layer(spec: str) -> dict:
    """``"conv:6,k=5,p=2"`` -> ``{"kind": "conv", "out": 6, "k": (5, 5), ...}``.

    Example:
        >>> parse_layer("pool:2")["s"]
        (2, 2)
    """
    name, _, rest = spec.strip().lower().partition(":")
    if name not in _KINDS:
        raise ValueError(f"shape: layer kind must be one of {sorted(_KINDS)}, but got {spec!r}")
    kind = _KINDS[name]
    items = [i for i in rest.split(",") if i] if rest else []
    layer = {"kind": kind, "spec": spec, "k": (3, 3) if kind == "conv" else None,
             "s": (1, 1), "p": (0, 0), "d": (1, 1), "g": 1, "out": None}
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
            layer[key] = _pair(spec, key, val)
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
    """The report's lines for ``input_shape = (C, H, W)`` and parsed ``layers``."""
    c, h, w = input_shape
    flat = None                          # features after flatten, or None while spatial
    rf_h, rf_w = [], []
    total_params = total_flops = 0
    wid = max([len(layer["spec"]) for layer in layers] + [5]) + 2
    lines = [f"input {c}x{h}x{w} (C x H x W), batch {batch}",
             f"{'#':>2}  {'layer':<{wid}}{'output':<14}{'receptive field':<20}{'params':>10}"
             f"{'FLOPs':>16}"]
    for i, layer in enumerate(layers, 1):
        kind, steps, params, flops = layer["kind"], [], 0, 0
        if kind in ("conv", "pool"):
            if flat is not None:
                raise ValueError(f"shape: {layer['spec']} cannot follow a flatten/linear layer")
            (kh, kw), (sh, sw), (dh, dw) = layer["k"], layer["s"], layer["d"]
            ph, pw = ("same", "same") if layer["p"] == "same" else layer["p"]
            oh, fh = _axis(h, kh, sh, ph, dh)
            ow, fw = _axis(w, kw, sw, pw, dw)
            if oh < 1 or ow < 1:
                raise ValueError(f"shape: {layer['spec']} does not fit its {h}x{w} input")
            steps = [f"H: {fh}", f"W: {fw}" if fw != fh else "W: same"]
            if kind == "conv":
                g, co = layer["g"], layer["out"]
                if c % g or co % g:
                    raise ValueError(f"shape: channels {c} -> {co} must be divisible by groups "
                                     f"{g} in {layer['spec']}")
                params = co * (c // g) * kh * kw + co
                flops = conv_flops(batch, c, co, (oh, ow), (kh, kw), g)["forward"]
                c = co
            else:
                flops = batch * c * oh * ow * kh * kw
            h, w = oh, ow
            rf_h.append((kh, sh, dh))
            rf_w.append((kw, sw, dw))
            rh, rw = receptive_field(rf_h)[-1], receptive_field(rf_w)[-1]
            field = f"{rh['rf']}x{rw['rf']} (jump {rh['jump']}x{rw['jump']})"
            shape = f"{c}x{h}x{w}"
        else:
            features = flat if flat is not None else c * h * w
            if kind == "linear":
                params = features * layer["out"] + layer["out"]
                flops = 2 * batch * features * layer["out"]
                flat = layer["out"]
                steps = [f"{features} inputs x {layer['out']} outputs + {layer['out']} biases"]
            else:
                flat = features
                steps = [f"{c}*{h}*{w} = {features}"] if features == c * h * w else []
            field, shape = "whole input", str(flat)
        total_params += params
        total_flops += flops
        lines.append(f"{i:>2}  {layer['spec']:<{wid}}{shape:<14}{field:<20}{params:>10,}"
                     f"{flops:>16,}")
        lines.extend(f"{'':>4}{s}" for s in steps)
    lines.append(f"total: {total_params:,} parameters, {total_flops:,} forward FLOPs "
                 f"(multiply and add counted separately; biases not counted; pooling: one "
                 f"operation per window element)")
    return lines


def _parse_input(text):
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    dims = (1,) + dims if len(dims) == 2 else dims
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape: --input must be CxHxW or HxW, but got {text!r}")
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
    dims = _parse_input(args.input or default_input)
    for line in describe(dims, [parse_layer(s) for s in specs], args.batch):
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
              "convforge shape --input 3x32x32 --layer conv:32,k=3,p=same,s=2,g=1"])
    p.add_argument("--input", metavar="CxHxW", help="input size (default 1x28x28 for lenet)")
    p.add_argument("--layer", action="append", metavar="SPEC", help="a layer (repeatable)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a known network, before --layer")
    p.add_argument("--batch", type=int, default=1, help="batch size for FLOPs (default 1)")
    p.set_defaults(func=_cmd_shape)
