"""Global switches, like ``torch.backends.cudnn``.

``background_compile``: see below and :mod:`convforge._compile`.

``benchmark``: when True, every ``algorithm="auto"`` call that does not say otherwise (a
layer's ``measure=None``, the functions' default) times the candidate algorithms of each
pass once for its configuration and keeps the fastest (``convforge.dispatch``). Off by
default: the first call of each new shape then costs a few runs of every candidate.

Example:
    >>> import convforge
    >>> convforge.backends.benchmark
    False
"""

import os

benchmark = False

#: when True, "auto" plans only with algorithms whose compiled kernels are ready in this
#: process and warms the others in a background thread (``convforge._compile``); when
#: False, it considers every algorithm and compiles in the caller
background_compile = True

#: when True, the background compilation runs in a child Python process and this one
#: loads the result from Numba's on-disk cache (``convforge._compile``)
compile_in_subprocess = True

_ENV = "CONVFORGE_ALGORITHM"
try:                # os.environ's own table: one dictionary lookup instead of an encode
    _ENV_TABLE, _ENV_KEY = os.environ._data, os.environ.encodekey(_ENV)
except AttributeError:                      # another Python: the public (slower) path
    _ENV_TABLE, _ENV_KEY = os.environ, _ENV


def forced_token():
    """A value that changes whenever ``CONVFORGE_ALGORITHM`` does (its raw value, or None):
    part of the plan caches' keys, read on every call, so it is one dictionary lookup
    (``os.environ.get`` costs about 1 us, 10 us when its code is cold between two
    convolutions of a network)."""
    return _ENV_TABLE.get(_ENV_KEY)
