"""Data-parallel training launched by Spark's ``TorchDistributor`` (local mode, two CPU processes).

Opt-in, as it starts a JVM and a local Spark session: ``SKCCE_TEST_SPARK=1``;
it needs ``pyspark`` and Java.  ``TorchDistributor`` starts the processes
with ``torchrun``; as under ``torchrun``, the training function initializes
the gloo group, then calls ``fit`` with nothing set on the estimator.  The
run must equal a one-process fit with the global batch.
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
    pytest.mark.skipif(os.environ.get("SKCCE_TEST_SPARK") != "1",
                       reason="starts a JVM and a Spark session; set SKCCE_TEST_SPARK=1 to run"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

PROCESSES = 2


def test_spark_torch_distributor_fits_like_one_process_with_the_global_batch(tmp_path):
    pytest.importorskip("pyspark", reason="pyspark not installed")
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    X = launcher_blobs()
    one = CollisionClustering(batch_size=LAUNCHER_BATCH * PROCESSES, **LAUNCHER_PARAMS).fit(X)
    spark = (SparkSession.builder.master(f"local[{PROCESSES}]").appName("skcce-test")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        distributor = TorchDistributor(num_processes=PROCESSES, local_mode=True, use_gpu=False)
        rank = distributor.run(rank_fit_function(PROCESSES, init_group=True), X, str(tmp_path))
    finally:
        spark.stop()
    assert rank == 0  # run returns what rank 0 returned
    assert_ranks_fit_like(one, tmp_path, PROCESSES)
