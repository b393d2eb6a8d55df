"""The CUDA paths: bf16 autocast, pinned memory, checkpoints and pickles across devices.

Run on a machine with a GPU: ``python -m pytest -m gpu tests/test_cuda.py``.
Everywhere else these tests skip.
"""

import pickle

import numpy as np
import pytest
import torch
from _helpers import SmallCNN, interrupt_after, tiny_images
from sklearn.exceptions import ConvergenceWarning

from skcce import Callback, CollisionClassifier, CollisionClustering

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings(f"ignore::{ConvergenceWarning.__module__}.ConvergenceWarning"),
]




class _Seen(Callback):
    """Records what the loop ran with."""

    def on_batch_end(self, trainer, batch, output):
        self.device = batch.x.device
        self.autocast = trainer.autocast_dtype

    def on_train_begin(self, trainer):
        self.model_device = next(trainer.model.parameters()).device


def _est(**kw):
    kw = {"model": SmallCNN, "batch_size": 8, "max_epochs": 2, "tol": None, "lr": 1e-3,
          "augment": "default", "random_state": 0, "device": "cuda"} | kw
    return CollisionClustering(2, **kw)


def test_deep_fit_predict_on_cuda_with_bf16_autocast():
    X, _ = tiny_images()
    seen = _Seen()
    est = _est(callbacks=[seen]).fit(X)
    assert seen.device.type == "cuda" and seen.model_device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert seen.autocast == expected
    assert all(p.device.type == "cpu" for p in est.model_.parameters())
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(est.predict(X), est.labels_)
    clf = CollisionClassifier(model=SmallCNN, batch_size=8, max_epochs=2, augment="default",
                              device="cuda", random_state=0).fit(X, tiny_images()[1])
    assert clf.predict(X).shape == (len(X),)


def test_image_batches_are_pinned_for_cuda():
    X, _ = tiny_images()
    est = _est()
    X, layout = est._validate_X(X, reset=True)
    source = est._source(X, layout)
    assert source.rows(np.arange(4)).is_pinned()
    features = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert not CollisionClustering(2, device="cuda")._source(features, None).rows(
        np.arange(2)).is_pinned()


def test_checkpoint_written_on_cuda_resumes_on_cpu(tmp_path, monkeypatch):
    X, _ = tiny_images()
    kw = {"max_epochs": 3, "checkpoint_dir": tmp_path}
    undo = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        _est(**kw).fit(X)
    undo()
    resumed = _est(device="cpu", **kw).fit(X)
    assert resumed.n_iter_ == 3
    assert np.isfinite(resumed.loss_curve_).all()


def test_pickle_across_devices():
    X, _ = tiny_images()
    est = _est().fit(X)
    on_gpu = est.predict_proba(X)
    loaded = pickle.loads(pickle.dumps(est))
    loaded.set_params(device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(X), on_gpu, atol=1e-4)
    back = pickle.loads(pickle.dumps(loaded.set_params(device="cuda")))
    np.testing.assert_allclose(back.predict_proba(X), on_gpu, atol=1e-6)


def _blobs():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=600, n_features=16, centers=4, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("params", [
    {},  # default: cross-neighbour pseudo-labels, EM on the host
    {"n_init": 2},
    {"loss": "temi"},
    {"model": "mlp", "augment": None},
])
def test_feature_vectors_on_cuda_match_the_cpu_clustering(params):
    from skcce.metrics import clustering_accuracy

    X, y = _blobs()
    seen = _Seen()
    kw = {"max_epochs": 5, "random_state": 0} | params
    gpu = CollisionClustering(4, device="cuda", callbacks=[seen], **kw).fit(X)
    cpu = CollisionClustering(4, device="cpu", **kw).fit(X)
    assert seen.device.type == "cuda"
    assert clustering_accuracy(y, gpu.labels_) >= clustering_accuracy(y, cpu.labels_) - 0.02
    assert clustering_accuracy(cpu.labels_, gpu.labels_) >= 0.98
    proba = gpu.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_partial_fit_on_cuda():
    X, _ = _blobs()
    est = CollisionClustering(4, device="cuda", random_state=0, augment=None)
    for chunk in np.array_split(X, 3):
        est.partial_fit(chunk)
    assert est.predict(X).shape == (600,)
    assert np.isfinite(est.loss_curve_).all()


def test_nccl_process_group_of_one_rank_fits_on_its_gpu(monkeypatch):
    """The nccl backend initialises and a fit inside the group runs on ``cuda:LOCAL_RANK``.

    Two nccl ranks need two GPUs (nccl refuses two ranks on one device); the
    two-rank equality is tested with gloo in ``test_distributed_torch.py``.
    """
    import socket

    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("torch built without nccl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1, device_id=torch.device("cuda", 0))
    try:
        X, _ = _blobs()
        seen = _Seen()
        est = CollisionClustering(4, device="cuda", max_epochs=3, random_state=0,
                                  callbacks=[seen]).fit(X)
        plain = CollisionClustering(4, device="cuda", max_epochs=3, random_state=0)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    assert seen.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(est.labels_, plain.fit(X).labels_)


def test_empty_cluster_relocation_on_cuda():
    # easy, unstandardized blobs empty clusters in the first epoch: the relocation
    # (sample forward, output row and Adam moments edited in place) runs on the GPU
    from sklearn.datasets import make_blobs

    from skcce._callbacks import EmptyClusterRelocation

    calls = []
    relocate = EmptyClusterRelocation._relocate

    def spy(self, trainer, layer, *args):
        calls.append(layer.weight.device.type)
        return relocate(self, trainer, layer, *args)

    X, _ = make_blobs(n_samples=3000, n_features=64, centers=10, random_state=0)
    X = X.astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EmptyClusterRelocation, "_relocate", spy)
        est = CollisionClustering(10, max_epochs=6, random_state=0, device="cuda").fit(X)
    assert calls and set(calls) == {"cuda"}
    assert (est.cluster_sizes_ > 0).all()
