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
"""

from __future__ import annotations

import os
import threading

import numba
import torch

# below this many multiply-adds one thread is quicker than waking the others (a parallel
# launch costs ~20 us on an idle machine and milliseconds when the other core is busy)
_PARALLEL_MIN_MACS = 1 << 18
_LOCK = threading.Lock()
_STARTED = []


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
        _STARTED.append(True)


def numba_threads(macs: int) -> int:
    """Set and return Numba's thread count for a job of ``macs`` multiply-adds: torch's
    thread count (at most Numba's pool), or one thread for a small job."""
    if not _STARTED:
        _start_pool()
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if macs < _PARALLEL_MIN_MACS:
        n = 1
    numba.set_num_threads(n)
    return n
