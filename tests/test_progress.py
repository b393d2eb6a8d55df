"""Progress bars: one per long phase with ``verbose > 0``, none with ``verbose=0``."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from skcce import CollisionClassifier, CollisionClustering
from skcce._progress import progress_bar


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(200, n_features=4, centers=3, random_state=0)
    return X, y


def _clustering(**kw):
    params = {"n_clusters": 3, "max_epochs": 2, "n_init": 2, "refine_epochs": 1,
              "batch_size": 32, "random_state": 0, "device": "cpu"}
    return CollisionClustering(**{**params, **kw})


def _fit(est, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse warnings of two-epoch fits are not the point
        return est.fit(X) if y is None else est.fit(X, y)


def _descriptions(err):
    """The label of every bar drawn on stderr (tqdm redraws with carriage returns)."""
    return {m.group(1) for m in re.finditer(r"(?:^|[\r\n])\s*([a-z][\w /]*?): +\d+%", err)}


def test_every_phase_of_a_fit_has_a_bar(blobs, capsys):
    X, _ = blobs
    est = _fit(_clustering(verbose=1), X)
    err = capsys.readouterr().err
    shown = _descriptions(err)
    expected = {"exact neighbours", "restarts"}
    for i in (1, 2):
        expected |= {f"restart {i}/2 {phase}"
                     for phase in ("epochs", "refine targets", "refine", "evaluate",
                                   "evaluate loss")}
    assert expected <= shown, sorted(expected - shown)
    # tqdm's elapsed time, ETA and rate: "[00:00<00:00, 69.61epoch/s, loss=...]"
    assert re.search(r"restart 2/2 epochs: +100%[^\r\n]*\[\d\d:\d\d<\d\d:\d\d, "
                     r"[\d.]+(epoch/s|s/epoch)", err)
    est.predict(X)
    assert "predict" in _descriptions(capsys.readouterr().err)


def test_one_restart_has_no_restart_bar(blobs, capsys):
    X, _ = blobs
    _fit(_clustering(n_init=1, refine_epochs=0, verbose=1), X)
    shown = _descriptions(capsys.readouterr().err)
    assert {"epochs", "evaluate", "evaluate loss"} <= shown
    assert not any("restart" in d or "refine" in d for d in shown)


def test_nothing_on_stderr_without_verbose(blobs, capsys):
    X, y = blobs
    est = _fit(_clustering(verbose=0), X)
    est.predict(X)
    est.partial_fit(X)
    _fit(CollisionClassifier(max_epochs=2, random_state=0, device="cpu"), X, y).predict(X)
    assert capsys.readouterr().err == ""


def test_bars_change_no_result(blobs, capsys):
    X, _ = blobs
    quiet = _fit(_clustering(verbose=0), X)
    loud = _fit(_clustering(verbose=1), X)
    capsys.readouterr()
    np.testing.assert_array_equal(quiet.labels_, loud.labels_)
    assert quiet.loss_curve_ == loud.loss_curve_ and quiet.loss_ == loud.loss_
    np.testing.assert_array_equal(quiet.init_scores_, loud.init_scores_)
    np.testing.assert_array_equal(quiet.predict_proba(X), loud.predict_proba(X))


def test_classifier_shows_epochs_and_predict(blobs, capsys):
    X, y = blobs
    clf = _fit(CollisionClassifier(max_epochs=2, random_state=0, device="cpu", verbose=1), X, y)
    clf.predict(X)
    assert {"epochs", "predict"} <= _descriptions(capsys.readouterr().err)


def test_progress_bar_is_silent_unless_verbose(capsys):
    with progress_bar(range(3), verbose=0, desc="quiet") as bar:
        assert list(bar) == [0, 1, 2]
        bar.set_postfix(loss="1")
        bar.update(1)
    assert capsys.readouterr().err == ""
    with progress_bar(range(3), verbose=1, desc="loud", unit="batch") as bar:
        assert list(bar) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "loud" in err and "batch/s" in err


def test_only_the_helper_makes_tqdm_bars():
    package = Path(__file__).resolve().parents[1] / "skcce"
    users = sorted(p.name for p in package.glob("*.py") if "import tqdm" in p.read_text()
                   or "from tqdm" in p.read_text())
    assert users == ["_progress.py"]
