"""Bounded memory: the workspace limit, and tiling every pass of every algorithm under it.

The *workspace* of a call is what it allocates besides its result, as cuDNN means it
(columns, FFT spectra, layout copies, a tile's output before it is copied into place).
Every algorithm declares it, per pass, for the spec it is handed
(``workspace_bytes(spec, dtype, pass_)`` in its module: an upper bound from the sizes of
its buffers, checked against the peak RSS by ``benchmarks/memory.py``).

The limit is ``convforge.set_workspace_limit(bytes)``, else the environment variable
``CONVFORGE_WORKSPACE_LIMIT`` (bytes, or with a ``K``/``M``/``G`` suffix), else 1 GiB or a
quarter of the memory available when convforge first needs it, whichever is smaller.

A pass whose workspace is over the limit is *tiled* here, for any algorithm: first over
the batch, then, one sample at a time, over output channels (whole groups of a grouped
convolution) and bands of output rows, the fewest tiles that fit. A band of output rows
``[r0, r1)`` reads the rows ``[r0 sH, (r1 - 1) sH + (kH - 1) dH + 1)`` of the padded
input; the band's own spec keeps the zero padding that falls inside it (top rows for the
first band, bottom rows for the last), so algorithms that fuse zero padding are handed
unpadded rows, and for the others the band (not the whole input) is padded here. The
forward pass writes each tile into the output, the input gradient adds each band's
gradient into its rows (bands overlap by ``(kH - 1) dH`` input rows), the weight gradient
sums the tiles' gradients; output channel tiles take their slice of the weight (the input
gradient adds theirs up). Each tile is sized so that its workspace plus its own result
stays within the limit; a pass whose smallest tile (one sample, one output channel or
group, one output row) cannot raises :class:`WorkspaceLimitError` before anything is
allocated.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

import torch.nn.functional as F

__all__ = ["WorkspaceLimitError", "get_workspace_limit", "set_workspace_limit"]

_ENV = "CONVFORGE_WORKSPACE_LIMIT"
_DEFAULT_CAP = 1 << 30
_STATE = {"limit": None, "default": None}
try:                # os.environ's own table: one dictionary lookup (read on every call)
    _ENV_TABLE, _ENV_KEY = os.environ._data, os.environ.encodekey(_ENV)
except AttributeError:
    _ENV_TABLE, _ENV_KEY = os.environ, _ENV
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


class WorkspaceLimitError(MemoryError):
    """A pass needs more workspace than the limit allows, even in its smallest tile."""


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _parse(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{_ENV} must be a number of bytes, optionally with a K, M or G "
                         f"suffix (e.g. 512M), but got {value!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def _address_space_left() -> int | None:
    """Bytes of address space left under a finite ``RLIMIT_AS`` (``prlimit --as``, ``ulimit
    -v``): the cap minus the process's virtual size. None without a cap."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("VmSize:"))
        return max(0, soft - size)
    except (ImportError, OSError, ValueError, StopIteration):
        return None


def default_limit() -> int:
    """1 GiB or a quarter of the available memory (measured once), whichever is smaller;
    under an address-space cap, "available" is also at most half the address space left."""
    if _STATE["default"] is None:
        avail = _available_bytes()
        left = _address_space_left()
        if left is not None:         # half of it: threads and results need the rest
            avail = left // 2 if avail is None else min(avail, left // 2)
        _STATE["default"] = _DEFAULT_CAP if avail is None else min(_DEFAULT_CAP, avail // 4)
    return _STATE["default"]


def get_workspace_limit() -> int:
    """The most workspace (bytes) one convolution call may allocate besides its result.

    Example:
        >>> import convforge
        >>> convforge.get_workspace_limit() > 0
        True
    """
    if _STATE["limit"] is not None:
        return _STATE["limit"]
    env = _ENV_TABLE.get(_ENV_KEY)
    if not env:
        return default_limit()
    if env != _STATE.get("env"):
        _STATE["env"], _STATE["env_value"] = env, _parse(os.fsdecode(env))
    return _STATE["env_value"]


def set_workspace_limit(limit) -> None:
    """Set the workspace limit in bytes (an int, or a string such as ``"512M"``); None
    restores the default (``CONVFORGE_WORKSPACE_LIMIT``, else min(1 GiB, 1/4 of the
    available memory)). Passes over the limit are tiled; one that cannot fit even its
    smallest tile raises :class:`WorkspaceLimitError` (a ``MemoryError``).

    Example:
        >>> import convforge
        >>> convforge.set_workspace_limit("64M")
        >>> convforge.get_workspace_limit()
        67108864
        >>> convforge.set_workspace_limit(None)
    """
    if limit is None:
        _STATE["limit"] = None
        return
    if isinstance(limit, str):
        value = _parse(limit)
    elif isinstance(limit, int) and not isinstance(limit, bool):
        value = limit
    else:
        raise TypeError(f"set_workspace_limit: limit must be an int (bytes), a string such "
                        f"as '512M', or None, but got {limit!r}")
    if value < 0:
        raise ValueError(f"set_workspace_limit: limit must be >= 0 bytes, but got {value}")
    _STATE["limit"] = value


# --------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------

def _fused(algo) -> bool:
    return algo.fused_zero_padding


def _own_bytes(algo, spec, dtype, pass_) -> int:
    """The pass's workspace as ``algo`` runs it on ``spec``, plus a zero-padded copy of the
    input (or the gradient's rows) when the algorithm does not pad zeros itself."""
    if spec.is_padded and not _fused(algo):
        b = dtype.itemsize
        copy = spec.n * spec.c_in * spec.padded_h * spec.padded_w * b
        if pass_ == "grad_input":               # the padded gradient, then cropped
            copy = 2 * copy
        return copy + algo.workspace(spec.after_padding(), dtype, pass_)
    return algo.workspace(spec, dtype, pass_)


def _result_bytes(spec, dtype, pass_) -> int:
    b = dtype.itemsize
    if pass_ == "forward":
        return spec.n * spec.c_out * spec.out_h * spec.out_w * b
    if pass_ == "grad_input":
        return spec.n * spec.c_in * spec.h * spec.w * b
    return spec.c_out * (spec.c_in // spec.groups) * spec.kh * spec.kw * b


def _band_rows(spec, r0, r1):
    """Padded input rows [a, b) that output rows [r0, r1) read."""
    (sh, _), (dh, _) = spec.stride, spec.dilation
    return r0 * sh, (r1 - 1) * sh + (spec.kh - 1) * dh + 1


def units(spec) -> int:
    """How the output channels split: single output channels of an ungrouped convolution
    (each reads every input channel), else whole groups."""
    return spec.c_out if spec.groups == 1 else spec.groups


def _unit_spec(spec, u):
    if spec.groups == 1:
        return replace(spec, c_out=u)
    cg, og = spec.c_in // spec.groups, spec.c_out // spec.groups
    return replace(spec, groups=u, c_in=u * cg, c_out=u * og)


def _channels(spec, u0, u1):
    """(input channels, output channels) of units [u0, u1)."""
    if spec.groups == 1:
        return slice(None), slice(u0, u1)
    cg, og = spec.c_in // spec.groups, spec.c_out // spec.groups
    return slice(u0 * cg, u1 * cg), slice(u0 * og, u1 * og)


def band(spec, n, r0, r1):
    """(sub-spec, first source row, source rows) of ``n`` samples and output rows
    [r0, r1): the band keeps the zero padding that falls inside it."""
    if r0 == 0 and r1 >= spec.out_h:
        return replace(spec, n=n), 0, spec.h
    top, _, left, right = spec.padding
    a, b = _band_rows(spec, r0, r1)
    s0, s1 = max(0, a - top), min(spec.h, b - top)
    rows = max(0, s1 - s0)
    pt, pb = max(0, top - a), max(0, (b - top) - spec.h)
    if rows == 0:                        # the band lies in the padding: all of it
        pt, pb = b - a, 0
    return replace(spec, n=n, h=rows, padding=(pt, pb, left, right)), s0, rows


def tile_bytes(algo, spec, dtype, pass_, n, u, rows) -> int:
    """Workspace of one tile (``n`` samples, ``u`` channel units, the first ``rows`` output
    rows) plus the tile's own result, which is copied (or added) into place."""
    sub = band(_unit_spec(spec, u), n, 0, rows)[0]
    return _own_bytes(algo, sub, dtype, pass_) + _result_bytes(sub, dtype, pass_)


_TILINGS: dict = {}


def tiling(algo, spec, dtype, pass_, limit):
    """``(samples, channel units, output rows)`` per tile (:func:`units`): the whole
    ``(spec.n, units(spec), spec.out_h)`` when the pass fits; None when not even one
    sample's one unit's one output row fits."""
    key = (algo.name, spec, dtype, pass_, limit)
    plan = _TILINGS.get(key, False)
    if plan is False:
        if len(_TILINGS) > 4096:
            _TILINGS.clear()
        plan = _TILINGS[key] = _tiling(algo, spec, dtype, pass_, limit)
    return plan


def _most(lo, hi, ok):
    """The largest v in [lo, hi] with ok(v) (ok monotone, ok(lo) true)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tiling(algo, spec, dtype, pass_, limit):
    total, oh = units(spec), spec.out_h
    whole = (spec.n, total, oh)
    if _own_bytes(algo, spec, dtype, pass_) <= limit or spec.n == 0 or oh == 0:
        return whole

    def fits(n, u, r):
        return tile_bytes(algo, spec, dtype, pass_, n, u, r) <= limit

    if fits(1, total, oh):                       # whole samples: the most per tile
        return _most(1, spec.n, lambda n: fits(n, total, oh)), total, oh
    # one sample: the fewest tiles over channel units x bands of output rows
    best, u = None, total
    while True:
        if fits(1, u, 1):
            r = _most(1, oh, lambda r, u=u: fits(1, u, r))
            count = -(-total // u) * -(-oh // r)
            if best is None or count < best[0]:
                best = (count, (1, u, r))
            if r == oh:
                break                            # fewer units cannot mean fewer tiles
        if u == 1:
            break
        u = (u + 1) // 2
    return None if best is None else best[1]


def untiled(algo, spec, dtype, passes) -> bool:
    """Whether every pass of ``passes`` runs whole (no tiles) within the limit."""
    limit = get_workspace_limit()
    return all(_own_bytes(algo, spec, dtype, p) <= limit for p in passes)


def pad_first_fits(passes, spec, dtype, names) -> bool:
    """Whether a zero-padded copy of the whole input plus each pass's untiled workspace
    fits the limit (else the passes pad their own tiles)."""
    limit = get_workspace_limit()
    b = dtype.itemsize
    copy = spec.n * spec.c_in * spec.padded_h * spec.padded_w * b
    full = spec.after_padding()
    return all(copy + getattr(passes, p).workspace(full, dtype, p) <= limit for p in names)


def seen_spec(spec):
    """The spec a pass is tiled on: zero padding stays in it (the tiler pads per tile for
    algorithms that do not fuse it); other modes are padded before."""
    return spec if spec.padding_mode == "zeros" else spec.after_padding()


def minimum_bytes(algo, spec, dtype, pass_) -> int:
    """The workspace of the smallest tile (one sample, one channel unit, one output row)
    and its result."""
    if spec.n == 0 or spec.out_h == 0:
        return 0
    return tile_bytes(algo, spec, dtype, pass_, 1, 1, 1)


def fits(algo, spec, dtype, passes, limit=None) -> bool:
    """Whether every pass of ``passes`` can run within the limit (tiled if need be)."""
    limit = get_workspace_limit() if limit is None else limit
    return all(tiling(algo, spec, dtype, p, limit) is not None for p in passes)


def check(func, algo, spec, dtype, passes) -> None:
    """Raise :class:`WorkspaceLimitError` when a pass cannot fit the limit, naming the
    algorithm, the bytes its smallest tile needs and the bytes allowed."""
    limit = get_workspace_limit()
    for p in passes:
        if tiling(algo, spec, dtype, p, limit) is None:
            need = minimum_bytes(algo, spec, dtype, p)
            raise WorkspaceLimitError(
                f"{func}: algorithm {algo.name!r} needs at least {need} bytes of workspace "
                f"for its {p} pass (its smallest tile: one output row of one sample and "
                f"one output channel or group; "
                f"{_own_bytes(algo, spec, dtype, p)} bytes untiled), but the workspace "
                f"limit is {limit} bytes (convforge.set_workspace_limit or "
                f"{_ENV})")


def _plan(algo, spec, dtype, pass_):
    limit = get_workspace_limit()
    plan = tiling(algo, spec, dtype, pass_, limit)
    if plan is None:
        check(f"conv2d ({pass_})", algo, spec, dtype, (pass_,))
    return plan


# --------------------------------------------------------------------------------------
# the three passes, tiled
# --------------------------------------------------------------------------------------

def _call_forward(algo, x, w, spec, bias):
    """One untiled forward pass; pads zeros here when the algorithm does not."""
    if spec.is_padded and not _fused(algo):
        top, bottom, left, right = spec.padding
        x, spec = F.pad(x, (left, right, top, bottom)), spec.after_padding()
    if bias is not None and algo.fused_bias:
        return algo.forward(x, w, spec, bias)
    out = algo.forward(x, w, spec)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def _call_grad_input(algo, g, w, spec, x_shape):
    if spec.is_padded and not _fused(algo):
        top, _, left, _ = spec.padding
        full = spec.after_padding()
        gx = algo.grad_input(g, w, full, (spec.n, spec.c_in, full.h, full.w))
        return gx[..., top:top + spec.h, left:left + spec.w]
    return algo.grad_input(g, w, spec, tuple(x_shape))


def _call_grad_weight(algo, x, g, spec, w_shape):
    if spec.is_padded and not _fused(algo):
        top, bottom, left, right = spec.padding
        x, spec = F.pad(x, (left, right, top, bottom)), spec.after_padding()
    return algo.grad_weight(x, g, spec, tuple(w_shape))


def _tiles(spec, plan):
    """(samples, units, output rows) ranges of every tile of ``plan``."""
    nb, ub, rb = plan
    total = units(spec)
    for n0 in range(0, spec.n, nb):
        for u0 in range(0, total, ub):
            for r0 in range(0, spec.out_h, rb):
                yield ((n0, min(spec.n, n0 + nb)), (u0, min(total, u0 + ub)),
                       (r0, min(spec.out_h, r0 + rb)))


def _tile(spec, ns, us, rs):
    """(sub-spec, samples, input channels, output channels, first source row, rows)."""
    sub, s0, nrows = band(_unit_spec(spec, us[1] - us[0]), ns[1] - ns[0], *rs)
    ci, co = _channels(spec, *us)
    return sub, slice(*ns), ci, co, s0, nrows


def _whole(spec, plan) -> bool:
    return plan == (spec.n, units(spec), spec.out_h)


def forward(algo, x, w, spec, bias=None):
    """F(x, w) (+ bias) by ``algo``, tiled under the workspace limit."""
    plan = _plan(algo, spec, x.dtype, "forward")
    if _whole(spec, plan):
        return _call_forward(algo, x, w, spec, bias)
    out = x.new_empty(spec.output_shape)
    for ns, us, rs in _tiles(spec, plan):
        sub, n, ci, co, s0, nrows = _tile(spec, ns, us, rs)
        dst = out[n, co, rs[0]:rs[1]]
        b = None if bias is None else bias[co]
        if nrows == 0:                             # outputs that read only padding
            dst.zero_()
            if b is not None:
                dst.add_(b.view(1, -1, 1, 1))
            continue
        dst.copy_(_call_forward(algo, x[n, ci].narrow(2, s0, nrows), w[co], sub, b))
    return out


def grad_input(algo, g, w, spec, x_shape):
    """Gi(g, w) by ``algo``, tiled under the workspace limit (bands of overlapping rows
    and the output channels of one group add up)."""
    plan = _plan(algo, spec, g.dtype, "grad_input")
    if _whole(spec, plan):
        return _call_grad_input(algo, g, w, spec, x_shape)
    gx = g.new_zeros(tuple(x_shape))
    for ns, us, rs in _tiles(spec, plan):
        sub, n, ci, co, s0, nrows = _tile(spec, ns, us, rs)
        if nrows == 0:
            continue
        part = _call_grad_input(algo, g[n, co, rs[0]:rs[1]], w[co], sub,
                                (sub.n, sub.c_in, nrows, spec.w))
        gx[n, ci, s0:s0 + nrows] += part
    return gx


def grad_weight(algo, x, g, spec, w_shape):
    """Gw(x, g) by ``algo``, tiled under the workspace limit (tiles' gradients summed)."""
    plan = _plan(algo, spec, x.dtype, "grad_weight")
    if _whole(spec, plan):
        return _call_grad_weight(algo, x, g, spec, w_shape)
    gw = x.new_zeros(tuple(w_shape))
    for ns, us, rs in _tiles(spec, plan):
        sub, n, ci, co, s0, nrows = _tile(spec, ns, us, rs)
        if nrows == 0:
            continue
        part = _call_grad_weight(algo, x[n, ci].narrow(2, s0, nrows), g[n, co, rs[0]:rs[1]],
                                 sub, (sub.c_out,) + tuple(w_shape[1:]))
        gw[co] += part
    return gw
