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

import copy
import logging
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from skcce._checkpoint import estimator_checkpoint
from skcce._objectives import Objective
from skcce._training import (
    TRAINING_PARAMETER_CONSTRAINTS,
    ArraySource,
    StepOutput,
    Trainer,
    optimizer_factory,
    resolve_device,
)
from skcce._validation import seeds_from
from skcce.augment import AugmentViews, is_image_input, prepare_images, resolve_augment
from skcce.augment import image_source as _image_source
from skcce.losses import collision_cross_entropy, shannon_cross_entropy
from skcce.networks import build_model

__all__ = ["CollisionClassifier", "soft_targets"]

logger = logging.getLogger(__name__)



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


class SoftTargetObjective(Objective):
    """Mean :math:`H_2(\\hat y, \\sigma)` (eq. 9) or :math:`H(\\hat y, \\sigma)` to given targets.

    The batch's ``y`` holds the (n, K) targets.  ``prior`` is all zeros: a
    class that no row predicts is not a collapse to warn about here.

    Parameters
    ----------
    loss : {'collision', 'shannon'}
        The cross-entropy.
    n_classes : int
        K.
    """

    def __init__(self, loss, n_classes):
        self.loss = loss
        self.prior = np.zeros(n_classes)

    def __call__(self, trainer, batch) -> StepOutput:
        log_proba = trainer.log_proba(batch)
        ce = collision_cross_entropy if self.loss == "collision" else shannon_cross_entropy
        loss = ce(log_proba, batch.y)
        return StepOutput(loss=loss, value=float(loss.detach()), log_proba=log_proba.detach())


class TargetSource:
    """A data source whose ``labels`` are float (n, K) target rows."""

    def __init__(self, inner, targets):
        self.inner = inner
        self.targets = targets

    def __len__(self):
        return len(self.inner)

    @property
    def input_shape(self):
        return self.inner.input_shape

    def rows(self, indices):
        return self.inner.rows(indices)

    def labels(self, indices):
        return torch.from_numpy(self.targets[np.asarray(indices)])


class CollisionClassifier(ClassifierMixin, BaseEstimator):
    """Classifier trained with collision cross-entropy on hard, soft or noisy labels.

    Minimizes the mean :math:`H_2(\\hat y_i, \\sigma(x_i))` (eq. 9) over the
    training rows with mini-batch gradient descent, in the training loop
    shared with :class:`~skcce.CollisionClustering`.  ``loss='shannon'``
    trains with Shannon's cross-entropy instead, for comparison; both agree
    on one-hot targets.

    Parameters
    ----------
    loss : {'collision', 'shannon'}, default='collision'
        The cross-entropy.
    model : {'linear', 'mlp', 'vgg4', 'resnet18', 'resnet50'}, nn.Module class, callable \
or nn.Module, default='linear'
        The network, as in :class:`~skcce.CollisionClustering`; the
        convolutional ones take images.
    model_params : dict, default=None
        Keyword arguments of the model (e.g. ``{'weights': path}`` for a
        ResNet, ``{'hidden_layer_sizes': (256,)}`` for ``'mlp'``).
    image_shape : tuple of int, default=None
        ``(C, H, W)`` of flattened 2-D image rows, so the estimator fits in
        a Pipeline.  Images may also be given as ``(n, C, H, W)``,
        ``(n, H, W, C)`` or ``(n, H, W)`` arrays (uint8 0..255 or float
        0..1, numpy memmaps read one batch at a time) or as a torch Dataset
        (then ``y`` is passed separately).
    augment : None, 'default' or callable, default=None
        Image self-augmentation: ``'default'`` is
        :class:`skcce.augment.SelfAugment` (flip, rotation, color); a
        callable maps a float ``(n, C, H, W)`` batch to a new batch.
    n_augment : int, default=2
        Augmented copies whose :math:`\\sigma` are averaged.
    optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class, default='adam'
        Optimizer.
    lr : float, default=1e-2
        Learning rate.
    weight_decay : float, default=0.0
        L2 penalty.
    optimizer_params : dict, default=None
        Extra optimizer arguments.
    batch_size : int, default=256
        Rows per mini-batch.
    max_epochs : int, default=50
        Maximum number of passes over the data.
    tol : float or None, default=1e-4
        Early stop when the epoch loss has not decreased by ``tol`` for
        ``n_iter_no_change`` epochs; None trains for ``max_epochs``.
    n_iter_no_change : int, default=5
        Patience of the early stop.
    device : {'auto', 'cpu', 'cuda'} or torch.device, default='auto'
        Where to train ('auto': CUDA when available).
    checkpoint_dir : str or os.PathLike, default=None
        Save the training state there after every epoch; a new ``fit`` with
        the same settings and data shape resumes from it.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, shuffling and augmentation through local
        generators.
    verbose : int, default=0
        > 0 shows a progress bar over epochs.

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

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skcce import CollisionClassifier, soft_targets
    >>> X, y = make_blobs(n_samples=200, centers=3, random_state=0)
    >>> X = StandardScaler().fit_transform(X)
    >>> clf = CollisionClassifier(batch_size=32, max_epochs=30, tol=None, random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.fit(X, soft_targets(y, 3, eta=0.5)).score(X, y) > 0.9  # soft targets
    True
    """

    _parameter_constraints: dict = {
        "loss": [StrOptions({"collision", "shannon"})],
        **TRAINING_PARAMETER_CONSTRAINTS,
        "augment": [StrOptions({"default"}), callable, None],
    }

    def __init__(self, loss="collision", *, model="linear", model_params=None, image_shape=None,
                 augment=None, n_augment=2, optimizer="adam", lr=1e-2, weight_decay=0.0,
                 optimizer_params=None, batch_size=256, max_epochs=50, tol=1e-4,
                 n_iter_no_change=5, device="auto", checkpoint_dir=None, random_state=None,
                 verbose=0):
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
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ inputs
    def _images(self, X):
        return is_image_input(X, self.model, self.image_shape)

    def _check_X(self, X, reset):
        """Return ``(X, source)``: a validated array (or Dataset) and its loop data source."""
        if self._images(X):
            X, layout = prepare_images(self, X, image_shape=self.image_shape, reset=reset)
            pin = resolve_device(self.device).type == "cuda"
            return X, _image_source(X, layout, pin_memory=pin)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=reset)
        return X, ArraySource(X)

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
        return soft_targets(encoded, len(classes)).astype(np.float32), classes

    # ------------------------------------------------------------------ fitting
    def _make_trainer(self, model, objective, generator, device):
        optimizer = optimizer_factory(self.optimizer, self.lr, self.weight_decay,
                                      self.optimizer_params)
        augment = resolve_augment(self.augment) if self._fit_images else None
        views = None if augment is None else AugmentViews(augment, self.n_augment)
        return Trainer(model, objective, optimizer=optimizer, batch_size=self.batch_size,
                       max_epochs=self.max_epochs, device=device, generator=generator,
                       views=views, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
                       verbose=self.verbose)

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
        """
        self._fit_images = self._images(X)
        if self.augment is not None and not self._fit_images:
            raise ValueError("augment transforms images; pass images (or image_shape=(C, H, W)) "
                             "or leave augment=None for feature vectors")
        X, source = self._check_X(X, reset=True)
        targets, classes = self._encode_targets(y, len(source))
        if len(classes) < 2:
            raise ValueError(
                f"CollisionClassifier needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0]!r}")
        device = resolve_device(self.device)
        generator = torch.Generator().manual_seed(seeds_from(self.random_state, 1)[0])
        model = build_model(self.model, source.input_shape, len(classes), generator=generator,
                            model_params=self.model_params)
        trainer = self._make_trainer(model, SoftTargetObjective(self.loss, len(classes)),
                                     generator, device)
        epochs = self.max_epochs
        checkpoint = estimator_checkpoint(self, len(source))
        if checkpoint is not None:
            trainer.callbacks.append(checkpoint)
            epochs -= checkpoint.restore(trainer)
        result = trainer.fit(TargetSource(source, targets), epochs=max(epochs, 0))
        self.model_ = trainer.state_copy()
        self.classes_ = classes
        self.loss_curve_ = [r.loss for r in trainer.history]
        self.n_iter_ = len(trainer.history)
        if not (result.converged or result.interrupted or result.diverged) and self.tol:
            warnings.warn(
                f"CollisionClassifier stopped at max_epochs={self.max_epochs} before the loss "
                f"settled (tol={self.tol}); increase max_epochs or tol.",
                ConvergenceWarning, stacklevel=2)
        return self

    # ------------------------------------------------------------------ inference
    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Data, as in :meth:`fit`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), dtype float32
        """
        check_is_fitted(self, "model_")
        X, source = self._check_X(X, reset=False)
        device = resolve_device(self.device)
        model = self.model_ if device.type == "cpu" else copy.deepcopy(self.model_)
        trainer = Trainer(model, None, batch_size=max(self.batch_size, 1024), device=device)
        return trainer.predict_log_proba(source).numpy()

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
        """
        log_proba = self.predict_log_proba(X)
        return self.classes_[log_proba.argmax(axis=1)]
