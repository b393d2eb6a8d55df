"""Data-parallel training launched by Ray Train's ``TorchTrainer`` (two CPU workers, gloo).

Opt-in, as Ray's start-up takes tens of seconds: ``SKCCE_TEST_RAY=1``. It
needs ``ray[train]``.  ``fit`` is called inside the training function with
nothing set on the estimator: Ray Train initializes the process group, and
the run must equal a one-process fit with the global batch, as the
``torchrun``/spawn tests of ``tests/test_distributed_torch.py`` check.
"""

import os

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from skcce import CollisionClustering

pytestmark = [
    pytest.mark.skipif(os.environ.get("SKCCE_TEST_RAY") != "1",
                       reason="Ray start-up takes tens of seconds; set SKCCE_TEST_RAY=1 to run"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

LOCAL_BATCH = 25
WORKERS = 2
PARAMS = dict(n_clusters=3, max_epochs=3, random_state=0, lr=0.05)


def _data():
    X, _ = make_blobs(n_samples=200, n_features=8, centers=3, random_state=0)
    return X.astype(np.float32)


def _make_train_fn(world, local_batch, params):
    # A nested function is pickled by value: the workers need not import this test module.
    def train_fn(config):
        # Runs in each Ray Train worker, where TorchTrainer has initialized gloo.
        import os

        import numpy as np
        import torch
        import torch.distributed as dist

        from skcce import CollisionClustering

        torch.set_num_threads(1)
        assert dist.is_initialized() and dist.get_world_size() == world
        est = CollisionClustering(batch_size=local_batch, **params).fit(config["X"])
        # every worker writes its model (a local cluster shares the file system)
        np.savez(os.path.join(config["out"], f"rank{dist.get_rank()}.npz"),
                 labels=est.labels_, loss=est.loss_,
                 **{k: v.numpy() for k, v in est.model_.state_dict().items()})

    return train_fn


def test_ray_train_torch_trainer_fits_like_one_process_with_the_global_batch(tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed")
    pytest.importorskip("ray.train.torch", reason="ray[train] not installed")
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    X = _data()
    one = CollisionClustering(batch_size=LOCAL_BATCH * WORKERS, **PARAMS).fit(X)
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}})
    try:
        trainer = TorchTrainer(
            _make_train_fn(WORKERS, LOCAL_BATCH, PARAMS),
            train_loop_config={"X": X, "out": str(tmp_path)},
            scaling_config=ScalingConfig(num_workers=WORKERS, use_gpu=False),
            run_config=RunConfig(name="skcce", storage_path=str(tmp_path)))
        trainer.fit()
    finally:
        ray.shutdown()
    for rank in range(WORKERS):  # every rank ends with the model of the one-process run
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert np.array_equal(got["labels"], one.labels_)
        assert float(got["loss"]) == pytest.approx(one.loss_, rel=1e-5, abs=1e-6)
        for key, value in one.model_.state_dict().items():
            np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-4, atol=1e-5)
