"""skcce: scikit-learn compatible self-labeled clustering with collision cross-entropy.

Public names are imported lazily (PEP 562), so ``import skcce`` is cheap and
the numpy/Numba solvers can be used without importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    # losses
    "collision_cross_entropy": "skcce.losses",
    "shannon_cross_entropy": "skcce.losses",
    "CollisionCrossEntropyLoss": "skcce.losses",
    # pseudo-label solvers
    "solve_pseudo_labels": "skcce.solvers",
    "PseudoLabelResult": "skcce.solvers",
    "frank_wolfe_gap": "skcce.solvers",
    "pseudo_label_objective": "skcce.solvers",
    # metrics
    "clustering_accuracy": "skcce.metrics",
    "many_to_one_accuracy": "skcce.metrics",
    "hungarian_match": "skcce.metrics",
    "hungarian_accuracy_scorer": "skcce.metrics",
    "make_validity_scorer": "skcce.metrics",
    # label-free model selection
    "validity_score": "skcce.selection",
    "neighbor_information_score": "skcce.selection",
    "consensus_scores": "skcce.selection",
    "select_n_clusters": "skcce.selection",
    "merge_clusters": "skcce.selection",
    # estimators
    "CollisionClustering": "skcce.cluster",
    "CollisionClassifier": "skcce.classifier",
    "soft_targets": "skcce.classifier",
    "Callback": "skcce._callbacks",
    "CheckpointError": "skcce._checkpoint",
    # neighbours
    "knn_indices": "skcce.neighbors",
    "augmentation_neighbors": "skcce.neighbors",
    "check_neighbors": "skcce.neighbors",
    # images
    "extract_features": "skcce.features",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'skcce' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
