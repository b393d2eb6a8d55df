"""``CollisionClassifier``: supervised collision cross-entropy, for soft or noisy labels.

Collision cross-entropy :math:`H_2(y, \\sigma) = -\\ln \\sum_k y_k \\sigma_k`
(eq. 9) equals Shannon's for one-hot targets, but it weakens the training on
uncertain targets instead of teaching the network to copy their
uncertainty: a uniform target gives exactly zero gradient.  With the soft
targets :math:`\\hat y = \\eta u + (1-\\eta)\\,\\mathrm{onehot}(\\tilde y)` of
an observed, possibly corrupted label :math:`\\tilde y` (:func:`soft_targets`),
this makes the classifier robust to label noise (the paper's Figure 2).

The estimator trains in the same loop as :class:`~skcce.CollisionClustering`
(:mod:`skcce._training`), with the same model, image and device options.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from skcce._base import _BaseTorchEstimator, shared_docs
from skcce._objectives import SoftTargetObjective
from skcce._sources import TargetSource
from skcce._validation import seeds_from
from skcce.augment import AugmentViews, resolve_augment

__all__ = ["CollisionClassifier", "soft_targets"]


def soft_targets(y, n_classes=None, eta=0.0):
    """Soft targets :math:`\\hat y = \\eta u + (1 - \\eta)\\,\\mathrm{onehot}(y)` (paper, Fig. 2).

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Observed class indices in ``[0, n_classes)``.
    n_classes : int, default=None
        Number of classes K; ``max(y) + 1`` when None.
    eta : float or array-like of shape (n_samples,), default=0.0
        Weight of the uniform distribution :math:`u`, in [0, 1]; one value
        for all rows or one per row.

    Returns
    -------
    targets : ndarray of shape (n_samples, n_classes), dtype float64
        Rows on the probability simplex.

    Examples
    --------
    >>> from skcce import soft_targets
    >>> soft_targets([0, 2], n_classes=3, eta=0.3).round(3).tolist()
    [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]
    """
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"y must be a 1-D array of class indices, got shape {y.shape}, "
                         f"dtype {y.dtype}")
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y.size else 1
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    eta = np.asarray(eta, dtype=np.float64)
    if eta.ndim > 1 or (eta.ndim == 1 and eta.shape != y.shape):
        raise ValueError(f"eta must be a number or one value per sample, got shape {eta.shape}")
    if np.any(eta < 0) or np.any(eta > 1):
        raise ValueError("eta must lie in [0, 1]")
    onehot = np.zeros((y.size, n_classes))
    onehot[np.arange(y.size), y] = 1.0
    eta = eta.reshape(-1, 1) if eta.ndim == 1 else eta
    return eta / n_classes + (1.0 - eta) * onehot


@shared_docs
class CollisionClassifier(ClassifierMixin, _BaseTorchEstimator):
    """Classifier trained with collision cross-entropy on hard, soft or noisy labels.

    Minimizes the mean :math:`H_2(\\hat y_i, \\sigma(x_i))` (eq. 9) over the
    training rows with mini-batch gradient descent, in the training loop
    shared with :class:`~skcce.CollisionClustering`.  ``loss='shannon'``
    trains with Shannon's cross-entropy instead, for comparison; both agree
    on one-hot targets.

    Images may be given as ``(n, C, H, W)``, ``(n, H, W, C)`` or
    ``(n, H, W)`` arrays (uint8 0..255 or float 0..1, numpy memmaps read one
    batch at a time), as flattened rows with ``image_shape``, or as a torch
    Dataset (then ``y`` is passed separately).

    Parameters
    ----------
    loss : {'collision', 'shannon'}, default='collision'
        The cross-entropy.
    {shared: model, model_params, image_shape}
    augment : None, 'default' or callable, default=None
        Image self-augmentation: ``'default'`` is
        :class:`skcce.augment.SelfAugment` (flip, rotation, color); a
        callable ``augment(x)`` or ``augment(x, generator)`` maps a float
        ``(n, C, H, W)`` batch to a new batch.
    {shared: n_augment, optimizer, lr, weight_decay, optimizer_params, batch_size, max_epochs}
    {shared: tol, n_iter_no_change, device, checkpoint_dir, n_jobs, random_state, verbose}
    {shared: callbacks}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (``arange(K)`` when fitted on soft targets).
    model_ : torch.nn.Module
        The trained network, on the CPU.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Features (or pixels per image) seen in ``fit``.

    See Also
    --------
    CollisionClustering : The clustering estimator on the same loop.

    Notes
    -----
    .. versionchanged:: 0.2
       ``max_epochs``, ``tol`` and ``n_iter_no_change`` default to 40, None
       and 10 (were 50, 1e-4 and 5), the defaults of
       :class:`~skcce.CollisionClustering`; pass the old values to keep the
       old early stop.

    Ctrl-C (``KeyboardInterrupt``) during ``fit`` keeps the model trained so
    far, with every fitted attribute set, and then re-raises.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skcce import CollisionClassifier, soft_targets
    >>> X, y = make_blobs(n_samples=200, centers=3, random_state=0)
    >>> X = StandardScaler().fit_transform(X)
    >>> clf = CollisionClassifier(batch_size=32, max_epochs=30, random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.fit(X, soft_targets(y, 3, eta=0.5)).score(X, y) > 0.9  # soft targets
    True
    """

    _parameter_constraints: dict = {
        **_BaseTorchEstimator._parameter_constraints,
        "loss": [StrOptions({"collision", "shannon"})],
        "augment": [StrOptions({"default"}), callable, None],
    }

    def __init__(self, loss="collision", *, model="linear", model_params=None, image_shape=None,
                 augment=None, n_augment=2, optimizer="adam", lr=1e-2, weight_decay=0.0,
                 optimizer_params=None, batch_size=256, max_epochs=40, tol=None,
                 n_iter_no_change=10, device="auto", checkpoint_dir=None, n_jobs=None,
                 random_state=None, verbose=0, callbacks=None):
        self.loss = loss
        self.model = model
        self.model_params = model_params
        self.image_shape = image_shape
        self.augment = augment
        self.n_augment = n_augment
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_params = optimizer_params
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def _encode_targets(self, y, n_samples):
        """(n, K) float32 targets and ``classes_`` from int labels or soft target rows."""
        if y is None:
            raise ValueError(
                "CollisionClassifier requires y to be passed, but the target y is None")
        y_arr = np.asarray(y)
        if y_arr.ndim == 2 and y_arr.shape[1] > 1 and np.issubdtype(y_arr.dtype, np.floating):
            if y_arr.shape[0] != n_samples:
                raise ValueError(f"y has {y_arr.shape[0]} rows but X has {n_samples} samples")
            if not np.isfinite(y_arr).all() or y_arr.min() < 0:
                raise ValueError("soft targets must be finite and non-negative")
            if not np.allclose(y_arr.sum(axis=1), 1.0, atol=1e-4):
                raise ValueError("each row of soft targets y must sum to 1")
            return y_arr.astype(np.float32), np.arange(y_arr.shape[1])
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = column_or_1d(y_arr, warn=True)
        if y_arr.ndim != 1 or y_arr.shape[0] != n_samples:
            raise ValueError(
                f"y must be labels of shape ({n_samples},) or soft targets of shape "
                f"({n_samples}, n_classes), got shape {y_arr.shape}")
        check_classification_targets(y_arr)
        classes, encoded = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"CollisionClassifier needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0]!r}")
        return soft_targets(encoded, len(classes)).astype(np.float32), classes

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train on ``X`` with labels or soft targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Feature vectors, or images (see ``image_shape``).
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            Class labels, or soft target rows on the probability simplex
            (e.g. from :func:`soft_targets`).

        Returns
        -------
        self : CollisionClassifier
            The fitted estimator.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClassifier
        >>> X, y = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> clf = CollisionClassifier(max_epochs=5, random_state=0).fit(X, y)
        >>> clf.classes_.tolist(), clf.n_iter_
        ([0, 1, 2], 5)
        """
        with self._fit_state():
            images = self._is_images(X)
            self._check_params_vs_input(X, images)
            X, layout = self._validate_X(X, reset=True)
            source = self._source(X, layout)
            targets, classes = self._encode_targets(y, len(source))
            augment = resolve_augment(self.augment) if images else None
            trainer, result = self._train(
                X, TargetSource(source, targets), seed=seeds_from(self.random_state, 1)[0],
                objective=SoftTargetObjective(self.loss), n_outputs=len(classes),
                images=images,
                views=None if augment is None else AugmentViews(augment, self.n_augment))
            self._keep_training_state(trainer)
            self.classes_ = classes
            self.loss_curve_ = [r.loss for r in trainer.history]
            self.n_iter_ = len(trainer.history)
        self._end_fit(result)
        return self

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Data, as in :meth:`fit`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), dtype float32
            Log-probabilities of the classes.
        """
        return self._predict_log_proba(X)[0].numpy()

    def predict_proba(self, X):
        """Class probabilities :math:`\\sigma(x)`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Data, as in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), dtype float64
            Rows sum to 1.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClassifier
        >>> X, y = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> clf = CollisionClassifier(max_epochs=5, random_state=0).fit(X, y)
        >>> clf.predict_proba(X[:2]).sum(axis=1).round(6).tolist()
        [1.0, 1.0]
        """
        proba = np.exp(self.predict_log_proba(X).astype(np.float64))
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Data, as in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Entries of :attr:`classes_`.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClassifier
        >>> X, y = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> clf = CollisionClassifier(max_epochs=5, random_state=0).fit(X, y)
        >>> clf.predict(X[:4]).shape
        (4,)
        """
        log_proba = self.predict_log_proba(X)  # checks that the estimator is fitted
        return self.classes_[log_proba.argmax(axis=1)]
