"""Weak supervision: clustering with a few known labels.

``CollisionClustering.fit(X, y)`` with ``y = -1`` on unlabeled rows adds
Shannon's cross-entropy on the labeled rows to the self-labeling loss (the
paper's section 5.3); cluster ids then are the label ids. This script keeps
10%, 5% and 1% of the labels of scikit-learn's digits (at least one per
class), trains on a training split and reports test accuracy, next to the
same linear model trained with Shannon's cross-entropy on the labeled rows
only ("only seeds" in the
paper's Table 4).

Run::

    python examples/weak_supervision.py [--quick]

``--quick`` (or ``SKCCE_QUICK=1``) runs one label ratio for a few epochs.
"""

import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClassifier, CollisionClustering

QUICK = "--quick" in sys.argv[1:] or os.environ.get("SKCCE_QUICK") == "1"


def partial_labels(y, fraction, rng):
    """Copy of ``y`` with all but ``fraction`` of each class set to -1 (at least one kept)."""
    partial = np.full(y.shape, -1, dtype=np.int64)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        keep = rng.choice(rows, size=max(1, round(fraction * rows.size)), replace=False)
        partial[keep] = label
    return partial


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                        random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    epochs = 5 if QUICK else 60
    rng = np.random.default_rng(0)
    print(f"{'labels':>7} {'n labeled':>10} {'only seeds':>11} {'+ CCE':>7}")
    for fraction in (0.05,) if QUICK else (0.1, 0.05, 0.01):
        y_partial = partial_labels(y_train, fraction, rng)
        labeled = y_partial >= 0
        # "Only seeds": the same linear softmax model, Shannon's cross-entropy on the labeled
        # rows only.
        seeds = CollisionClassifier(loss="shannon", max_epochs=epochs, batch_size=64,
                                    random_state=0)
        seeds.fit(X_train[labeled], y_partial[labeled])
        weak = CollisionClustering(n_clusters=10, max_epochs=epochs, random_state=0)
        weak.fit(X_train, y_partial)
        print(f"{fraction:>7.0%} {labeled.sum():>10d} "
              f"{np.mean(seeds.predict(X_test) == y_test):>11.3f} "
              f"{np.mean(weak.predict(X_test) == y_test):>7.3f}")


if __name__ == "__main__":
    main()
