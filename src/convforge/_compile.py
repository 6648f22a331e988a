"""Compiled kernels without a pause: which are ready, warming them in the background,
and :func:`warmup`.

``direct``, ``depthwise``, ``winograd`` and ``im2col``'s col2im are Numba loops, compiled
on their first call for each dtype (and cached on disk by Numba: in the package
directory, or in a per-user cache directory when that is read-only, or in
``NUMBA_CACHE_DIR``). A first call costs up to ~25 s of compilation with an empty cache
and about a second of loading with a full one. So that no call of ``algorithm="auto"``
waits for that:

* an algorithm is *ready* for a dtype once this process has run its kernels for that
  dtype through :func:`warmup`'s configurations (every code path of every pass);
* "auto" plans only with ready algorithms (torch's kernels and ``fft``, ``shift`` need no
  compilation); the first auto call whose plan with every algorithm would use a compiled
  one that is not ready starts a background thread that warms that one, and once that is
  done the plans are made again (:data:`generation` is part of every plan cache key), so
  later calls use it;
* in a process forked from one whose Numba pool runs (a DataLoader worker), ``direct``
  and ``depthwise`` run serial twins of their loops (GNU OpenMP cannot be used after a
  fork); "auto" does not choose them there, an explicit ``algorithm=`` compiles the twins;
* ``convforge.backends.background_compile = False`` turns this off: "auto" then considers
  every algorithm and compiles in the caller, as an explicit ``algorithm=`` always does.

The background thread has a child Python process (nice 10, one thread) compile the kernels
into Numba's on-disk cache, then loads them from there (about 0.1 s per kernel set): a
compilation in this process would hold Python's lock for long stretches and slow the
caller's Python code two- to threefold for the minute it takes. With
``convforge.backends.compile_in_subprocess = False`` it compiles in this process. The
warm-up runs tiny tensors (torch runs those on the calling thread: no second OpenMP
team). :func:`warmup` (``convforge warmup``) does all of it ahead of time, in the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import time

import torch

from . import backends
from .algorithms import REGISTRY
from .algorithms._threads import pool_is_foreign

#: algorithms whose kernels are compiled on first use, in the order the background thread
#: warms them (quickest to compile and most often chosen first)
_FIRST = {"im2col": 0, "depthwise": 1, "direct": 2}
COMPILED = tuple(sorted((name for name, algo in REGISTRY.items() if algo.compiled),
                        key=lambda n: _FIRST.get(n, len(_FIRST))))
DTYPES = (torch.float32, torch.float64)
#: algorithms with Numba parallel loops: in a process forked from one whose Numba pool
#: runs (a DataLoader worker) they run serial twins, compiled there on first use, so
#: "auto" leaves them out there
PARALLEL = ("direct", "depthwise")

# (input shape, weight shape, arguments): together they run every compiled code path of
# every pass (unpadded, fused padding, strides, dilation, groups, channel multipliers,
# stacked small planes, single-channel images, the tiled winograd path, bias or not)
CASES = (
    ((2, 3, 9, 8), (4, 3, 3, 3), {}),
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1)),
    ((2, 4, 11, 10), (4, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 2, 12, 13), (2, 2, 3, 2), dict(dilation=2, padding=(1, 2))),
    ((2, 4, 9, 9), (8, 1, 3, 3), dict(groups=4, padding=1)),
    ((2, 4, 10, 9), (4, 1, 5, 5), dict(groups=4, stride=2, padding=2)),
    ((2, 4, 30, 30), (4, 1, 3, 3), dict(groups=4, padding=1)),
    ((1, 1, 40, 40), (1, 1, 5, 5), dict(padding=2)),
    ((1, 1, 40, 40), (1, 1, 3, 3), dict(stride=2)),
    ((2, 8, 16, 16), (8, 8, 3, 3), dict(padding=1)),
    ((1, 16, 24, 24), (16, 16, 3, 3), {}),
    # long rows (images): in place with border columns, padded blocks, unpadded
    ((1, 2, 12, 260), (2, 2, 3, 3), dict(padding=1)),
    ((1, 2, 12, 260), (2, 2, 3, 3), dict(stride=2, padding=1)),
    ((1, 2, 12, 260), (2, 2, 3, 3), {}),
    ((1, 1, 16, 260), (1, 1, 7, 7), dict(padding=3)),
    ((1, 1, 16, 260), (1, 1, 5, 5), dict(padding=2)),
    ((1, 3, 16, 260), (3, 1, 3, 3), dict(groups=3, padding=1)),
)

_LOCK = threading.Lock()
_READY: set = set()
_QUEUED: set = set()
_STATE = {"thread": None, "stop": False, "child": None}
_ELSEWHERE: set = set()


class _Stopped(Exception):
    """The interpreter is exiting: the background thread stops between two calls."""


#: changes each time more kernels become ready (part of the plan caches' keys)
generation = 0


def _dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32``: how dtypes are shown and passed to the child."""
    return str(dtype).removeprefix("torch.")


def is_ready(name, dtype) -> bool:
    """Whether ``name`` runs without compiling for ``dtype`` in this process."""
    return name not in COMPILED or (name, dtype) in _READY


def _cases(name, dtype):
    """The configurations of :data:`CASES` that ``name`` supports, as tensors."""
    from .spec import make_spec

    algo = REGISTRY[name]
    gen = torch.Generator().manual_seed(0)
    for xs, ws, kw in CASES:
        spec = make_spec("conv2d", xs, ws, **kw)
        if algo.supports(spec, dtype, torch.device("cpu")) is not None:
            continue
        x = torch.randn(xs, generator=gen, dtype=dtype)
        w = torch.randn(ws, generator=gen, dtype=dtype)
        yield x, w, torch.randn(ws[0], generator=gen, dtype=dtype), kw


def _warm_one(name, dtype) -> None:
    """Run every pass of ``name`` on every case it supports, with and without bias, in
    both layouts: Numba compiles each specialisation it meets."""
    from .functional import conv2d

    for x, w, b, kw in _cases(name, dtype):
        for bias, layout in ((b, torch.contiguous_format), (None, torch.channels_last)):
            if _STATE["stop"] and threading.current_thread() is _STATE["thread"]:
                raise _Stopped
            xi = x.contiguous(memory_format=layout).requires_grad_()
            wi = w.clone().requires_grad_()
            with torch.autocast("cpu", enabled=False):      # the dtype asked for
                with torch.enable_grad():
                    conv2d(xi, wi, bias, algorithm=name, **kw).sum().backward()
                with torch.no_grad():
                    conv2d(xi, wi, bias, algorithm=name, **kw)
    if name == "depthwise":                  # conv3d's depthwise loops, every pass
        from .functional_nd import conv3d

        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=dtype, requires_grad=True)
        w = torch.randn(3, 1, 3, 2, 3, generator=gen, dtype=dtype, requires_grad=True)
        with torch.autocast("cpu", enabled=False), torch.enable_grad():
            conv3d(x, w, w[:, 0, 0, 0, 0], padding=1, groups=3, algorithm=name).sum().backward()


def _mark_ready(name, dtype) -> None:
    global generation
    with _LOCK:
        _READY.add((name, dtype))
        generation += 1


def warmup(algorithms=None, dtypes=DTYPES, *, progress=False) -> list:
    """Compile (or load from Numba's cache) the kernels of every compiled algorithm now,
    so that no later call waits for them and "auto" may choose them at once.

    Args:
        algorithms: names (default: every compiled algorithm, :data:`COMPILED`).
        dtypes: the dtypes to compile for (default float32 and float64).
        progress: show a tqdm progress bar (one step per algorithm and dtype).

    Returns:
        ``[(name, dtype name, seconds)]`` of what was warmed (nothing for what was ready).

    Example:
        >>> import convforge
        >>> _ = convforge.warmup(["direct"], [torch.float64])
        >>> convforge._compile.is_ready("direct", torch.float64)
        True
    """
    names = list(COMPILED if algorithms is None else algorithms)
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"warmup: algorithms must be names from {sorted(REGISTRY)}, "
                             f"but got {name!r}")
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"warmup: dtypes must be float32 or float64, but got {dtype}")
    todo = [(n, d) for n in names if n in COMPILED for d in dtypes if not is_ready(n, d)]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="compiling", unit="kernel set")
    done = []
    try:
        for name, dtype in todo:
            if bar is not None:
                bar.set_postfix_str(f"{name} {_dtype_name(dtype)}")
            t0 = time.perf_counter()
            _warm_one(name, dtype)
            _mark_ready(name, dtype)
            done.append((name, _dtype_name(dtype), time.perf_counter() - t0))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return done


def _background() -> None:
    try:                # Linux: a thread's own nice value; the caller's threads go first
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
    while True:
        with _LOCK:
            todo = sorted(_QUEUED - _READY, key=lambda nd: (COMPILED.index(nd[0]), str(nd[1])))
            if not todo or _STATE["stop"]:
                _STATE["thread"] = None
                return
        fresh = [nd for nd in todo if nd not in _ELSEWHERE]
        if fresh and backends.compile_in_subprocess:
            _ELSEWHERE.update(fresh)
            _compile_elsewhere(fresh)
            continue                        # then load them here (more may be queued)
        name, dtype = todo[0]
        try:
            _warm_one(name, dtype)
        except _Stopped:
            with _LOCK:
                _STATE["thread"] = None
            return
        except Exception:                  # a failure here shows again where it is called
            with _LOCK:
                _QUEUED.discard((name, dtype))
            continue
        _mark_ready(name, dtype)


def _compile_elsewhere(todo) -> bool:
    """Compile ``todo`` [(name, dtype)] in a child Python (its own interpreter lock, nice
    10) into Numba's on-disk cache, from which this process then only loads them (about
    0.1 s per kernel set instead of 10-30 s of compiling beside the caller's threads).
    Returns whether the child succeeded (if not, this process compiles them itself)."""
    arg = ",".join(f"{name}:{_dtype_name(dtype)}" for name, dtype in todo)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        with _LOCK:
            if _STATE["stop"]:
                return False
            child = _STATE["child"] = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys, convforge._compile as c; c._child(sys.argv[1])", arg],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        try:
            return child.wait() == 0
        finally:
            _STATE["child"] = None
    except OSError:
        return False


def _child(arg) -> None:
    """The child of :func:`_compile_elsewhere`: warm ``name:dtype,...`` and exit (at once
    if the parent exits first: no compiler left running behind a finished program)."""
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    torch.set_num_threads(1)
    for item in arg.split(","):
        name, dtype = item.split(":")
        warmup([name], [getattr(torch, dtype)])


@contextlib.contextmanager
def no_background():
    """Start no background compilation inside the block ("auto" keeps planning with what
    is ready): a streamed run keeps Numba (~110 MiB resident, ~170 MiB of address space)
    out of its process."""
    with _LOCK:
        before = _STATE.get("paused", False)
        _STATE["paused"] = True
    try:
        yield
    finally:
        with _LOCK:
            _STATE["paused"] = before


def request(names, dtype) -> None:
    """Warm ``names`` for ``dtype`` in a background thread (started if none runs)."""
    with _LOCK:
        new = {(n, dtype) for n in names if n in COMPILED} - _READY - _QUEUED
        if not new or _STATE["stop"] or _STATE.get("paused"):
            return
        _QUEUED.update(new)
        if _STATE["thread"] is None:
            thread = threading.Thread(target=_background, name="convforge-compile",
                                      daemon=True)
            _STATE["thread"] = thread
            thread.start()


def available(names, dtype, wanted=()) -> list:
    """The names "auto" may plan with now: the ready ones, or all of them when background
    compilation is off. Those of ``wanted`` (the plan "auto" would make with every
    algorithm) that are not ready are queued for the background thread: kernels nobody
    would choose are not compiled."""
    if pool_is_foreign():
        names = [n for n in names if n not in PARALLEL]
    if not backends.background_compile or dtype not in DTYPES:
        return list(names)
    ready = [n for n in names if is_ready(n, dtype)]
    pending = [n for n in dict.fromkeys(wanted) if n in names and not is_ready(n, dtype)]
    if pending:
        request(pending, dtype)
    return ready or list(names)


def wait(timeout=None) -> bool:
    """Wait for the background thread (if any); True when nothing is left to compile."""
    thread = _STATE["thread"]
    if thread is not None:
        thread.join(timeout)
    return _STATE["thread"] is None


@atexit.register
def _stop_at_exit() -> None:
    """Stop the background thread before the interpreter tears down: a daemon thread that
    comes back from C++ (a torch op, LLVM) to a finalizing interpreter is ended with
    ``pthread_exit``, whose unwinding through C++ frames aborts the process ("terminate
    called without an active exception"). A child compiler is killed; the thread finishes
    the call it is in (at most one kernel set: seconds with an empty Numba cache, about
    0.1 s with a full one) and returns."""
    with _LOCK:
        _STATE["stop"] = True
        child = _STATE["child"]
    if child is not None:
        try:
            child.kill()
        except OSError:
            pass
    thread = _STATE["thread"]
    if thread is not None:
        thread.join()


_FORK = {}


def _before_fork() -> None:
    # a child must not inherit Numba's compiler lock held by a thread it does not have
    # (nothing to hold while Numba is not loaded: the kernels load it on first use)
    module = sys.modules.get("numba.core.compiler_lock")
    if module is not None:
        module.global_compiler_lock.acquire()
        _FORK["held"] = module.global_compiler_lock


def _after_fork_parent() -> None:
    lock = _FORK.pop("held", None)
    if lock is not None:
        lock.release()


def _after_fork_child() -> None:
    global _LOCK
    lock = _FORK.pop("held", None)
    if lock is not None:
        lock.release()
    _LOCK = threading.Lock()
    _QUEUED.intersection_update(_READY)            # the thread did not come along
    _STATE["thread"] = None
    _STATE["child"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                        after_in_child=_after_fork_child)
