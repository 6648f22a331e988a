"""Global switches, like ``torch.backends.cudnn``.

``benchmark``: when True, every ``algorithm="auto"`` call that does not say otherwise (a
layer's ``measure=None``, the functions' default) times the candidate algorithms of each
pass once for its configuration and keeps the fastest (``convforge.dispatch``). Off by
default: the first call of each new shape then costs a few runs of every candidate.

Example:
    >>> import convforge
    >>> convforge.backends.benchmark
    False
"""

benchmark = False
