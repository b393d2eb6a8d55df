"""Tune ``lam`` with GridSearchCV and the Hungarian-matched accuracy scorer.

``lam`` weighs the fairness term KL(u || mean y) that keeps clusters balanced.
When a labeled validation sample exists, choose it like any scikit-learn
hyper-parameter: each fold fits on part of the data and scores the clusters
that ``predict`` gives the held-out part, after matching clusters to classes
(``skcce.metrics.hungarian_accuracy_scorer``).

Run::

    python examples/grid_search_lam.py [--quick]

``--quick`` (or ``SKCCE_QUICK=1``) uses a smaller grid, 2 folds and a few epochs.
"""

import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering
from skcce.metrics import hungarian_accuracy_scorer

QUICK = "--quick" in sys.argv[1:] or os.environ.get("SKCCE_QUICK") == "1"


def main():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(
        StandardScaler(),
        CollisionClustering(n_clusters=10, max_epochs=3 if QUICK else 40, random_state=0),
    )
    lams = [0.1, 1.0] if QUICK else [0.1, 0.4, 1.0, 2.0, 4.0, 8.0, 16.0]
    grid = {"collisionclustering__lam": lams}
    search = GridSearchCV(pipe, grid, scoring=hungarian_accuracy_scorer, cv=2 if QUICK else 3,
                          n_jobs=1 if QUICK else 2)
    search.fit(X, y)
    means = search.cv_results_["mean_test_score"]
    stds = search.cv_results_["std_test_score"]
    for lam, mean, std in zip(grid["collisionclustering__lam"], means, stds, strict=True):
        print(f"lam={lam:<5g} held-out accuracy {mean:.3f} +- {std:.3f}")
    best = search.best_params_["collisionclustering__lam"]
    print(f"best lam: {best} (accuracy {search.best_score_:.3f})")
    sizes = np.bincount(search.best_estimator_.predict(X), minlength=10)
    print(f"cluster sizes of the refitted best model: {sizes.tolist()}")


if __name__ == "__main__":
    main()
