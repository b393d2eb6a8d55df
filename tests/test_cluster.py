"""CollisionClustering: behaviour, scikit-learn integration, reproducibility, bad input."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skcce._base as base_module
from skcce import Callback, CollisionClustering
from skcce.metrics import clustering_accuracy, hungarian_accuracy_scorer


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=240, centers=3, n_features=5, cluster_std=1.0, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _est(**kw):
    params = dict(n_clusters=3, lr=0.05, max_epochs=15, batch_size=64, device="cpu",
                  random_state=0)
    params.update(kw)
    return CollisionClustering(**params)


def test_fit_attributes_and_consistency(blobs):
    X, y = blobs
    est = _est().fit(X)
    assert est.labels_.shape == (240,) and est.labels_.dtype == np.int64
    assert est.pseudo_labels_.shape == (240, 3)
    assert np.allclose(est.pseudo_labels_.sum(axis=1), 1, atol=1e-4)
    assert est.n_iter_ == len(est.loss_curve_) >= 1
    assert est.cluster_sizes_.sum() == 240
    assert np.array_equal(est.cluster_sizes_, np.bincount(est.labels_, minlength=3))
    assert est.n_features_in_ == 5
    assert all(p.device.type == "cpu" for p in est.model_.parameters())
    assert np.array_equal(est.predict(X), est.labels_)
    assert clustering_accuracy(y, est.labels_) > 0.95


def test_fit_predict_equals_fit_then_predict(blobs):
    X, _ = blobs
    labels = _est().fit_predict(X)
    assert np.array_equal(labels, _est().fit(X).predict(X))


def test_predict_proba_transform_and_score(blobs):
    X, _ = blobs
    est = _est().fit(X)
    proba = est.predict_proba(X)
    assert proba.shape == (240, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-10)
    assert np.array_equal(proba, est.transform(X))
    assert np.array_equal(proba.argmax(axis=1), est.predict(X))
    from skcce.selection import neighbor_information_score

    # label-free score
    assert est.score(X) == neighbor_information_score(est.labels_, X, random_state=0)
    assert est._loss_score(X) == pytest.approx(-est.loss_, rel=1e-6)
    assert est.get_feature_names_out().tolist() == [f"collisionclustering{i}" for i in range(3)]


def test_float32_stays_float32_without_copy(blobs, monkeypatch):
    X = np.ascontiguousarray(blobs[0], dtype=np.float32)
    seen = []
    original = base_module.ArraySource

    def spy(Xa, y=None):
        seen.append(Xa)
        return original(Xa, y)

    monkeypatch.setattr(base_module, "ArraySource", spy)
    est = _est(max_epochs=2).fit(X)
    assert np.shares_memory(seen[0], X)
    assert est.predict_proba(X).dtype == np.float32
    assert est.transform(X.astype(np.float64)).dtype == np.float64


@pytest.mark.parametrize("kw", [
    dict(),
    dict(augment=None),
    dict(augment=None, fairness="forward"),
    dict(augment=None, loss="shannon", fairness="forward"),
    dict(augment=None, loss="shannon", solver="sinkhorn"),
    dict(augment=None, loss="mutual_information", lam=1.0),
    dict(augment="neighbors", n_neighbors=3),
    dict(model="mlp", model_params={"hidden_layer_sizes": (16,)}, lr=0.01),
])
def test_methods_cluster_easy_blobs(blobs, kw):
    X, y = blobs
    est = _est(max_epochs=20, **kw).fit(X)
    assert np.all(np.isfinite(est.loss_curve_))
    assert clustering_accuracy(y, est.labels_) > 0.9, kw


def test_seed_reproducibility_and_global_rng_untouched(blobs):
    X, _ = blobs
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    kw = dict(model="mlp", model_params={"hidden_layer_sizes": (8,)}, augment="neighbors",
              n_neighbors=3, max_epochs=3, random_state=7)
    a = _est(**kw).fit(X)
    b = _est(**kw).fit(X)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    after = np.random.get_state()
    assert np.array_equal(np_state[1], after[1]) and np_state[2] == after[2]
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ == b.loss_curve_
    c = _est(**{**kw, "random_state": 8}).fit(X)
    assert c.loss_curve_ != a.loss_curve_


def test_n_init_keeps_lowest_loss(blobs):
    X, _ = blobs
    one = _est(max_epochs=3, n_init=1).fit(X)
    three = _est(max_epochs=3, n_init=3).fit(X)
    assert three.loss_ <= one.loss_ + 1e-12


def test_n_init_two_keeps_the_restart_with_the_higher_score(blobs):
    X, _ = blobs
    est = _est(max_epochs=3, n_init=2, random_state=4).fit(X)
    assert est.init_scores_.shape == (2,) and np.all(np.isfinite(est.init_scores_))
    # each restart was rated by the score GridSearchCV uses; the kept one has the higher
    assert est.score(X) == pytest.approx(est.init_scores_.max())


def test_warm_start_continues(blobs):
    X, _ = blobs
    est = _est(max_epochs=3, warm_start=True).fit(X)
    first = est.loss_curve_[0]
    weights = est.model_.linear.weight.detach().clone()
    est.fit(X)
    assert est.loss_curve_[0] < first
    assert not torch.equal(weights, est.model_.linear.weight.detach())


def test_partial_fit(blobs):
    X, _ = blobs
    est = _est()
    est.partial_fit(X[:120])
    assert est.n_iter_ == 1 and est.labels_.shape == (120,)
    est.partial_fit(X[120:])
    assert est.n_iter_ == 2 and len(est.loss_curve_) == 2
    assert est.labels_.shape == (120,) and est.predict(X).shape == (240,)
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :3])


def test_weak_supervision_fixes_cluster_ids(blobs):
    X, y = blobs
    target = (y + 1) % 3  # ids the unsupervised run would not pick by itself
    partial = np.full_like(target, -1)
    rng = np.random.default_rng(0)
    labeled = rng.choice(len(y), size=24, replace=False)
    partial[labeled] = target[labeled]
    est = _est(max_epochs=20).fit(X, partial)
    assert np.mean(est.labels_ == target) > 0.95


def test_y_without_unlabeled_marker_is_ignored(blobs):
    X, y = blobs
    a = _est(max_epochs=3).fit(X)
    b = _est(max_epochs=3).fit(X, (y + 1) % 3)
    assert np.array_equal(a.labels_, b.labels_)


def test_keyboard_interrupt_keeps_model(blobs):
    class Interrupt(Callback):
        def on_batch_end(self, trainer, batch, output):
            if len(trainer.history) == 2:
                raise KeyboardInterrupt

    X, _ = blobs
    est = _est(max_epochs=50, n_init=3, callbacks=[Interrupt()])
    # the caller's loop must stop too: the interrupt is re-raised after the model is kept
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        est.fit(X)
    assert est.n_iter_ == 2
    proba = est.predict_proba(X)
    assert np.all(np.isfinite(proba)) and est.labels_.shape == (240,)


def test_cross_neighbors_rejects_mutual_information():
    with pytest.raises(ValueError, match="cross_neighbors"):
        _est(loss="mutual_information").fit(np.eye(4))
    assert _est(loss="mutual_information", augment=None, n_clusters=2).fit(np.eye(4)).n_iter_ > 0


def test_collapse_warning():
    X = np.zeros((30, 2))
    with pytest.warns(ConvergenceWarning, match="collapse"):
        _est(max_epochs=2).fit(X)


def test_max_epochs_warning(blobs):
    with pytest.warns(ConvergenceWarning, match="max_epochs"):
        _est(max_epochs=1, tol=1e-4).fit(blobs[0])


@pytest.mark.parametrize("X, kw, match", [
    (np.array([[0.0, np.nan], [1, 2], [3, 4], [5, 6]]), {}, "NaN"),
    (np.array([[0.0, np.inf], [1, 2], [3, 4], [5, 6]]), {}, "infinity"),
    (np.arange(8.0), {}, "2D array"),
    (np.zeros((4, 2, 2)), {}, "dim"),
    (np.eye(4), {"n_clusters": 0}, "n_clusters"),
    (np.eye(4), {"n_clusters": 5}, "n_clusters=5 must be <= n_samples=4"),
    (np.eye(4), {"n_clusters": 2, "prior": [0.5, 0.3]}, "sum to 1"),
    (np.eye(4), {"n_clusters": 2, "prior": [0.5, 0.25, 0.25]}, "shape"),
    (np.eye(4), {"n_clusters": 2, "prior": [1.5, -0.5]}, "non-negative"),
    (np.eye(4), {"n_clusters": 2, "prior": [np.nan, 0.5]}, "finite"),
    (np.eye(4), {"lam": -1.0}, "lam"),
    (np.eye(4), {"model": "nope"}, "model"),
])
def test_bad_input_raises_and_leaves_nothing_fitted(X, kw, match):
    est = _est(**{"n_clusters": 2, **kw})
    with pytest.raises(ValueError, match=match):
        est.fit(X)
    assert not hasattr(est, "n_features_in_") and not hasattr(est, "labels_")


@pytest.mark.parametrize("y, match", [
    ([0, -1, 2, 0], r"\[-1, n_clusters=2\)"),
    ([0, -2, 1, 0], r"\[-1, n_clusters=2\)"),
    ([0, -1, 1], "entries"),
    ([0.5, -1, 1, 0], "integers"),
])
def test_bad_partial_labels(y, match):
    est = _est(n_clusters=2)
    with pytest.raises(ValueError, match=match):
        est.fit(np.eye(4), np.asarray(y))
    assert not hasattr(est, "n_features_in_")


def test_failed_refit_keeps_previous_fit(blobs):
    X, _ = blobs
    est = _est(max_epochs=2).fit(X)
    labels = est.labels_.copy()
    with pytest.raises(ValueError):
        est.fit(X[:2])  # fewer samples than clusters
    assert np.array_equal(est.labels_, labels) and est.n_features_in_ == 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        _est(device="cuda").fit(np.eye(4))


def test_clone_pickle_joblib_and_device_switch(blobs, tmp_path):
    X, _ = blobs
    est = _est(max_epochs=3).fit(X)
    fresh = clone(est)
    assert not hasattr(fresh, "model_") and fresh.get_params() == est.get_params()
    expected = est.predict_proba(X)
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.predict_proba(X), expected)
    joblib.dump(est, tmp_path / "est.joblib")
    loaded = joblib.load(tmp_path / "est.joblib")
    loaded.set_params(device="auto")  # CUDA when the loading machine has one
    assert np.allclose(loaded.predict_proba(X), expected, atol=1e-5)
    assert np.array_equal(loaded.predict(X), est.predict(X))
    assert all(p.device.type == "cpu" for p in loaded.model_.parameters())


def test_pipeline_and_grid_search(digits):
    X, y = digits
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(), PCA(n_components=20, random_state=0),
                         CollisionClustering(n_clusters=10, max_epochs=5, lr=0.01,
                                             device="cpu", random_state=0))
    labels = pipe.fit_predict(X)
    # PCA's fit_transform and transform differ in the last bits: allow rare argmax flips
    assert labels.shape == (400,) and np.mean(labels == pipe.predict(X)) > 0.98
    search = GridSearchCV(pipe, {"collisionclustering__lam": [0.1, 1.0]}, cv=2,
                          scoring=hungarian_accuracy_scorer, n_jobs=2)
    search.fit(X, y)
    assert search.best_params_["collisionclustering__lam"] in (0.1, 1.0)
    assert 0.2 < search.best_score_ <= 1.0


def test_digits_default_comparable_to_kmeans(digits):
    X, y = digits
    est = CollisionClustering(n_clusters=10, random_state=0, device="cpu").fit(X)
    acc = clustering_accuracy(y, est.labels_)
    km = clustering_accuracy(y, KMeans(10, n_init=10, random_state=0).fit_predict(X))
    assert acc > 0.5  # chance is ~0.1; the largest class alone is ~0.1
    assert acc >= km - 0.02, (acc, km)


def test_cluster_sizes_history_tracks_epochs():
    X, _ = make_blobs(n_samples=120, centers=3, random_state=0)
    est = CollisionClustering(3, max_epochs=4, tol=None, augment=None, random_state=0).fit(X)
    hist = est.cluster_sizes_history_
    assert hist.shape == (est.n_iter_, 3)
    assert (hist.sum(axis=1) == 120).all()
    est.partial_fit(X)
    assert est.cluster_sizes_history_.shape == (est.n_iter_, 3)


# ----------------------------------------------------------------- refinement stage
def _edge_agreement(labels, neighbors):
    return float((labels[neighbors] == labels[:, None]).mean())


def test_refine_smooths_labels_over_the_neighbour_graph(digits):
    from skcce.neighbors import knn_indices

    X, y = digits
    base = CollisionClustering(10, max_epochs=10, random_state=0, device="cpu").fit(X)
    refined = CollisionClustering(10, max_epochs=10, refine_epochs=3, random_state=0,
                                  device="cpu").fit(X)
    # same main run, then the refinement moved the model towards the smoothed targets
    assert refined.n_iter_ == base.n_iter_ == 10
    assert not np.array_equal(refined.predict_proba(X), base.predict_proba(X))
    neighbors = knn_indices(X, 5)
    assert _edge_agreement(refined.labels_, neighbors) > _edge_agreement(base.labels_, neighbors)
    # still inductive and consistent: predict on the training rows gives labels_
    assert np.array_equal(refined.predict(X), refined.labels_)
    assert np.allclose(refined.predict_proba(X).sum(axis=1), 1, atol=1e-5)


def test_refine_keeps_partial_labels(blobs):
    X, y = blobs
    partial = np.full_like(y, -1)
    partial[::4] = y[::4]
    est = _est(refine_epochs=3).fit(X, partial)
    labeled = partial >= 0
    assert np.mean(est.labels_[labeled] == y[labeled]) > 0.95


def test_refine_without_neighbours_warns_and_is_ignored(blobs):
    X, _ = blobs
    with pytest.warns(UserWarning, match="refine_epochs"):
        est = _est(augment=None, refine_epochs=2).fit(X)
    plain = _est(augment=None).fit(X)
    assert np.allclose(est.predict_proba(X), plain.predict_proba(X))


def test_refine_epochs_must_be_non_negative(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="refine_epochs"):
        _est(refine_epochs=-1).fit(X)


def test_three_restarts_refine_once_on_their_aligned_consensus(blobs, monkeypatch):
    from skcce.selection import aligned_mean_proba

    X, _ = blobs
    calls, probas = [], []
    refine = CollisionClustering._refine
    evaluate = CollisionClustering._evaluate

    def spy_refine(self, trainer, source, neighbors, labeled, images, prefix="", proba=None):
        calls.append((prefix, proba))
        return refine(self, trainer, source, neighbors, labeled, images, prefix, proba)

    def spy_evaluate(self, trainer, objective, source, prefix=""):
        out = evaluate(self, trainer, objective, source, prefix)
        if not prefix.startswith("consensus"):
            probas.append(out[1].double().exp().numpy())
        return out

    monkeypatch.setattr(CollisionClustering, "_refine", spy_refine)
    monkeypatch.setattr(CollisionClustering, "_evaluate", spy_evaluate)
    est = _est(n_init=3, refine_epochs=2).fit(X)
    # the restarts are not refined one by one: one refinement, of the kept restart
    assert len(calls) == 1 and calls[0][0] == "consensus "
    kept = int(np.nanargmax(est.init_scores_))
    assert np.allclose(calls[0][1], aligned_mean_proba(probas, reference=kept))
    # the fitted model is the refined one, evaluated again
    assert np.array_equal(est.predict(X), est.labels_)
    assert not np.allclose(est.predict_proba(X), probas[kept], atol=1e-4)

    calls.clear()
    _est(n_init=2, refine_epochs=2).fit(X)  # fewer than three: each restart refines itself
    assert [prefix for prefix, _ in calls] == ["restart 1/2 ", "restart 2/2 "]
    assert all(proba is None for _, proba in calls)


# ----------------------------------------------------------------- empty clusters
def _easy_blobs(n=3000):
    # well separated, unstandardized: the predictions saturate in the first epoch and,
    # without relocation, clusters emptied then never come back (see EmptyClusterRelocation)
    X, y = make_blobs(n_samples=n, n_features=64, centers=10, random_state=0)
    return X.astype(np.float32), y


def test_default_finds_every_blob_on_easy_data():
    from skcce.metrics import clustering_accuracy

    X, y = _easy_blobs()
    est = CollisionClustering(10, max_epochs=6, random_state=0).fit(X)
    assert (est.cluster_sizes_ > 0).all()
    assert clustering_accuracy(y, est.labels_) == 1.0


def test_without_relocation_the_easy_blobs_collapse(monkeypatch):
    # the regression the relocation fixes: the same fit with the callback disabled
    from skcce._callbacks import EmptyClusterRelocation

    monkeypatch.setattr(EmptyClusterRelocation, "on_epoch_end", lambda self, t, r: None)
    X, _ = _easy_blobs()
    with pytest.warns(ConvergenceWarning, match="received no points"):
        est = CollisionClustering(10, max_epochs=6, random_state=0).fit(X)
    assert (est.cluster_sizes_ == 0).any()


def test_relocation_splits_the_largest_cluster_and_resets_its_moments():
    import torch

    from skcce._callbacks import EmptyClusterRelocation
    from skcce._sources import ArraySource
    from skcce._training import EpochRecord

    X = np.concatenate([np.full((50, 2), -5.0), np.full((50, 2), 5.0)]) + \
        np.random.default_rng(0).normal(scale=0.1, size=(100, 2))
    X = X.astype(np.float32)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():  # every row predicts cluster 0; cluster 1 is empty
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, -1.0]))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.from_numpy(X)).sum().backward()
    optimizer.step()

    class _Trainer:  # what the callback uses of a Trainer
        def __init__(self):
            self.model, self.optimizer = model, optimizer

        def forward(self, x):
            return self.model(x)

        def to_device(self, x):
            return x

    source = ArraySource(X)
    callback = EmptyClusterRelocation(source)
    record = EpochRecord(epoch=0, loss=1.0, cluster_sizes=np.array([100, 0]), n_batches=1,
                         duration=0.0)
    callback.on_epoch_end(_Trainer(), record)
    assert callback.n_relocated == 1
    with torch.no_grad():
        labels = model(torch.from_numpy(X)).argmax(dim=1).numpy()
    assert set(labels[:50]) != set(labels[50:])  # the two groups are now apart
    assert np.bincount(labels, minlength=2).min() == 50
    for p in (model.weight, model.bias):
        state = optimizer.state[p]
        assert torch.all(state["exp_avg"][1] == 0) and torch.all(state["exp_avg_sq"][1] == 0)
        assert torch.any(state["exp_avg_sq"][0] != 0)  # the other rows keep theirs
    # an epoch with no empty cluster changes nothing
    before = [p.detach().clone() for p in model.parameters()]
    callback.on_epoch_end(_Trainer(), EpochRecord(epoch=1, loss=1.0,
                                                  cluster_sizes=np.array([50, 50]),
                                                  n_batches=1, duration=0.0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("n_init", [1, 3])
def test_refine_with_temi_warns_and_is_ignored(blobs, n_init):
    # TEMI's model has several heads: refining it on K-column targets used to crash
    X, _ = blobs
    with pytest.warns(UserWarning, match="refine_epochs is not supported with loss='temi'"):
        est = _est(loss="temi", refine_epochs=2, n_init=n_init, max_epochs=3).fit(X)
    plain = _est(loss="temi", n_init=n_init, max_epochs=3).fit(X)
    assert np.allclose(est.predict_proba(X), plain.predict_proba(X))
