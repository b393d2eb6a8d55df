"""Data-parallel training launched by Spark's ``TorchDistributor`` (local mode, two CPU processes).

Opt-in, as it starts a JVM and a local Spark session: ``SKCCE_TEST_SPARK=1``;
it needs ``pyspark`` and Java.  ``TorchDistributor`` starts the processes
with ``torchrun``; as under ``torchrun``, the training function initializes
the gloo group, then calls ``fit`` with nothing set on the estimator.  The
run must equal a one-process fit with the global batch.
"""

import os

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from skcce import CollisionClustering

pytestmark = [
    pytest.mark.skipif(os.environ.get("SKCCE_TEST_SPARK") != "1",
                       reason="starts a JVM and a Spark session; set SKCCE_TEST_SPARK=1 to run"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

LOCAL_BATCH = 25
PROCESSES = 2
PARAMS = dict(n_clusters=3, max_epochs=3, random_state=0, lr=0.05)


def _data():
    X, _ = make_blobs(n_samples=200, n_features=8, centers=3, random_state=0)
    return X.astype(np.float32)


def _make_train_fn(world, local_batch, params):
    # A nested function is pickled by value: the processes need not import this test module.
    def train_fn(X, out):
        import os

        import numpy as np
        import torch
        import torch.distributed as dist

        from skcce import CollisionClustering

        torch.set_num_threads(1)
        dist.init_process_group("gloo")  # torchrun's environment gives rank and world size
        try:
            assert dist.get_world_size() == world
            est = CollisionClustering(batch_size=local_batch, **params).fit(X)
            np.savez(os.path.join(out, f"rank{dist.get_rank()}.npz"),
                     labels=est.labels_, loss=est.loss_,
                     **{k: v.numpy() for k, v in est.model_.state_dict().items()})
            return dist.get_rank()
        finally:
            dist.destroy_process_group()

    return train_fn


def test_spark_torch_distributor_fits_like_one_process_with_the_global_batch(tmp_path):
    pytest.importorskip("pyspark", reason="pyspark not installed")
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    X = _data()
    one = CollisionClustering(batch_size=LOCAL_BATCH * PROCESSES, **PARAMS).fit(X)
    spark = (SparkSession.builder.master(f"local[{PROCESSES}]").appName("skcce-test")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        distributor = TorchDistributor(num_processes=PROCESSES, local_mode=True, use_gpu=False)
        rank = distributor.run(_make_train_fn(PROCESSES, LOCAL_BATCH, PARAMS), X, str(tmp_path))
    finally:
        spark.stop()
    assert rank == 0  # run returns what rank 0 returned
    for r in range(PROCESSES):  # every process ends with the model of the one-process run
        got = np.load(tmp_path / f"rank{r}.npz")
        assert np.array_equal(got["labels"], one.labels_)
        assert float(got["loss"]) == pytest.approx(one.loss_, rel=1e-5, abs=1e-6)
        for key, value in one.model_.state_dict().items():
            np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-4, atol=1e-5)
