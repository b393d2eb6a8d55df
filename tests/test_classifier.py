"""CollisionClassifier and soft_targets."""


import numpy as np
import pytest
import torch
from _helpers import SmallCNN, interrupt_after, tiny_images
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClassifier, soft_targets


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, centers=3, cluster_std=0.6, random_state=0)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _clf(**kw):
    kw = {"batch_size": 32, "max_epochs": 5, "tol": None, "random_state": 0} | kw
    return CollisionClassifier(**kw)


def test_soft_targets_hand_computed():
    t = soft_targets(np.array([1, 0]), n_classes=4, eta=0.4)
    np.testing.assert_allclose(t, [[0.1, 0.7, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]])
    np.testing.assert_allclose(soft_targets([2]), [[0, 0, 1]])
    per_row = soft_targets([0, 1], 2, eta=[0.0, 1.0])
    np.testing.assert_allclose(per_row, [[1, 0], [0.5, 0.5]])
    assert np.allclose(soft_targets([0, 1, 2], 3, 0.9).sum(axis=1), 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5],), "class indices"),
        (([3], 3), r"\[0, 3\)"),
        (([0], 2, 1.5), r"eta must lie in \[0, 1\]"),
        (([0, 1], 2, [0.1]), "one value per sample"),
    ],
)
def test_soft_targets_errors(args, message):
    with pytest.raises(ValueError, match=message):
        soft_targets(*args)


def test_collision_equals_shannon_on_hard_labels(blobs):
    X, y = blobs
    a = _clf(loss="collision").fit(X, y)
    b = _clf(loss="shannon").fit(X, soft_targets(y, 3))
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-4)


def test_uniform_targets_do_not_train_collision(blobs):
    X, _ = blobs
    uniform = np.full((len(X), 3), 1 / 3)
    collision = _clf(loss="collision").fit(X, uniform)
    shannon = _clf(loss="shannon").fit(X, uniform)
    untrained = _clf(loss="collision", max_epochs=1, lr=1e-12).fit(X, uniform)
    # zero gradient for a uniform target (eq. 9): the weights stay at their initial values
    for p, q in zip(collision.model_.parameters(), untrained.model_.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-8)
    # Shannon's cross-entropy instead teaches the network to copy the uniform target
    assert shannon.predict_proba(X).max() < collision.predict_proba(X).max()


def test_labels_and_classes(blobs):
    X, y = blobs
    names = np.array(["ant", "bee", "cat"])[y]
    clf = _clf(max_epochs=20).fit(X, names)
    assert list(clf.classes_) == ["ant", "bee", "cat"]
    assert clf.score(X, names) > 0.9
    soft = _clf(max_epochs=20).fit(X, soft_targets(y, 3, eta=0.3))
    assert list(soft.classes_) == [0, 1, 2]
    assert soft.score(X, y) > 0.9
    assert soft.n_iter_ == 20 and len(soft.loss_curve_) == 20


@pytest.mark.parametrize(
    "y, message",
    [
        (np.full((150, 3), 0.5), "sum to 1"),
        (-np.eye(3)[np.zeros(150, int)], "non-negative"),
        (np.zeros((150, 2, 2)), "labels of shape"),
        (np.zeros(150), "at least 2 classes"),
        (np.linspace(0, 1, 150), "Unknown label type"),
    ],
)
def test_bad_targets(blobs, y, message):
    with pytest.raises(ValueError, match=message):
        _clf().fit(blobs[0], y)


def test_augment_needs_images(blobs):
    with pytest.raises(ValueError, match="transforms images"):
        _clf(augment="default").fit(*blobs)


def test_seed_reproducibility(blobs):
    X, y = blobs
    a = _clf(random_state=3).fit(X, y).predict_proba(X)
    b = _clf(random_state=3).fit(X, y).predict_proba(X)
    c = _clf(random_state=4).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)




def test_images_memmap_and_flat(tmp_path):
    X, y = tiny_images()
    kw = {"model": SmallCNN, "max_epochs": 2, "batch_size": 8, "lr": 1e-3}
    clf = _clf(**kw).fit(X, y)
    assert clf.n_features_in_ == 784
    proba = clf.predict_proba(X)
    assert proba.shape == (24, 2) and np.allclose(proba.sum(axis=1), 1)
    path = tmp_path / "x.npy"
    np.save(path, X.reshape(24, 784))
    mm = np.load(path, mmap_mode="r")
    flat = _clf(**kw, image_shape=(1, 28, 28)).fit(mm, y)
    # the same images as a flat memmap with image_shape train the same model
    np.testing.assert_allclose(flat.predict_proba(mm), proba, atol=1e-5)
    with pytest.raises(ValueError, match="fitted on"):
        clf.predict(np.zeros((2, 3, 32, 32), np.uint8))


def test_images_with_augmentation_and_dataset():
    X, y = tiny_images()
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X).unsqueeze(1), torch.zeros(24))
    kw = {"model": SmallCNN, "max_epochs": 1, "batch_size": 8, "augment": "default"}
    a = _clf(**kw).fit(dataset, y)
    b = _clf(**kw).fit(X, y)
    np.testing.assert_allclose(a.predict_proba(dataset), b.predict_proba(X), atol=1e-5)
    calls = []

    def my_augment(x):
        calls.append(x.shape)
        return x.flip(-1)

    _clf(**(kw | {"augment": my_augment, "n_augment": 3})).fit(X, y)
    assert len(calls) == 3 * 3 and calls[0] == (8, 1, 28, 28)  # 3 batches x 3 copies


def test_checkpoint_resume_matches_uninterrupted_run(blobs, tmp_path, monkeypatch):
    X, y = blobs
    full = _clf(max_epochs=4).fit(X, y)
    undo = interrupt_after(monkeypatch, 2)
    first = _clf(max_epochs=4, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        first.fit(X, y)
    assert first.n_iter_ == 2  # the model trained so far is kept
    undo()
    resumed = _clf(max_epochs=4, checkpoint_dir=tmp_path).fit(X, y)
    assert resumed.n_iter_ == 4
    np.testing.assert_allclose(resumed.loss_curve_, full.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(resumed.predict_proba(X), full.predict_proba(X), atol=1e-6)
    assert list(tmp_path.iterdir()) == []  # a finished run removes its checkpoint
