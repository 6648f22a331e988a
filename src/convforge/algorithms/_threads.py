"""Numba's thread pool beside torch's: started once, passive, sized like torch's.

Numba's ``omp`` threading layer runs on the system's GNU OpenMP runtime, a second pool
next to torch's own (torch ships its libgomp). An OpenMP pool spins after each parallel
region by default, so a spinning Numba pool would steal the cores from the torch ops that
follow our kernels. Numba's pool is therefore started with ``OMP_WAIT_POLICY=PASSIVE``
set *only while its runtime loads* (the runtime reads the variable once, then): its
threads sleep as soon as a loop ends, and the variable is removed again, so torch's pool
(loaded with ``import torch``, before) and every child process (DataLoader workers,
``torch.distributed`` ranks, subprocesses) keep their own settings. A user's own
``OMP_WAIT_POLICY`` is left as it is and applies to both.

GNU OpenMP is not fork-safe, and Numba terminates a forked child (a DataLoader worker)
at its first parallel loop when the parent's pool is running. Kernels are therefore
declared with :func:`parallel_kernel`: in such a child each runs as its serial twin (the
same loop compiled without ``parallel``, cached on disk under its own name).
"""

from __future__ import annotations

import functools
import os
import threading
import types

import torch

# below this many multiply-adds one thread is quicker than waking the others (a parallel
# launch costs ~20 us on an idle machine and milliseconds when the other core is busy)
_PARALLEL_MIN_MACS = 1 << 18
_LOCK = threading.Lock()
_STARTED = []           # [the pid of the process that launched Numba's pool]


def _start_pool() -> None:
    """Launch Numba's threads with OMP_WAIT_POLICY=PASSIVE for their runtime only."""
    with _LOCK:
        if _STARTED:
            return
        user = os.environ.get("OMP_WAIT_POLICY")
        if user is None:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            from numba.np.ufunc.parallel import _launch_threads

            _launch_threads()
        finally:
            if user is None:
                del os.environ["OMP_WAIT_POLICY"]
        _STARTED.append(os.getpid())


def numba_threads(macs: int) -> int:
    """Set and return Numba's thread count for a job of ``macs`` multiply-adds: torch's
    thread count (at most Numba's pool), or one thread for a small job."""
    if not _STARTED:
        _start_pool()
    import numba

    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if macs < _PARALLEL_MIN_MACS:
        n = 1
    numba.set_num_threads(n)
    return n


def pool_is_foreign() -> bool:
    """Whether Numba's pool was launched by another process (this one is a fork of it)."""
    return bool(_STARTED) and _STARTED[0] != os.getpid()


class ForkSafeKernel:
    """A ``parallel=True`` Numba kernel that runs as its serial twin in a process forked
    from one whose Numba pool is running (see the module docstring).

    ``.parallel`` is the parallel dispatcher, ``.serial`` the twin (compiled on first use
    in such a child, cached under ``<name>_serial``).
    """

    def __init__(self, fn, options):
        import numba

        functools.update_wrapper(self, fn)
        self.py_func, self._options, self._serial = fn, options, None
        self.parallel = numba.njit(parallel=True, cache=True, **options)(fn)

    def __call__(self, *args):
        if not _STARTED:
            _start_pool()
        if _STARTED[0] == os.getpid():
            return self.parallel(*args)
        return self.serial(*args)

    @property
    def serial(self):
        if self._serial is None:
            fn = self.py_func
            twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                      fn.__defaults__, fn.__closure__)
            twin.__qualname__ = fn.__qualname__ + "_serial"    # its own cache files
            import numba

            self._serial = numba.njit(parallel=False, cache=True, **self._options)(twin)
        return self._serial


def parallel_kernel(**options):
    """``numba.njit(parallel=True, cache=True, **options)``, fork-safe
    (:class:`ForkSafeKernel`)."""
    return lambda fn: ForkSafeKernel(fn, options)
