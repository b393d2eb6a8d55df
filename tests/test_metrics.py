import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV

from skcce.metrics import (
    clustering_accuracy,
    contingency,
    hungarian_accuracy_scorer,
    hungarian_match,
    many_to_one_accuracy,
)


def test_hand_made_case():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [1, 1, 0, 0, 0, 2]
    # best matching: 1->0 (2 hits), 0->1 (2 hits), 2->2 (1 hit)
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    assert hungarian_match(y_true, y_pred) == {1: 0, 0: 1, 2: 2}


def test_perfect_relabelling_scores_one():
    y = np.repeat(np.arange(5), 7)
    assert clustering_accuracy(y, (y + 3) % 5) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_permutation_invariance(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=200)
    y_pred = rng.integers(0, 4, size=200)
    perm = rng.permutation(4)
    a = clustering_accuracy(y_true, y_pred)
    assert clustering_accuracy(y_true, perm[y_pred]) == pytest.approx(a)
    assert clustering_accuracy(perm[y_true], y_pred) == pytest.approx(a)
    m2o = many_to_one_accuracy(y_true, y_pred)
    assert many_to_one_accuracy(y_true, perm[y_pred]) == pytest.approx(m2o)


def test_more_clusters_than_classes():
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 2, 2]
    # one-to-one: cluster 2 -> class 1 (2 hits), cluster 0 or 1 -> class 0 (1 hit)
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(0.75)
    assert many_to_one_accuracy(y_true, y_pred) == 1.0
    mapping = hungarian_match(y_true, y_pred)
    assert len(mapping) == 2 and mapping[2] == 1


def test_fewer_clusters_than_classes():
    y_true = [0, 1, 2, 2]
    y_pred = [0, 0, 0, 0]
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(0.5)
    assert hungarian_match(y_true, y_pred) == {0: 2}


def test_string_labels_and_contingency():
    table, classes, clusters = contingency(["a", "b", "b"], [3, 3, 9])
    assert table.tolist() == [[1, 0], [1, 1]]
    assert classes.tolist() == ["a", "b"] and clusters.tolist() == [3, 9]
    assert clustering_accuracy(["a", "b", "b"], [3, 3, 9]) == pytest.approx(2 / 3)


def test_bad_input():
    with pytest.raises(ValueError):
        clustering_accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        clustering_accuracy([], [])


def test_many_to_one_never_below_one_to_one():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true = rng.integers(0, 3, 50)
        y_pred = rng.integers(0, 6, 50)
        assert many_to_one_accuracy(y_true, y_pred) >= clustering_accuracy(y_true, y_pred)


def test_scorer_in_grid_search():
    X, y = make_blobs(n_samples=150, centers=3, random_state=0)
    grid = GridSearchCV(
        KMeans(n_init=1, random_state=0),
        {"n_clusters": [2, 3]},
        scoring=hungarian_accuracy_scorer,
        cv=3,
    )
    grid.fit(X, y)
    assert grid.best_params_ == {"n_clusters": 3}
    assert grid.best_score_ > 0.9
    assert hungarian_accuracy_scorer(grid.best_estimator_, X, y) == pytest.approx(
        clustering_accuracy(y, grid.best_estimator_.predict(X))
    )
