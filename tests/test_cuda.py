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
    assert proba.shape == (32, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(est.predict(X), est.labels_)
    clf = CollisionClassifier(model=SmallCNN, batch_size=8, max_epochs=2, augment="default",
                              device="cuda", random_state=0).fit(X, tiny_images()[1])
    assert clf.predict(X).shape == (32,)


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
