"""What the two estimators share (skcce._base): parameters, checks, warnings, fitted state.

Each test here holds a defect of the estimator layer closed (issues 9 and 10).
"""

import inspect
import pickle
import warnings

import numpy as np
import pytest
import torch
from _helpers import SmallCNN, interrupt_after, tiny_images
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skcce import Callback, CollisionClassifier, CollisionClustering


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, centers=3, cluster_std=0.6, random_state=0)
    return StandardScaler().fit_transform(X), y


def _clu(**kw):
    return CollisionClustering(**{"n_clusters": 3, "lr": 0.05, "max_epochs": 3, "batch_size": 32,
                                  "device": "cpu", "random_state": 0, **kw})


def _clf(**kw):
    return CollisionClassifier(**{"batch_size": 32, "max_epochs": 3, "device": "cpu",
                                  "random_state": 0, **kw})


def _fit(est, X, y):
    return est.fit(X, y) if isinstance(est, CollisionClassifier) else est.fit(X)


def test_shared_parameters_have_the_same_defaults():
    a = inspect.signature(CollisionClustering).parameters
    b = inspect.signature(CollisionClassifier).parameters
    shared = sorted(set(a) & set(b) - {"loss", "augment"})  # those two differ in meaning
    assert {"max_epochs", "tol", "n_iter_no_change", "callbacks"} <= set(shared)
    assert {p: a[p].default for p in shared} == {p: b[p].default for p in shared}


# --------------------------------------------------------------------------- warnings
@pytest.mark.parametrize("make", [_clu, _clf])
def test_convergence_warning_points_at_the_callers_line(blobs, make):
    X, y = blobs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(make(max_epochs=1, tol=1e-4), X, y)
    mine = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert mine and all(w.filename == __file__ for w in mine), [w.filename for w in mine]


def test_classifier_warns_for_tol_zero(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match="max_epochs=1"):
        _clf(max_epochs=1, tol=0.0).fit(X, y)


def test_unconverged_solves_are_counted_and_reported_once(blobs):
    X, _ = blobs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = _clu(lam=100.0, solver_max_iter=2, augment=None).fit(X)
    assert est.n_solver_unconverged_ > 0
    mine = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(mine) == 1 and "solver_max_iter" in mine[0], mine
    assert f"{est.n_solver_unconverged_} of " in mine[0]
    converged = _clu(lam=0.1, solver_max_iter=1000, solver_tol=1e-3, augment=None).fit(X)
    assert converged.n_solver_unconverged_ == 0


# --------------------------------------------------------------------------- combinations
def test_shannon_with_em_fails_before_any_work(blobs, monkeypatch):
    import skcce.neighbors

    def no_graph(*args, **kwargs):
        raise AssertionError("the neighbour graph was built before the parameters were checked")

    monkeypatch.setattr(skcce.neighbors, "augmentation_neighbors", no_graph)
    with pytest.raises(ValueError, match="solver='em'.*loss='shannon'"):
        _clu(loss="shannon", solver="em").fit(blobs[0])


def test_fairness_with_sinkhorn_warns(blobs):
    with pytest.warns(UserWarning, match="fairness is ignored by solver='sinkhorn'"):
        _clu(loss="shannon", solver="sinkhorn", fairness="forward", augment=None).fit(blobs[0])


def test_lam_weighs_iic(blobs):
    X, _ = blobs
    one = _clu(loss="iic", lam=1.0).fit(X)
    half = _clu(loss="iic", lam=0.5).fit(X)
    assert one.loss_curve_ != half.loss_curve_


def test_refine_without_neighbours_warns_before_training(blobs):
    events = []

    class Record(Callback):
        def on_train_begin(self, trainer):
            events.append("train")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class WarnSeen(Callback):
            def on_train_begin(self, trainer):
                events.extend("warned" for w in caught if "refine_epochs" in str(w.message))

        _clu(augment=None, refine_epochs=2, callbacks=[WarnSeen(), Record()]).fit(blobs[0])
    assert events[:2] == ["warned", "train"]


@pytest.mark.parametrize("device", ["foo", "tpu", "cuda:x"])
@pytest.mark.parametrize("make", [_clu, _clf])
def test_unknown_device_is_a_value_error_listing_devices(blobs, device, make):
    X, y = blobs
    est = make(device=device)
    with pytest.raises(ValueError, match="device must be one of 'auto', 'cpu', 'cuda'"):
        _fit(est, X, y)
    assert not hasattr(est, "model_")


# --------------------------------------------------------------------------- degenerate
def test_lam_zero_is_the_unbalanced_objective():
    from sklearn.datasets import load_digits

    # ten clusters: some batch leaves a cluster empty, where 0 * KL = 0 * inf was NaN
    X = StandardScaler().fit_transform(load_digits().data[:600])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # no divergence
        est = _clu(n_clusters=10, lam=0.0, augment=None, max_epochs=4, batch_size=64).fit(X)
    assert est.n_iter_ == 4 and np.all(np.isfinite(est.loss_curve_))
    # without the fairness term the pseudo-labels are the one-hot argmax of sigma
    assert np.array_equal(est.pseudo_labels_.argmax(axis=1), est.labels_)
    assert np.allclose(est.pseudo_labels_.max(axis=1), 1.0)


def test_one_cluster_is_the_trivial_clustering(blobs):
    X, _ = blobs
    est = _clu(n_clusters=1).fit(X)
    assert np.array_equal(est.labels_, np.zeros(len(X)))
    assert np.array_equal(est.predict_proba(X), np.ones((len(X), 1)))
    assert np.array_equal(est.transform(X[:5]), np.ones((5, 1)))
    assert est.cluster_sizes_.tolist() == [len(X)] and est.score(X) == 0.0
    est.partial_fit(X[:10])
    assert est.labels_.shape == (10,)


def test_small_last_batch_joins_the_previous_one(blobs):
    # 130 rows in batches of 64 leave 2 rows for 3 clusters: SeLa's one-hot labels left a
    # cluster empty there, the fairness term became infinite and training stopped at once
    X, _ = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = _clu(loss="shannon", solver="sinkhorn", augment=None, batch_size=64,
                   max_epochs=4).fit(X[:130])
    assert est.n_iter_ == 4 and np.isfinite(est.loss_)


@pytest.mark.parametrize("method", ["warm_start", "partial_fit"])
def test_changing_n_clusters_on_a_warm_model_is_an_error(blobs, method):
    X, _ = blobs
    est = _clu(n_clusters=3, warm_start=True)
    est.partial_fit(X) if method == "partial_fit" else est.fit(X)
    est.set_params(n_clusters=4)
    with pytest.raises(ValueError, match="n_clusters=4 differs from the n_clusters=3"):
        est.partial_fit(X) if method == "partial_fit" else est.fit(X)
    assert est.predict_proba(X).shape == (len(X), 3) and len(est.cluster_sizes_) == 3


@pytest.mark.parametrize("make", [_clu, _clf])
def test_input_beyond_float32_range_is_rejected(blobs, make):
    X, y = blobs
    with pytest.raises(ValueError, match="beyond float32's range"):
        _fit(make(), X * 1e39, y)
    est = _fit(make(), X, y)
    with pytest.raises(ValueError, match="beyond float32's range"):
        est.predict_proba(X * 1e39)


@pytest.mark.parametrize("make", [_clu, _clf])
def test_random_state_none_leaves_numpy_global_rng_alone(blobs, make):
    X, y = blobs
    before = np.random.get_state()
    _fit(make(random_state=None), X, y)
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]


# --------------------------------------------------------------------------- fitted state
def test_classifier_failed_refit_keeps_previous_fit(blobs):
    X, y = blobs
    clf = _clf().fit(X, y)
    expected = clf.predict_proba(X)
    with pytest.raises(ValueError):
        clf.fit(np.hstack([X, X]), np.zeros(len(X)))  # one class only: fails after validation
    assert clf.n_features_in_ == 2
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


@pytest.mark.parametrize("make", [_clu, _clf])
def test_ctrl_c_keeps_the_model_and_is_re_raised(blobs, make, monkeypatch):
    X, y = blobs
    interrupt_after(monkeypatch, 1)
    est = make(max_epochs=5)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        _fit(est, X, y)
    assert est.n_iter_ == 1 and np.isfinite(est.predict_proba(X)).all()


# --------------------------------------------------------------------------- callbacks
@pytest.mark.parametrize("make", [_clu, _clf])
def test_user_callbacks_log_and_stop_early(blobs, make):
    X, y = blobs

    class StopAfterTwo(Callback):
        def __init__(self):
            self.losses = []

        def on_epoch_end(self, trainer, record):
            self.losses.append(record.loss)
            trainer.stop_training = len(self.losses) == 2

    stop = StopAfterTwo()
    est = _fit(make(max_epochs=10, callbacks=[stop]), X, y)
    assert est.n_iter_ == 2 and est.loss_curve_ == stop.losses
    with pytest.raises(ValueError, match="Callback"):
        _fit(make(callbacks=[print]), X, y)


def test_progress_bar_only_when_verbose(blobs, capsys):
    X, _ = blobs
    _clu(verbose=0).fit(X)
    assert "epochs" not in capsys.readouterr().err
    _clu(verbose=1).fit(X)
    assert "epochs" in capsys.readouterr().err


def test_two_argument_augment_receives_the_generator():
    X, _ = tiny_images(n=16)
    seen = []

    def flip(x, generator):
        seen.append(generator)
        mask = torch.rand(len(x), generator=generator) < 0.5
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)

    kw = {"model": SmallCNN, "batch_size": 8, "max_epochs": 1, "augment": flip,
          "random_state": 0, "device": "cpu"}
    a = CollisionClustering(2, **kw).fit(X)
    assert seen and all(isinstance(g, torch.Generator) for g in seen)
    b = CollisionClustering(2, **kw).fit(X)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


# --------------------------------------------------------------------------- neighbours
def test_precomputed_neighbors_give_the_same_fit(blobs):
    from skcce.neighbors import augmentation_neighbors

    X, _ = blobs
    graph = augmentation_neighbors(X, 5, random_state=0)
    a = _clu().fit(X)
    b = _clu().fit(X, neighbors=graph)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(_clu().fit_predict(X, neighbors=graph), b.labels_)


@pytest.mark.parametrize("graph, match", [
    (np.zeros((5, 2), int), r"shape \(n_samples, k\) = \(150, k\)"),
    (np.full((150, 2), 150), r"\[0, 150\)"),
    (np.full((150, 2), 0.5), "integer"),
    (np.arange(150)[:, None], "itself"),
])
def test_bad_precomputed_neighbors(blobs, graph, match):
    with pytest.raises(ValueError, match=match):
        _clu().fit(blobs[0], neighbors=graph)
    with pytest.raises(ValueError, match="augment=None"):
        _clu(augment=None).fit(blobs[0], neighbors=np.ones((150, 1), int))


def test_neighbors_algorithm_parameter_is_validated(blobs):
    from sklearn.utils._param_validation import InvalidParameterError

    assert _clu(neighbors_algorithm="auto").fit(blobs[0]).n_iter_ == 3
    with pytest.raises(InvalidParameterError, match="neighbors_algorithm"):
        _clu(neighbors_algorithm="kd_tree").fit(blobs[0])


def test_pickle_keeps_callbacks_out_of_the_model(blobs):
    X, _ = blobs
    est = _clu(callbacks=[Callback()]).fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_checkpoint_resumes_with_user_callbacks(blobs, tmp_path, monkeypatch):
    X, _ = blobs
    undo = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        _clu(max_epochs=3, checkpoint_dir=tmp_path, callbacks=[Callback()]).fit(X)
    undo()
    resumed = _clu(max_epochs=3, checkpoint_dir=tmp_path, callbacks=[Callback()]).fit(X)
    assert resumed.n_iter_ == 3


@pytest.mark.parametrize("name", ["skcce.CollisionClustering", "skcce.CollisionClassifier",
                                  "skcce.CollisionClustering.fit", "skcce.Callback"])
def test_docstrings_are_valid_numpydoc_at_the_source(name):
    validate = pytest.importorskip("numpydoc.validate").validate
    import skcce

    obj = skcce
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    assert "{shared:" not in obj.__doc__ and "\\\n" not in obj.__doc__
    ignored = {"GL08", "SA01", "EX01", "ES01", "RT02", "SA04"}
    errors = [e for e in validate(name)["errors"] if e[0] not in ignored]
    assert errors == []
