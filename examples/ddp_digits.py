"""The digits LeNet (``convforge.nn.Conv2d``) under DistributedDataParallel, on one machine.

Two processes (``torch.multiprocessing.spawn``, the gloo backend on 127.0.0.1) each take
half of one batch and make one SGD step; DDP averages their gradients. Since the loss is a
mean over the batch and the halves are equal, that average is the gradient of the whole
batch, so the parameters after the step must equal those of a single process that saw the
concatenated batch. Run in float64 so the comparison is tight.

Usage::

    python examples/ddp_digits.py            # prints the largest parameter difference
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_digits import build_model, load_data  # noqa: E402


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sgd_step(model, x, y, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _worker(rank, world_size, port, x, y, backend, lr, seed, out_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(seed)
        model = DistributedDataParallel(build_model(backend, dtype=torch.float64))
        per = len(y) // world_size
        shard = slice(rank * per, (rank + 1) * per)
        _sgd_step(model, x[shard], y[shard], lr)
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()},
                       out_path)
        # Orderly teardown: every rank is past its last collective before any rank starts
        # to leave, and the DDP wrapper (which holds the process group) is gone before the
        # group is destroyed. Without this, 3 runs in about 330 on a 2-core machine
        # aborted in rank 1 as it exited ("terminate called without an active exception").
        dist.barrier()
        del model
    finally:
        dist.destroy_process_group()


def ddp_step(x, y, *, world_size=2, backend="convforge", lr=0.1, seed=0):
    """One DDP step over ``world_size`` processes; returns rank 0's state_dict after it.

    ``len(y)`` must be divisible by ``world_size`` (equal shards make the averaged
    gradient the full batch's).
    """
    if len(y) % world_size:
        raise ValueError(f"ddp_step: the batch ({len(y)}) must split evenly over "
                         f"{world_size} processes, but got a remainder {len(y) % world_size}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.pt")
        mp.spawn(_worker, args=(world_size, free_port(), x, y, backend, lr, seed, out),
                 nprocs=world_size, join=True)
        return torch.load(out)


def single_step(x, y, *, backend="convforge", lr=0.1, seed=0):
    """The same step in one process on the whole batch; returns the state_dict after it."""
    torch.manual_seed(seed)
    model = build_model(backend, dtype=torch.float64)
    _sgd_step(model, x, y, lr)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_difference(a, b) -> float:
    """Largest absolute difference between two state_dicts with the same keys."""
    if a.keys() != b.keys():
        raise ValueError(f"max_difference: the keys differ, but got {sorted(a)} and {sorted(b)}")
    return max((a[k] - b[k]).abs().max().item() for k in a)


def digits_batch(n=64):
    """The first ``n`` training digits, float64, as the DDP check's batch."""
    x_train, y_train, _, _ = load_data()
    return x_train[:n].double(), y_train[:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="DDP (2 processes, gloo) vs one process.")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--backend", choices=["convforge", "torch"], default="convforge")
    args = parser.parse_args(argv)
    x, y = digits_batch(args.batch)
    before = single_step(x, y, backend=args.backend, lr=0.0)
    dist_sd = ddp_step(x, y, world_size=args.world_size, backend=args.backend)
    one_sd = single_step(x, y, backend=args.backend)
    print(f"{args.backend}: one SGD step moved the parameters by up to "
          f"{max_difference(one_sd, before):.3g}; DDP ({args.world_size} processes, gloo) "
          f"vs one process on the concatenated batch: max |difference| = "
          f"{max_difference(dist_sd, one_sd):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
