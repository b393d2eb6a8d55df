"""Hyperparameter search on a cluster of worker processes (Dask, Ray) gives the local result.

``GridSearchCV`` runs its fits through joblib, so a joblib backend backed by
Dask or Ray spreads them over worker processes. Each worker is limited to one
torch, OpenMP and Numba thread so that ``n_workers`` fits do not
oversubscribe the cores (docs/guide/scaling.rst).
"""

import os

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV

from skcce import CollisionClustering

# Environment of each worker process, set before it imports torch or Numba.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}
GRID = {"lam": [0.5, 2.0], "n_clusters": [2, 3]}


def _data():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    return (centers[rng.integers(3, size=90)] + rng.normal(size=(90, 3))).astype(np.float32)


def _search(n_jobs):
    estimator = CollisionClustering(max_epochs=4, batch_size=32, random_state=0, device="cpu")
    return GridSearchCV(estimator, GRID, cv=2, n_jobs=n_jobs).fit(_data())


def _assert_same_search(got, expected):
    assert got.best_params_ == expected.best_params_
    assert got.cv_results_["params"] == expected.cv_results_["params"]
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(got.cv_results_[key], expected.cv_results_[key], rtol=1e-5)
    np.testing.assert_array_equal(got.cv_results_["rank_test_score"],
                                  expected.cv_results_["rank_test_score"])
    np.testing.assert_array_equal(got.best_estimator_.labels_, expected.best_estimator_.labels_)


def _make_thread_probe():
    # A nested function is pickled by value: the workers need not import this test module.
    def worker_threads():
        import os

        import numba
        import torch

        return torch.get_num_threads(), numba.get_num_threads(), os.environ["OMP_NUM_THREADS"]

    return worker_threads


@pytest.fixture(scope="module")
def local_search():
    return _search(n_jobs=1)


def test_grid_search_on_a_dask_cluster_matches_the_local_search(local_search):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env=ONE_THREAD) as cluster, \
            distributed.Client(cluster) as client:
        # one thread for torch and Numba in every worker: no oversubscription
        assert set(client.run(_make_thread_probe()).values()) == {(1, 1, "1")}
        with parallel_config(backend="dask"), distributed.get_task_stream(client) as tasks:
            search = _search(n_jobs=-1)
        # the fits ran on the workers: 4 candidates x 2 folds
        assert len(tasks.data) >= 4
    _assert_same_search(search, local_search)


@pytest.mark.skipif(os.environ.get("SKCCE_TEST_RAY") != "1",
                    reason="Ray start-up takes tens of seconds; set SKCCE_TEST_RAY=1 to run")
def test_grid_search_on_ray_matches_the_local_search(local_search):
    ray = pytest.importorskip("ray", reason="ray not installed")
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": ONE_THREAD})
    try:
        assert ray.get(ray.remote(_make_thread_probe()).remote()) == (1, 1, "1")
        register_ray()
        with parallel_config(backend="ray"):
            search = _search(n_jobs=-1)
    finally:
        ray.shutdown()
    _assert_same_search(search, local_search)
