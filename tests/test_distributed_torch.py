"""Data-parallel training on torch.distributed: two gloo processes on 127.0.0.1.

One spawn of two ranks runs every scenario (starting processes is the slow
part); the tests compare its results with one-process fits in this process.
"""

import contextlib
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import make_blobs

from skcce import CollisionClassifier, CollisionClustering
from skcce._callbacks import Callback

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

LOCAL_BATCH = 25
WORLD = 2
PARAMS = dict(n_clusters=3, max_epochs=3, random_state=0, lr=0.05)
SCENARIOS = {"cross_neighbors": dict(augment="cross_neighbors"), "none": dict(augment=None),
             "n_init": dict(augment=None, n_init=2, max_epochs=2)}
#: 187 rows: each epoch ends in a global batch of 37 rows, shards of 19 and 18
UNEVEN = 187


def _data(n=200, labels=False):
    X, y = make_blobs(n_samples=n, n_features=8, centers=3, random_state=0)
    return (X.astype(np.float32), y) if labels else X.astype(np.float32)


def _classifier(batch_size):
    est = CollisionClassifier(batch_size=batch_size, max_epochs=3, random_state=0)
    est.fit(*_data(labels=True))
    return {"state": {k: v.clone() for k, v in est.model_.state_dict().items()},
            "curve": list(est.loss_curve_)}


def _fitted(est):
    return {"state": {k: v.clone() for k, v in est.model_.state_dict().items()},
            "labels": est.labels_.copy(), "loss": est.loss_, "curve": list(est.loss_curve_),
            "sizes": est.cluster_sizes_history_.copy()}


class _StopAfter(Callback):
    """Interrupt (as Ctrl-C would) after ``n`` epochs, on every rank alike."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer, record):
        if len(trainer.history) >= self.n:
            raise KeyboardInterrupt


def _worker(rank, port, out_dir, ckpt_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        import skcce._checkpoint as checkpoint_module

        saves = []
        original = checkpoint_module.Checkpoint.save

        def spy(self, trainer):
            saves.append(self.epochs_done)
            return original(self, trainer)

        checkpoint_module.Checkpoint.save = spy
        X = _data()
        results = {}
        for name, extra in SCENARIOS.items():
            params = {**PARAMS, **extra}
            est = CollisionClustering(batch_size=LOCAL_BATCH, **params).fit(X)
            results[name] = _fitted(est)
        est = CollisionClustering(batch_size=LOCAL_BATCH, **PARAMS).fit(_data(UNEVEN))
        results["uneven"] = _fitted(est)
        results["classifier"] = _classifier(LOCAL_BATCH)
        # interrupted after 2 of 4 epochs, then resumed from rank 0's checkpoint
        params = {**PARAMS, "max_epochs": 4, "checkpoint_dir": ckpt_dir}
        stopped = CollisionClustering(batch_size=LOCAL_BATCH, callbacks=[_StopAfter(2)],
                                      **params)
        with pytest.warns(UserWarning, match="interrupted"), pytest.raises(KeyboardInterrupt):
            stopped.fit(X)
        results["saves_before_resume"] = list(saves)
        resumed = CollisionClustering(batch_size=LOCAL_BATCH, **params).fit(X)
        results["resumed"] = _fitted(resumed)
        results["saves"] = saves
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    ckpt = tmp_path_factory.mktemp("ckpt")
    mp.spawn(_worker, args=(_free_port(), str(out), str(ckpt)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], ckpt


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _one_process(X=None, **extra):
    est = CollisionClustering(batch_size=WORLD * LOCAL_BATCH, **{**PARAMS, **extra})
    with _one_thread():
        return _fitted(est.fit(_data() if X is None else X))


def _assert_same(got, want):
    assert got["state"].keys() == want["state"].keys()
    for key, value in want["state"].items():
        torch.testing.assert_close(got["state"][key], value, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["curve"], want["curve"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["sizes"], want["sizes"])
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_two_ranks_match_one_process_with_the_global_batch(ranks, scenario):
    results, _ = ranks
    want = _one_process(**SCENARIOS[scenario])
    for rank in range(WORLD):
        _assert_same(results[rank][scenario], want)


def test_uneven_shards_match_one_process(ranks):
    results, _ = ranks
    want = _one_process(_data(UNEVEN))
    for rank in range(WORLD):
        _assert_same(results[rank]["uneven"], want)


def test_classifier_two_ranks_match_one_process(ranks):
    results, _ = ranks
    with _one_thread():
        want = _classifier(WORLD * LOCAL_BATCH)
    for rank in range(WORLD):
        got = results[rank]["classifier"]
        for key, value in want["state"].items():
            torch.testing.assert_close(got["state"][key], value, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got["curve"], want["curve"], rtol=1e-5, atol=1e-6)


def test_only_rank_zero_writes_checkpoints_and_a_resumed_run_continues(ranks):
    results, ckpt = ranks
    assert results[0]["saves_before_resume"] == [1]  # the 2nd epoch was interrupted at its end
    assert results[0]["saves"] == [1, 2, 3, 4]  # resumed after 1 epoch: epochs 2 to 4
    assert results[1]["saves"] == []
    assert list(ckpt.iterdir()) == []  # the finished run removed its file
    want = _one_process(max_epochs=4)
    for rank in range(WORLD):
        _assert_same(results[rank]["resumed"], want)
