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


# ------------------------------------------------- launchers of torch.distributed (opt-in tests)
#: settings of the launcher tests: a run on ``world`` processes with batch LAUNCHER_BATCH each
#: must fit the one-process model with batch ``world * LAUNCHER_BATCH``
LAUNCHER_BATCH = 25
LAUNCHER_PARAMS = dict(n_clusters=3, max_epochs=3, random_state=0, lr=0.05)


def launcher_blobs():
    """The 200 x 8 float32 rows the launcher tests fit."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=200, n_features=8, centers=3, random_state=0)
    return X.astype(np.float32)


def rank_fit_function(world, init_group):
    """A training function ``fit_rank(X, out)`` for a launcher's processes.

    It fits ``CollisionClustering`` with the launcher tests' settings and
    saves this rank's model to ``out/rank<r>.npz`` (a local cluster shares
    the file system); it returns the rank.  ``init_group``: initialize (and
    destroy) the gloo group from torchrun's environment, as under Spark's
    ``TorchDistributor``; False where the launcher did (Ray Train).  The
    function is nested, so it is pickled by value: the processes need not
    import this module.
    """
    local_batch, params = LAUNCHER_BATCH, LAUNCHER_PARAMS

    def fit_rank(X, out):
        import os

        import numpy as np
        import torch
        import torch.distributed as dist

        from skcce import CollisionClustering

        torch.set_num_threads(1)
        if init_group:
            dist.init_process_group("gloo")
        try:
            assert dist.is_initialized() and dist.get_world_size() == world
            est = CollisionClustering(batch_size=local_batch, **params).fit(X)
            np.savez(os.path.join(out, f"rank{dist.get_rank()}.npz"),
                     labels=est.labels_, loss=est.loss_,
                     **{k: v.numpy() for k, v in est.model_.state_dict().items()})
            return dist.get_rank()
        finally:
            if init_group:
                dist.destroy_process_group()

    return fit_rank


def assert_ranks_fit_like(one, out, world):
    """Every rank's saved model (see :func:`rank_fit_function`) equals the fitted ``one``."""
    import pytest

    for rank in range(world):
        got = np.load(out / f"rank{rank}.npz")
        assert np.array_equal(got["labels"], one.labels_)
        assert float(got["loss"]) == pytest.approx(one.loss_, rel=1e-5, abs=1e-6)
        for key, value in one.model_.state_dict().items():
            np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-4, atol=1e-5)
