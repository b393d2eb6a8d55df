"""scikit-learn's estimator checks on CollisionClustering, with tiny epoch counts."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skcce.cluster import CollisionClustering

_N1 = "sets n_clusters=1, which is rejected: one cluster has no self-labeling problem"

EXPECTED_FAILED_CHECKS = {
    "check_dont_overwrite_parameters": _N1,
    "check_fit2d_predict1d": _N1,
    "check_methods_subset_invariance": _N1,
    "check_fit2d_1feature": _N1,
}


def _expected_failed(estimator):
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(
    [CollisionClustering(n_clusters=3, max_epochs=40, lr=0.05, batch_size=64, device="cpu")],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
