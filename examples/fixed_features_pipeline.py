"""Cluster fixed feature vectors with a scikit-learn Pipeline.

``StandardScaler -> PCA -> CollisionClustering`` on scikit-learn's digits
(8x8 images flattened to 64 features, shipped with scikit-learn), compared
with ``KMeans(n_init=10)`` on the same standardized features. Accuracy is
measured after Hungarian matching of clusters to classes.

Swap ``X`` for your own (n_samples, n_features) array, e.g. ResNet-50
embeddings (see ``resnet50_features.py``).

Run::

    python examples/fixed_features_pipeline.py [--quick]

``--quick`` (or ``SKCCE_QUICK=1``) trains for a few epochs only.
"""

import os
import sys
import time

from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering
from skcce.metrics import clustering_accuracy

QUICK = "--quick" in sys.argv[1:] or os.environ.get("SKCCE_QUICK") == "1"


def main():
    X, y = load_digits(return_X_y=True)
    cce = make_pipeline(
        StandardScaler(),
        PCA(n_components=32, random_state=0),
        CollisionClustering(n_clusters=10, max_epochs=5 if QUICK else 50, random_state=0),
    )
    kmeans = make_pipeline(StandardScaler(), KMeans(n_clusters=10, n_init=10, random_state=0))
    for name, model in (("CollisionClustering", cce), ("KMeans", kmeans)):
        start = time.perf_counter()
        labels = model.fit_predict(X)
        seconds = time.perf_counter() - start
        print(f"{name:>20}: accuracy {clustering_accuracy(y, labels):.3f}  "
              f"NMI {normalized_mutual_info_score(y, labels):.3f}  ({seconds:.1f} s)")
    est = cce[-1]
    print(f"cluster sizes: {est.cluster_sizes_.tolist()}; epochs run: {est.n_iter_}")
    # New points are assigned by predict (the argmax of the trained softmax model).
    print("first five test assignments:", cce.predict(X[:5]).tolist())


if __name__ == "__main__":
    main()
