"""DistributedDataParallel (2 processes, gloo, 127.0.0.1) equals one process on the whole batch."""

import os
import sys

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import ddp_digits  # noqa: E402  (the example file itself, not a package)


def test_one_ddp_step_equals_one_process_on_the_concatenated_batch():
    assert dist.is_available() and dist.is_gloo_available()
    x, y = ddp_digits.digits_batch(32)
    assert x.dtype == torch.float64
    before = ddp_digits.single_step(x, y, lr=0.0)
    one = ddp_digits.single_step(x, y)
    two = ddp_digits.ddp_step(x, y, world_size=2)
    assert ddp_digits.max_difference(one, before) > 1e-4      # the step did move them
    assert ddp_digits.max_difference(two, one) < 1e-12
    # a single process on *half* the batch ends elsewhere: the test can tell them apart
    half = ddp_digits.single_step(x[:16], y[:16])
    assert ddp_digits.max_difference(half, one) > 1e-6


def test_uneven_batch_is_refused():
    with pytest.raises(ValueError, match="must split evenly"):
        ddp_digits.ddp_step(torch.zeros(3, 1, 16, 16, dtype=torch.float64),
                            torch.zeros(3, dtype=torch.int64))
