"""Train a LeNet-style CNN built from ``convforge.nn.Conv2d`` on scikit-learn's digits.

d2l's next section (LeNet): conv 5x5 pad 2 -> activation -> avg-pool -> conv 5x5 ->
activation -> avg-pool -> three dense layers. scikit-learn's bundled ``load_digits()``
(1797 images of 8x8 pixels, 16 grey levels) is upsampled to 16x16 (each pixel repeated
2x2) so the 5x5 kernels of LeNet fit: 16 -> conv(pad 2) 16 -> pool 8 -> conv 4 -> pool 2.
Training: ReLU, inputs standardised, each batch shifted by up to 2 pixels, Adam with a
one-cycle learning-rate schedule.

The same model built with ``torch.nn.Conv2d`` (``--backend torch``) starts from the very
same numbers (convforge's layer draws its initial weights like torch's), so ``--compare``
shows what the convolution implementation alone changes.

Usage::

    python examples/train_digits.py                       # convforge, 20 epochs
    python examples/train_digits.py --backend torch
    python examples/train_digits.py --compare --epochs 20 --seed 0
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import convforge.nn as cnn

_SPLIT_SEED = 20240501  # the train/test split is fixed, whatever --seed says
_BACKENDS = {"convforge": cnn.Conv2d, "torch": nn.Conv2d}


def load_data(test_fraction=0.2):
    """Digits as ``(N, 1, 16, 16)`` float32 in [0, 1] with labels; a fixed split.

    Returns:
        ``(x_train, y_train, x_test, y_test)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0          # (N, 8, 8)
    x = x.repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1)   # (N, 1, 16, 16)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def build_model(backend="convforge", dtype=torch.float32):
    """LeNet for 16x16 inputs, its two convolutions from ``backend``'s Conv2d."""
    if backend not in _BACKENDS:
        raise ValueError(f"build_model: backend must be one of {sorted(_BACKENDS)}, "
                         f"but got {backend!r}")
    conv = _BACKENDS[backend]
    return nn.Sequential(
        conv(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.AvgPool2d(2),   # (N, 6, 8, 8)
        conv(6, 16, kernel_size=5), nn.ReLU(), nn.AvgPool2d(2),             # (N, 16, 2, 2)
        nn.Flatten(),                                                      # (N, 64)
        nn.Linear(64, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    ).to(dtype)


def accuracy(model, x, y, batch_size=512):
    """Fraction of ``x`` that ``model`` labels ``y``."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(y)


def train(backend="convforge", epochs=20, seed=0, *, batch_size=32, lr=3e-3, shift=2,
          progress=False, data=None, verbose=False):
    """Train the model from ``seed`` and return its test accuracy (a float in [0, 1]).

    Args:
        backend: ``"convforge"`` or ``"torch"``: whose Conv2d the model uses.
        epochs: passes over the training set.
        seed: seeds the initial weights and the batch order.
        batch_size, lr: mini-batch size and Adam's peak learning rate (one-cycle schedule).
        shift: each batch is rolled by a random offset of up to ``shift`` pixels per axis.
        progress: show a tqdm bar over the epochs.
        data: ``load_data()``'s tuple (loaded if None).
        verbose: print a summary line.
    """
    x_train, y_train, x_test, y_test = data if data is not None else load_data()
    torch.manual_seed(seed)
    model = build_model(backend)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(y_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=epochs * steps_per_epoch)
    mean, std = x_train.mean(), x_train.std()
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    epochs_iter = range(epochs)
    if progress:
        from tqdm import tqdm

        epochs_iter = tqdm(epochs_iter, desc=f"{backend:>9}", unit="epoch")
    # one untimed forward and backward: the layers' first-call costs (convforge plans its
    # layers and loads its compiled kernels), reported apart from the training time; the
    # gradients are cleared by the first step's zero_grad, so training is unchanged
    start = time.perf_counter()
    loss_fn(model((x_train[:batch_size] - mean) / std), y_train[:batch_size]).backward()
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    for _ in epochs_iter:
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            dy, dx = torch.randint(-shift, shift + 1, (2,), generator=gen).tolist()
            xb = torch.roll(x_train[idx], (dy, dx), (2, 3))  # augmentation: a random shift
            loss = loss_fn(model((xb - mean) / std), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if progress:
            epochs_iter.set_postfix(loss=f"{total / count:.4f}")
    acc = accuracy(model, (x_test - mean) / std, y_test)
    if verbose:
        print(f"{backend}: {epochs} epochs, seed {seed}: test accuracy {100 * acc:.2f}% "
              f"({round(acc * len(y_test))}/{len(y_test)}), {time.perf_counter() - start:.2f} s "
              f"(first batch before it: {warm_up:.2f} s)")
    return acc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backend", choices=sorted(_BACKENDS), default="convforge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true",
                        help="train with both backends from the same seed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: this small model gains nothing "
                             "from more, and loses much on a busy machine)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be positive, but got {args.epochs}")
    if args.threads < 1:
        parser.error(f"--threads must be positive, but got {args.threads}")
    torch.set_num_threads(args.threads)
    data = load_data()
    backends = sorted(_BACKENDS) if args.compare else [args.backend]
    results = {b: train(b, args.epochs, args.seed, data=data, progress=not args.no_progress,
                        verbose=True) for b in backends}
    if args.compare:
        diff = 100 * abs(results["convforge"] - results["torch"])
        print(f"summary: convforge {100 * results['convforge']:.2f}% vs torch "
              f"{100 * results['torch']:.2f}% (difference {diff:.2f} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
