"""scikit-learn's estimator checks on both estimators, with tiny epoch counts and no exceptions."""

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcce import CollisionClassifier, CollisionClustering


@parametrize_with_checks(
    [CollisionClustering(n_clusters=3, max_epochs=40, lr=0.05, batch_size=64, device="cpu"),
     CollisionClassifier(max_epochs=20, batch_size=32, device="cpu", random_state=0)],
    expected_failed_checks=lambda estimator: {},
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
