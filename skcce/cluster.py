"""``CollisionClustering``: self-labeled clustering of feature vectors with collision cross-entropy.

The estimator is thin: it validates, builds the model (:mod:`skcce.networks`)
and the batch objective (:mod:`skcce._objectives`), and hands both to the one
training loop (:mod:`skcce._training`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from skcce import _objectives as obj
from skcce._checkpoint import estimator_checkpoint
from skcce._training import (
    TRAINING_PARAMETER_CONSTRAINTS,
    ArraySource,
    Trainer,
    fixed_order,
    optimizer_factory,
    resolve_device,
)
from skcce._validation import check_n_clusters, check_partial_labels, check_prior, seeds_from
from skcce.augment import (
    AugmentViews,
    DatasetSource,
    ImageSource,
    check_images,
    image_source,
    is_dataset,
    is_image_input,
    prepare_images,
    resolve_augment,
)
from skcce.networks import BACKBONES, build_model

__all__ = ["CollisionClustering"]

logger = logging.getLogger(__name__)

_FITTED = ("labels_", "pseudo_labels_", "n_iter_", "loss_curve_", "loss_", "converged_",
           "cluster_sizes_", "cluster_sizes_history_", "model_", "n_features_in_",
           "feature_names_in_")


@dataclass
class _Run:
    """One training run (one of the ``n_init`` restarts)."""

    loss: float
    result: object
    model: nn.Module
    log_proba: torch.Tensor
    pseudo_labels: torch.Tensor | None
    optimizer_state: dict
    generator_state: torch.Tensor


#: Weight of the neighbours' mean prediction in the targets of ``refine_epochs``.
_REFINE_SMOOTHING = 0.9


def _state_to_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _state_to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_state_to_cpu(v) for v in state)
    return copy.deepcopy(state)


class CollisionClustering(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin,
                          BaseEstimator):
    r"""Self-labeled clustering with collision cross-entropy (Zhang & Boykov, Algorithm 1).

    A softmax model :math:`\sigma = \mathrm{softmax}(f(x))` is trained on
    mini-batches.  For each batch, pseudo-labels :math:`y` are solved for the
    detached :math:`\sigma` (warm-started from it) and the model takes one
    gradient step on :math:`\overline{H_2(y,\sigma)}` with :math:`y` fixed,
    which minimizes

    .. math:: \overline{H_2(y, \sigma)} + \lambda\, KL(u \,\|\, \bar y)   \qquad (11)

    Clusters are the argmax of :math:`\sigma`, so new points are assigned
    by :meth:`predict`.  Standardize the features first (e.g. with
    :class:`~sklearn.preprocessing.StandardScaler`).

    The baselines of the paper run in the same loop, selected by ``loss``,
    ``fairness`` and ``solver``:

    ====================  ====================================================
    method                parameters
    ====================  ====================================================
    CCE (default)         ``loss='collision', fairness='reverse'`` (EM)
    CCE, forward KL       ``loss='collision', fairness='forward'`` (PGD)
    MI-ADM                ``loss='shannon', fairness='forward'``
    SeLa                  ``loss='shannon', solver='sinkhorn'``
    MI-GD                 ``loss='mutual_information'`` (no pseudo-labels)
    MI-D (IMSAT)          ``loss='imsat'`` (MI-GD + augmentation consistency)
    IIC                   ``loss='iic'`` (MI between two augmentations)
    ====================  ====================================================

    Images are clustered with a convolutional ``model`` (``'vgg4'``, the
    paper's VGG-4, or a ResNet) trained from scratch, with self-augmentation
    :math:`\sigma_i = \frac1T\sum_t \sigma(t(x_i))` (section 5.2): ``X``
    may be ``(n, C, H, W)``, ``(n, H, W, C)`` or ``(n, H, W)`` arrays (uint8
    or float in [0, 1]; numpy memmaps are read one batch at a time), 2-D rows
    with ``image_shape=(C, H, W)``, or a map-style ``torch.utils.data.Dataset``.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters K (>= 2).
    lam : float, default=1.0
        Fairness weight :math:`\lambda`, in the convention of
        :func:`skcce.solvers.solve_pseudo_labels` (the loss is a mean over
        the batch; the paper's "lambda = 100 at batch 250" is about 0.4).
    prior : array-like of shape (n_clusters,), default=None
        Target cluster proportions :math:`u`; uniform when None.
    loss : {'collision', 'shannon', 'mutual_information', 'imsat', 'iic'}, \
default='collision'
        Cross-entropy to the pseudo-labels (:math:`H_2`, ours, or Shannon's
        for MI-ADM / SeLa), MI-GD's mutual information, or the
        augmentation-based baselines IMSAT (MI-D) and IIC, which use the
        augmented copies of ``augment``.
    fairness : {'reverse', 'forward'}, default='reverse'
        :math:`KL(u\|\bar y)` (eq. 11) or :math:`KL(\bar y\|u)` (eq. 10).
    solver : {'auto', 'em', 'pgd', 'sinkhorn'}, default='auto'
        Pseudo-label solver; 'auto' is EM for the reverse form and PGD for
        the forward one.
    solver_max_iter : int, default=100
        Iteration cap of the solver on each batch.
    solver_tol : float, default=1e-4
        Stopping tolerance of the solver (its Frank-Wolfe gap for EM and PGD).
    model : {'linear', 'mlp', 'vgg4', 'resnet18', 'resnet50'}, nn.Module class or callable, \
default='linear'
        ``'linear'``: one linear layer, Kaiming init, zero bias (the paper);
        ``'mlp'``: hidden layers with BatchNorm and ReLU; ``'vgg4'``: the
        paper's VGG-4 (Table 7; images of shape (1, 28, 28), (3, 32, 32) or
        (3, 96, 96)); ``'resnet18'`` / ``'resnet50'``: torchvision ResNets
        (``model_params={'weights': ...}`` takes None, a torchvision weights
        name or a state_dict file); a class or factory is called as
        ``model(**model_params)``.  A model whose output width is not
        ``n_clusters`` gets a linear head.  Backbones get batch-normalized
        logits (``model_params={'logit_norm': False}`` turns that off): a
        network trained from scratch starts with nearly every image in one
        cluster, and under the collision cross-entropy an empty cluster
        receives no gradient, so without it deep mode collapses.
    model_params : dict, default=None
        Keyword arguments of the model, e.g. ``{'hidden_layer_sizes': (512,),
        'batch_norm': True}`` for ``'mlp'``.
    optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class, default='adam'
        Optimizer, created as ``optimizer(params, lr=lr, weight_decay=weight_decay,
        **optimizer_params)``.
    lr : float, default=1e-2
        Learning rate.
    weight_decay : float, default=0.0
        L2 penalty of the optimizer.
    optimizer_params : dict, default=None
        Extra keyword arguments of the optimizer (e.g. ``{'momentum': 0.9}``).
    batch_size : int, default=256
        Rows per mini-batch; the fairness term applies to each batch.
    max_epochs : int, default=40
        Maximum number of passes over the data. Chosen by the sweep in
        ``docs/benchmarks/defaults_sweep.md``: longer training helped on
        every dataset there, and 40 epochs still fit in less time than
        ``KMeans(n_init=10)`` on the feature sets measured.
    tol : float or None, default=None
        Early stop when the epoch loss has not decreased by ``tol`` for
        ``n_iter_no_change`` epochs, with a ConvergenceWarning when
        ``max_epochs`` comes first; None (the default) trains for exactly
        ``max_epochs``: with ``augment='cross_neighbors'`` the epoch loss
        is noisy, as neighbours are drawn at random.
    n_iter_no_change : int, default=10
        Patience of the early stop.
    n_init : int, default=1
        Number of restarts from different seeds; the one with the lowest
        final loss (:attr:`loss_`) is kept.
    augment : {'cross_neighbors', 'neighbors', 'default'}, callable or None, \
default='cross_neighbors'
        Feature-space self-augmentation with the ``n_neighbors`` nearest
        neighbours (computed once per fit): ``'neighbors'`` trains on
        :math:`\sigma_i` averaged with :math:`\sigma_j` of a random neighbour
        j; ``'cross_neighbors'`` solves :math:`y_i` from :math:`\sigma_j` and
        takes the cross-entropy on :math:`\sigma_i`, symmetrized over i and j
        (the default: it scored best on sklearn digits and on pretrained-CNN
        features of MNIST). ``'cross_neighbors'`` needs pseudo-labels, so
        ``loss='mutual_information'`` takes ``'neighbors'`` or None.
        On images, ``'default'`` (and, since pixel-space neighbours are not
        meaningful, also ``'neighbors'`` and ``'cross_neighbors'``) applies
        :class:`skcce.augment.SelfAugment` (random flip, rotation and color
        distortion, per image, on the training device); a callable maps a
        float ``(n, C, H, W)`` batch to an augmented batch; None turns
        augmentation off.
    n_neighbors : int, default=5
        Neighbours per point for ``augment`` (at most ``n_samples - 1`` are used).
    refine_epochs : int, default=0
        Epochs of a refinement stage after training, for feature vectors with
        neighbour augmentation: the predictions are smoothed over each
        point's neighbours, :math:`t_i = 0.1\,\sigma_i + 0.9\,\mathrm{mean}_{j \in N(i)}
        \sigma_j` (labeled rows keep their one-hot label), and the model is
        trained on the fixed soft targets :math:`t` by the collision
        cross-entropy, at a tenth of ``lr``. The model stays inductive:
        ``predict`` needs no neighbours. 0 turns it off; warm starts (and
        ``partial_fit`` calls after the first) skip it. ``refine_epochs=5``
        helped on the pretrained-CNN features and on MNIST pixels, and made no
        difference on digits; see the Table 2 reproduction page.
    n_augment : int, default=2
        Augmented copies T per image whose :math:`\sigma` are averaged.
    image_shape : tuple of int, default=None
        ``(C, H, W)`` of 2-D rows that hold flattened images (so the
        estimator fits in a Pipeline).
    checkpoint_dir : str or os.PathLike, default=None
        Save the model, optimizer, epoch and random-generator states there
        after every epoch; a later ``fit`` with the same settings and data
        size resumes from it (``max_epochs``, ``tol`` and ``device`` may
        differ), so a crash or ``KeyboardInterrupt`` loses at most one epoch.
    device : {'auto', 'cpu', 'cuda'} or torch.device, default='auto'
        Where to train and predict ('auto': CUDA when available).  The
        fitted :attr:`model_` is kept on the CPU, so a fitted estimator
        loads anywhere.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the neighbour draws
        through local generators; global random states are never touched.
    verbose : int, default=0
        > 0 shows a progress bar over epochs with the loss and cluster sizes.
    warm_start : bool, default=False
        Continue from the previous fit's model (and optimizer) instead of a
        new initialization; ``n_init`` is then ignored.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training row (argmax of :math:`\sigma`).
    pseudo_labels_ : ndarray of shape (n_samples, n_clusters) or None
        Pseudo-labels :math:`y` of the training rows for the final model
        (None for ``loss='mutual_information'``).
    n_iter_ : int
        Epochs run (of the kept restart).
    loss_curve_ : list of float
        Mean loss of each epoch, fairness term included.
    loss_ : float
        Final self-labeling loss on the training data, used by ``n_init``.
    converged_ : bool
        Whether the early stop was reached before ``max_epochs``.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Number of training rows in each cluster.
    cluster_sizes_history_ : ndarray of shape (n_iter_, n_clusters)
        Per epoch, the number of training rows whose prediction fell in each
        cluster during that epoch (what the progress bar shows).
    model_ : torch.nn.Module
        The trained network, on the CPU.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X has string column names.

    Notes
    -----
    Weak supervision: ``fit(X, y)`` with ``y`` holding -1 for unlabeled rows
    adds Shannon's cross-entropy on the labeled rows (paper section 5.3), so
    cluster ``k`` is label ``k``.  A ``y`` without any -1 is a ground truth
    handed over by meta-estimators (``GridSearchCV``, ``cross_val_score``) for
    scoring only, and is ignored, as by every scikit-learn clusterer.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from skcce import CollisionClustering
    >>> from skcce.metrics import clustering_accuracy
    >>> X, y = make_blobs(n_samples=300, centers=3, random_state=0)
    >>> est = CollisionClustering(n_clusters=3, lr=0.05, max_epochs=30, random_state=0)
    >>> labels = est.fit_predict(X)
    >>> clustering_accuracy(y, labels) > 0.9
    True
    >>> est.predict_proba(X[:2]).sum(axis=1).round(6).tolist()
    [1.0, 1.0]
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "lam": [Interval(numbers.Real, 0, None, closed="left")],
        "prior": ["array-like", None],
        "loss": [StrOptions({"collision", "shannon", "mutual_information", "imsat", "iic"})],
        "fairness": [StrOptions({"reverse", "forward"})],
        "solver": [StrOptions({"auto", "em", "pgd", "sinkhorn"})],
        "solver_max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "solver_tol": [Interval(numbers.Real, 0, None, closed="left")],
        **TRAINING_PARAMETER_CONSTRAINTS,
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "augment": [StrOptions({"neighbors", "cross_neighbors", "default"}), callable, None],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "refine_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "warm_start": ["boolean"],
    }

    def __init__(self, n_clusters=8, *, lam=1.0, prior=None, loss="collision",
                 fairness="reverse", solver="auto", solver_max_iter=100, solver_tol=1e-4,
                 model="linear", model_params=None, optimizer="adam", lr=1e-2,
                 weight_decay=0.0, optimizer_params=None, batch_size=256, max_epochs=40,
                 tol=None, n_iter_no_change=10, n_init=1, augment="cross_neighbors",
                 n_neighbors=5, refine_epochs=0, n_augment=2, image_shape=None,
                 checkpoint_dir=None, device="auto", random_state=None, verbose=0,
                 warm_start=False):
        self.n_clusters = n_clusters
        self.lam = lam
        self.prior = prior
        self.loss = loss
        self.fairness = fairness
        self.solver = solver
        self.solver_max_iter = solver_max_iter
        self.solver_tol = solver_tol
        self.model = model
        self.model_params = model_params
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_params = optimizer_params
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.n_init = n_init
        self.augment = augment
        self.n_neighbors = n_neighbors
        self.refine_epochs = refine_epochs
        self.n_augment = n_augment
        self.image_shape = image_shape
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ building blocks
    def _solver_method(self):
        if self.solver != "auto":
            return self.solver
        return "em" if self.fairness == "reverse" and self.loss == "collision" else "pgd"

    def _make_objective(self, prior, neighbors, labeled):
        if self.loss == "mutual_information":
            objective = obj.MutualInformationObjective(lam=self.lam, prior=prior)
        elif self.loss == "imsat":
            objective = obj.AugmentedMutualInformationObjective(lam=self.lam, prior=prior)
        elif self.loss == "iic":
            objective = obj.InvariantInformationObjective()
        else:
            objective = obj.SelfLabelingObjective(
                lam=self.lam, prior=prior, loss=self.loss, fairness=self.fairness,
                solver=self._solver_method(), solver_max_iter=self.solver_max_iter,
                solver_tol=self.solver_tol)
            if self.augment == "cross_neighbors" and neighbors is not None:
                objective = obj.CrossNeighborObjective(objective, neighbors)
        if labeled:
            objective = obj.PartialLabelsObjective(objective)
        return objective

    def _make_optimizer(self, lr=None):
        return optimizer_factory(self.optimizer, self.lr if lr is None else lr,
                                 self.weight_decay, self.optimizer_params)

    def _make_callbacks(self):
        """Callbacks of the training loop (none by default; extension point)."""
        return []

    def _make_trainer(self, model, objective, generator, device, views=None,
                      optimizer_state=None):
        return Trainer(model, objective, optimizer=self._make_optimizer(),
                       batch_size=self.batch_size, max_epochs=self.max_epochs, device=device,
                       generator=generator, views=views, tol=self.tol,
                       n_iter_no_change=self.n_iter_no_change, callbacks=self._make_callbacks(),
                       verbose=self.verbose, optimizer_state=optimizer_state)

    def _neighbors(self, X):
        if self._is_images(X):
            return None  # images use image transforms, not pixel-space neighbours
        if callable(self.augment) or self.augment == "default":
            raise ValueError("augment='default' or a callable transforms images; pass images "
                             "(or image_shape=(C, H, W)), or use augment='neighbors' or "
                             "'cross_neighbors' for feature vectors")
        if self.augment is None:
            return None
        if self.augment == "cross_neighbors" and self.loss == "mutual_information":
            raise ValueError("augment='cross_neighbors' needs pseudo-labels; it does not apply "
                             "to loss='mutual_information' (use augment='neighbors')")
        if X.shape[0] < 2:
            raise ValueError(f"augment={self.augment!r} needs at least 2 samples per call, "
                             f"got n_samples={X.shape[0]}")
        from skcce.neighbors import augmentation_neighbors

        return augmentation_neighbors(X, min(self.n_neighbors, X.shape[0] - 1),
                                      random_state=self.random_state)

    def _is_images(self, X):
        return is_image_input(X, self.model, self.image_shape)

    def _source(self, X, y=None):
        if not self._is_images(X):
            return ArraySource(X, y)
        layout = None if is_dataset(X) else check_images(X, self.image_shape)
        pin = resolve_device(self.device).type == "cuda"
        return image_source(X, layout, y, pin_memory=pin)

    def _views(self, source, neighbors):
        """The loop's ``views`` hook: image transforms, or neighbours of feature vectors."""
        if isinstance(source, ImageSource | DatasetSource):
            if self.augment is None:
                return None
            # on images every augment mode but a callable means the default transforms
            augment = self.augment if callable(self.augment) else "default"
            return AugmentViews(resolve_augment(augment), self.n_augment)
        if neighbors is not None and (self.augment == "neighbors"
                                      or self.loss in ("imsat", "iic")):
            return obj.NeighborViews(neighbors)
        return None

    def _eval_order(self, n):
        return fixed_order(n)

    # ------------------------------------------------------------------ fitting
    def _train_once(self, source, seed, device, neighbors, labeled, prior, warm, epochs):
        generator = torch.Generator().manual_seed(seed)
        if warm:
            model = copy.deepcopy(self.model_)
            optimizer_state = getattr(self, "_optimizer_state", None)
            if getattr(self, "_generator_state", None) is not None:
                generator.set_state(self._generator_state)
        else:
            model_params = self.model_params
            if isinstance(self.model, str) and self.model in BACKBONES:
                # Batch-normalized logits keep every cluster alive in deep mode.
                model_params = {"logit_norm": True, **(model_params or {})}
            model = build_model(self.model, source.input_shape, self.n_clusters,
                                generator=generator, model_params=model_params)
            optimizer_state = None
        objective = self._make_objective(prior, neighbors, labeled)
        views = self._views(source, neighbors)
        trainer = self._make_trainer(model, objective, generator, device, views, optimizer_state)
        if device.type == "cuda" and isinstance(source, ImageSource | DatasetSource):
            trainer.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        checkpoint = None if warm else estimator_checkpoint(self, len(source), tag=str(seed))
        if checkpoint is not None:
            trainer.callbacks.append(checkpoint)
            epochs = max(epochs - checkpoint.restore(trainer), 0)
        result = trainer.fit(source, epochs=epochs)
        if checkpoint is not None:  # the epochs before a resume count too
            result.loss_curve = [r.loss for r in trainer.history]
            result.n_epochs = len(trainer.history)
        if self.refine_epochs and not warm:
            if neighbors is None:
                warnings.warn("refine_epochs needs the neighbour graph of feature vectors "
                              "(augment='neighbors' or 'cross_neighbors'); it is ignored here",
                              UserWarning, stacklevel=4)
            else:
                self._refine(trainer, source, neighbors, labeled, generator, device)
        loss, log_proba, y = trainer.evaluate(source, self._eval_order(len(source)))
        return _Run(loss=loss, result=result, model=trainer.state_copy(), log_proba=log_proba,
                    pseudo_labels=y, optimizer_state=_state_to_cpu(trainer.optimizer.state_dict()),
                    generator_state=generator.get_state())

    def _refine(self, trainer, source, neighbors, labeled, generator, device):
        """Train ``trainer.model`` on neighbour-smoothed soft targets (``refine_epochs``)."""
        from skcce.classifier import SoftTargetObjective, TargetSource

        proba = trainer.predict_log_proba(source).double().exp().numpy()
        targets = ((1 - _REFINE_SMOOTHING) * proba
                   + _REFINE_SMOOTHING * proba[neighbors].mean(axis=1))
        if labeled:
            y = source.labels(np.arange(len(source))).numpy()
            rows = np.flatnonzero(y >= 0)
            targets[rows] = np.eye(self.n_clusters)[y[rows]]
        targets /= targets.sum(axis=1, keepdims=True)
        refiner = Trainer(trainer.model, SoftTargetObjective("collision", self.n_clusters),
                          optimizer=self._make_optimizer(lr=self.lr / 10),
                          batch_size=self.batch_size, max_epochs=self.refine_epochs,
                          device=device, generator=generator, verbose=self.verbose)
        refiner.fit(TargetSource(source, targets.astype(np.float32)))

    def _prepare(self, X, y, reset):
        if self._is_images(X):  # checked in place: a memmap is not loaded or converted
            X, _ = prepare_images(self, X, image_shape=self.image_shape, reset=reset)
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        if reset:
            check_n_clusters(self.n_clusters, len(X))
        elif self.n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2, got {self.n_clusters}")
        prior = check_prior(self.prior, self.n_clusters)
        labels = check_partial_labels(y, len(X), self.n_clusters)
        return X, labels, prior

    def _fit_runs(self, X, y, warm, epochs):
        X, labels, prior = self._prepare(X, y, reset=not warm)
        device = resolve_device(self.device)
        neighbors = self._neighbors(X)
        source = self._source(X, labels)
        n_init = 1 if warm else self.n_init
        best = None
        for i, seed in enumerate(seeds_from(self.random_state, n_init)):
            run = self._train_once(source, seed, device, neighbors, labels is not None, prior,
                                   warm, epochs)
            logger.info("init %d/%d: final loss %.6f", i + 1, n_init, run.loss)
            if best is None or run.loss < best.loss or not np.isfinite(best.loss):
                best = run
            if run.result.interrupted:
                break
        return X, best

    def _set_fitted(self, X, run, append=False):
        result = run.result
        labels = run.log_proba.argmax(dim=1).numpy().astype(np.int64)
        self.model_ = run.model
        self.labels_ = labels
        self.pseudo_labels_ = None if run.pseudo_labels is None else run.pseudo_labels.numpy()
        self.loss_curve_ = (list(self.loss_curve_) if append else []) + list(result.loss_curve)
        self.n_iter_ = (self.n_iter_ if append else 0) + result.n_epochs
        self.loss_ = float(run.loss)
        self.converged_ = bool(result.converged)
        self.cluster_sizes_ = np.bincount(labels, minlength=self.n_clusters)
        sizes = [r.cluster_sizes for r in result.history if len(r.cluster_sizes) == self.n_clusters]
        sizes = np.array(sizes, dtype=np.int64).reshape(-1, self.n_clusters)
        if append:
            sizes = np.vstack([self.cluster_sizes_history_, sizes])
        self.cluster_sizes_history_ = sizes
        self._optimizer_state = run.optimizer_state
        self._generator_state = run.generator_state

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """On any error, put the fitted state back as it was: nothing is left half-fitted."""
        saved = {k: self.__dict__[k] for k in _FITTED if k in self.__dict__}
        try:
            yield
        except BaseException:
            for k in _FITTED:
                self.__dict__.pop(k, None)
            self.__dict__.update(saved)
            raise

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train on ``X`` (Algorithm 1), keeping the best of ``n_init`` restarts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Training data; float32 stays float32.  Images: see the class
            docstring.
        y : array-like of shape (n_samples,), default=None
            Partial labels with -1 for unlabeled rows (weak supervision), or
            a ground truth without -1, which is ignored.

        Returns
        -------
        self : CollisionClustering
            The fitted estimator.
        """
        with self._all_or_nothing():
            warm = self.warm_start and hasattr(self, "model_")
            X, best = self._fit_runs(X, y, warm, self.max_epochs)
            self._set_fitted(X, best)
        result = best.result
        if self.tol is not None and not (result.converged or result.interrupted
                                         or result.diverged):
            warnings.warn(
                f"CollisionClustering stopped at max_epochs={self.max_epochs} before the loss "
                f"settled (tol={self.tol}); increase max_epochs or tol.",
                ConvergenceWarning, stacklevel=3)  # 3: past sklearn's _fit_context wrapper
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Train for one epoch on a chunk of data, continuing from the previous call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,), default=None
            Partial labels with -1 for unlabeled rows, or ignored (see :meth:`fit`).

        Returns
        -------
        self : CollisionClustering
            The updated estimator; ``labels_`` and ``pseudo_labels_`` refer to this chunk.
        """
        with self._all_or_nothing():
            warm = hasattr(self, "model_")
            X, run = self._fit_runs(X, y, warm, 1)
            self._set_fitted(X, run, append=warm)
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the cluster of each training row (equal to ``fit(X).predict(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,), default=None
            Partial labels (see :meth:`fit`).

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Cluster ids.
        """
        return self.fit(X, y).labels_

    # ------------------------------------------------------------------ inference
    def _log_proba(self, X):
        check_is_fitted(self, "model_")
        if self._is_images(X):
            X, _ = prepare_images(self, X, image_shape=self.image_shape, reset=False)
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        device = resolve_device(self.device)
        model = self.model_ if device.type == "cpu" else copy.deepcopy(self.model_)
        trainer = Trainer(model, None, batch_size=max(self.batch_size, 1024), device=device)
        return X, trainer

    def predict_proba(self, X):
        r"""Soft assignments :math:`\sigma` (rows sum to 1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters)
            In the dtype of ``X`` (float32 or float64).
        """
        X, trainer = self._log_proba(X)
        proba = trainer.predict_log_proba(self._source(X)).double().exp()
        proba /= proba.sum(dim=1, keepdim=True)
        dtype = getattr(X, "dtype", None)  # images (uint8, Dataset) give float32
        dtype = dtype if dtype in (np.float32, np.float64) else np.float32
        return proba.numpy().astype(dtype, copy=False)

    def predict(self, X):
        """Cluster of each row: the argmax of :math:`\\sigma`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Cluster ids in ``[0, n_clusters)``.
        """
        X, trainer = self._log_proba(X)
        return trainer.predict_log_proba(self._source(X)).argmax(dim=1).numpy().astype(np.int64)

    def transform(self, X):
        """The soft assignments :math:`\\sigma`, as :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters)
            Rows of :math:`\\sigma`.
        """
        return self.predict_proba(X)

    def score(self, X, y=None):
        """Negative self-labeling loss of the fitted model on ``X`` (higher is better).

        Pseudo-labels are solved for ``X`` in batches of ``batch_size`` (in a
        fixed shuffled order) and the loss of eq. 11 (or the chosen method's)
        is averaged over rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Minus the mean loss.
        """
        X, trainer = self._log_proba(X)
        prior = check_prior(self.prior, self.n_clusters)
        trainer.objective = self._make_objective(prior, None, False)
        trainer.batch_size = self.batch_size
        loss, _, _ = trainer.evaluate(self._source(X), self._eval_order(X.shape[0]))
        return -float(loss)

    @property
    def _n_features_out(self):
        return self.n_clusters

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
