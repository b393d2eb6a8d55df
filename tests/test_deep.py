"""Data set lookup, and CollisionClustering on images through the shared training loop."""

import numpy as np
import pytest
import torch
from _helpers import SmallCNN, interrupt_after, tiny_images
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from skcce import CollisionClustering
from skcce._training import Trainer
from skcce.datasets import (
    MNIST_FILE,
    DataNotFoundError,
    find_data_file,
    load_mnist,
)


def _fake_mnist(folder, n=5):
    path = folder / MNIST_FILE
    np.savez(path, X=np.zeros((n, 784), np.uint8), y=np.arange(n) % 10)
    return path


def test_data_lookup_order(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    _fake_mnist(env_dir, n=3)
    monkeypatch.setenv("SKCCE_DATA", str(env_dir))
    X, y = load_mnist()
    assert X.shape == (3, 784) and X.dtype == np.uint8 and y.shape == (3,)
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    path = _fake_mnist(explicit, n=4)
    assert load_mnist(explicit)[0].shape == (4, 784)  # a directory
    assert load_mnist(path)[0].shape == (4, 784)  # the file itself
    assert find_data_file(MNIST_FILE, explicit) == path


def test_missing_data_error_names_places(tmp_path, monkeypatch):
    monkeypatch.setenv("SKCCE_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="SKCCE_DATA") as info:
        load_mnist(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    np.savez(tmp_path / MNIST_FILE, X=np.zeros(2))
    with pytest.raises(ValueError, match="'X' and 'y'"):
        load_mnist(tmp_path)


def test_real_mnist_if_present():
    path = find_data_file(MNIST_FILE)
    if path is None:
        pytest.skip(f"{MNIST_FILE} not found (set SKCCE_DATA to the folder that holds it)")
    X, y = load_mnist()
    assert X.shape == (70000, 784) and X.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))


# --------------------------------------------------------------------------- images in the loop
# short fits on purpose: the max_epochs warning is expected
pytestmark = pytest.mark.filterwarnings(
    f"ignore::{ConvergenceWarning.__module__}.ConvergenceWarning")




def _vgg(**kw):
    kw = {"model": SmallCNN, "batch_size": 8, "max_epochs": 1, "tol": None, "lr": 1e-3,
          "augment": "default", "random_state": 0} | kw
    return CollisionClustering(2, **kw)


def test_vgg4_model_fits_images():
    X, _ = tiny_images(n=8)
    est = _vgg(model="vgg4", augment=None).fit(X)
    assert est.labels_.shape == (8,)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in est.model_.modules()) == 4


def test_vgg4_clustering_layouts_memmap_and_dataset(tmp_path):
    X, _ = tiny_images()
    est = _vgg().fit(X)
    proba = est.predict_proba(X)
    assert proba.shape == (24, 2) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert est.labels_.shape == (24,) and est.n_features_in_ == 784
    assert len(est.loss_curve_) == 1 and np.isfinite(est.loss_curve_[0])
    np.save(tmp_path / "x.npy", X.reshape(24, 784))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    flat = _vgg(image_shape=(1, 28, 28)).fit(mm)
    np.testing.assert_allclose(flat.predict_proba(mm), proba, atol=1e-5)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X[:, None].astype(np.float32) / 255))
    from_ds = _vgg().fit(dataset)
    np.testing.assert_allclose(from_ds.predict_proba(dataset), proba, atol=1e-5)
    with pytest.raises(ValueError, match="fitted on"):
        est.predict(np.zeros((2, 3, 32, 32), np.uint8))


@pytest.mark.parametrize("loss", ["imsat", "iic", "shannon"])
def test_baselines_run_through_the_same_loop(loss):
    X, _ = tiny_images()
    est = _vgg(loss=loss, **({"solver": "sinkhorn"} if loss == "shannon" else {})).fit(X)
    assert np.isfinite(est.loss_curve_).all()
    assert est.predict(X).shape == (24,)


def test_default_augment_on_images_is_self_augmentation(monkeypatch):
    from skcce import augment

    calls = []
    original = augment.SelfAugment.forward

    def counting(self, x, generator=None):
        calls.append(tuple(x.shape))
        return original(self, x, generator)

    monkeypatch.setattr(augment.SelfAugment, "forward", counting)
    X, _ = tiny_images(n=16)
    kw = {"model": SmallCNN, "batch_size": 8, "max_epochs": 1, "tol": None, "random_state": 0}
    est = CollisionClustering(2, **kw)  # augment left at its default
    assert est.augment == "cross_neighbors"
    est.fit(X)  # neighbours of pixels are not used: the default image transforms are
    assert calls == [(8, 1, 28, 28)] * 4  # 2 batches x n_augment=2


def test_custom_augment_callable_and_n_augment():
    X, _ = tiny_images()
    shapes = []

    def flip(x):
        shapes.append(tuple(x.shape))
        return x.flip(-1)

    _vgg(augment=flip, n_augment=3).fit(X)
    assert shapes[:3] == [(8, 1, 28, 28)] * 3 and len(shapes) == 3 * 3  # 3 batches x 3 copies


def test_weak_supervision_on_images():
    X, y = tiny_images(n=16)
    partial = y.copy()
    partial[::4] = -1  # a quarter unlabeled
    est = _vgg(max_epochs=6, augment=None, lr=1e-2).fit(X, partial)
    # cluster ids follow label ids: plain accuracy, no matching
    assert np.mean(est.predict(X) == y) > 0.9


def test_image_option_errors():
    features = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.raises(ValueError, match="transforms images"):
        CollisionClustering(2, augment="default").fit(features)
    with pytest.raises(ValueError, match=r"supported shapes are \(1, 28, 28\)"):
        _vgg(model="vgg4").fit(np.zeros((4, 3, 28, 28), np.uint8))


def test_clustering_checkpoint_resume(tmp_path, monkeypatch):
    X, _ = make_blobs(n_samples=120, centers=3, random_state=0)
    kw = {"lr": 0.05, "max_epochs": 4, "tol": None, "random_state": 0, "batch_size": 32}
    full = CollisionClustering(3, **kw).fit(X)
    undo = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        CollisionClustering(3, checkpoint_dir=tmp_path, **kw).fit(X)
    undo()
    resumed = CollisionClustering(3, checkpoint_dir=tmp_path, **kw).fit(X)
    assert resumed.n_iter_ == 4
    np.testing.assert_allclose(resumed.loss_curve_, full.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(resumed.predict_proba(X), full.predict_proba(X), atol=1e-6)


def test_autocast_path_runs_on_cpu():
    X, _ = tiny_images(n=8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    trainer = Trainer(model, None, batch_size=4)
    trainer.autocast_dtype = torch.bfloat16
    logits = trainer.forward(torch.from_numpy(X).float().div(255).unsqueeze(1))
    assert logits.dtype == torch.bfloat16 and logits.shape == (8, 3)


def test_iic_loss_hand_cases():
    from skcce._objectives import iic_loss

    k = 4
    onehot = torch.log(torch.eye(k).repeat(3, 1).clamp_min(1e-12))
    # identical, confident, balanced views: the mutual information is ln K
    assert float(iic_loss(onehot, onehot)) == pytest.approx(-np.log(k), abs=1e-4)
    uniform = torch.full((12, k), -np.log(k))
    # independent (uniform) predictions share no information
    assert float(iic_loss(uniform, uniform)) == pytest.approx(0.0, abs=1e-6)


def test_augmentation_baselines_on_feature_vectors_use_neighbours():
    from skcce.metrics import clustering_accuracy

    X, y = make_blobs(n_samples=150, centers=3, cluster_std=0.5, random_state=0)
    kw = {"lr": 0.05, "max_epochs": 15, "tol": None, "random_state": 0}
    # augment='cross_neighbors' (the default) gives neighbour views; lam=1 is the MI
    imsat = CollisionClustering(3, loss="imsat", lam=1.0, **kw)
    assert clustering_accuracy(y, imsat.fit_predict(X)) > 0.9
    iic = CollisionClustering(3, loss="iic", **kw).fit(X)
    # IIC maximizes I(z; z') <= ln 3: the loss falls towards -ln 3
    assert iic.loss_curve_[-1] < iic.loss_curve_[0] and iic.loss_curve_[-1] > -np.log(3) - 1e-4


def test_vgg4_on_real_mnist_keeps_every_cluster_alive():
    # From scratch, VGG-4 puts nearly every image in one cluster; with plain logits the
    # collision CE gives an empty cluster no gradient and training collapses. The
    # batch-normalized logits that backbones get by default must prevent that.
    path = find_data_file(MNIST_FILE)
    if path is None:
        pytest.skip(f"{MNIST_FILE} not found (set SKCCE_DATA to the folder that holds it)")
    X, y = load_mnist()
    rows = np.random.default_rng(0).choice(X.shape[0], 600, replace=False)
    est = CollisionClustering(10, model="vgg4", image_shape=(1, 28, 28), augment=None,
                              batch_size=100, max_epochs=2, tol=None, random_state=0)
    labels = est.fit_predict(X[rows])
    assert np.count_nonzero(est.cluster_sizes_) >= 8
    from skcce.metrics import clustering_accuracy
    assert clustering_accuracy(y[rows], labels) > 0.3
