"""Data-parallel training launched by Ray Train's ``TorchTrainer`` (two CPU workers, gloo).

Opt-in, as Ray's start-up takes tens of seconds: ``SKCCE_TEST_RAY=1``. It
needs ``ray[train]``.  ``fit`` is called inside the training function with
nothing set on the estimator: Ray Train initializes the process group, and
the run must equal a one-process fit with the global batch, as the
``torchrun``/spawn tests of ``tests/test_distributed_torch.py`` check.
"""

import os

import pytest
from _helpers import (
    LAUNCHER_BATCH,
    LAUNCHER_PARAMS,
    assert_ranks_fit_like,
    launcher_blobs,
    rank_fit_function,
)

from skcce import CollisionClustering

pytestmark = [
    pytest.mark.skipif(os.environ.get("SKCCE_TEST_RAY") != "1",
                       reason="Ray start-up takes tens of seconds; set SKCCE_TEST_RAY=1 to run"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

WORKERS = 2


def test_ray_train_torch_trainer_fits_like_one_process_with_the_global_batch(tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed")
    pytest.importorskip("ray.train.torch", reason="ray[train] not installed")
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    X = launcher_blobs()
    one = CollisionClustering(batch_size=LAUNCHER_BATCH * WORKERS, **LAUNCHER_PARAMS).fit(X)
    fit_rank = rank_fit_function(WORKERS, init_group=False)  # TorchTrainer set up gloo
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}})
    try:
        trainer = TorchTrainer(
            lambda config: fit_rank(config["X"], config["out"]),
            train_loop_config={"X": X, "out": str(tmp_path)},
            scaling_config=ScalingConfig(num_workers=WORKERS, use_gpu=False),
            run_config=RunConfig(name="skcce", storage_path=str(tmp_path)))
        trainer.fit()
    finally:
        ray.shutdown()
    assert_ranks_fit_like(one, tmp_path, WORKERS)
