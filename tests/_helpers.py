"""Small data and networks shared by the test modules."""

import numpy as np
import torch


def tiny_images(n=24, seed=0):
    """Grey 28x28 'images' of two kinds: bright left half or bright right half."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    X[y == 0, :, :14] += 150
    X[y == 1, :, 14:] += 150
    return X, y


class SmallCNN(torch.nn.Sequential):
    """A fast stand-in for VGG-4; a class, so the estimator builds it from its seeded generator."""

    def __init__(self):
        super().__init__(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.BatchNorm2d(4),
                         torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(676, 2))


def interrupt_after(monkeypatch, n_epochs):
    """Make every training loop raise KeyboardInterrupt once ``n_epochs`` epochs are done.

    Returns a function that undoes it.
    """
    from skcce._training import Trainer

    original = Trainer.run_single_epoch

    def interrupted(self, source, epoch):
        if len(self.history) == n_epochs:
            raise KeyboardInterrupt
        return original(self, source, epoch)

    monkeypatch.setattr(Trainer, "run_single_epoch", interrupted)
    return lambda: monkeypatch.setattr(Trainer, "run_single_epoch", original)
