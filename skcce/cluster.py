"""``CollisionClustering``: self-labeled clustering with collision cross-entropy.

The estimator holds the clustering logic only: its parameters, the batch
objective of each method (:mod:`skcce._objectives`), the views (neighbours
or image transforms), the ``n_init`` restarts and the refinement stage.
Everything it shares with :class:`~skcce.CollisionClassifier` (input
handling, trainer, checkpoints, fitted state) is in :mod:`skcce._base`.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions

from skcce import _objectives as obj
from skcce._base import _BaseTorchEstimator, shared_docs
from skcce._callbacks import (
    CollapseWarning,
    EmptyClusterRelocation,
    fixed_order,
    standardization_hint,
)
from skcce._progress import progress_bar
from skcce._sources import TargetSource
from skcce._temi import EMATeacher, TEMIHead, TEMIObjective
from skcce._training import Trainer, TrainResult
from skcce._validation import (
    check_n_clusters,
    check_partial_labels,
    check_prior,
    seeds_from,
    warn,
)
from skcce.augment import AugmentViews, NeighborViews, resolve_augment
from skcce.networks import BACKBONES

__all__ = ["CollisionClustering"]

logger = logging.getLogger(__name__)

#: Weight of the neighbours' mean prediction in the targets of ``refine_epochs``.
_REFINE_SMOOTHING = 0.9


@dataclass
class _Run:
    """One training run (one of the ``n_init`` restarts)."""

    loss: float
    result: TrainResult
    trainer: Trainer
    log_proba: torch.Tensor
    pseudo_labels: torch.Tensor | None
    solver_stats: tuple = (0, 0)
    init_scores: np.ndarray | None = None  # the restarts' scores, on the kept run
    objective: object = None  # what it trained on: a later evaluation needs the same


@shared_docs
class CollisionClustering(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin,
                          _BaseTorchEstimator):
    """Self-labeled clustering with collision cross-entropy (Zhang & Boykov, Algorithm 1).

    A softmax model :math:`\\sigma = \\mathrm{softmax}(f(x))` is trained on
    mini-batches.  For each batch, pseudo-labels :math:`y` are solved for the
    detached :math:`\\sigma` (warm-started from it) and the model takes one
    gradient step on :math:`\\overline{H_2(y,\\sigma)}` with :math:`y` fixed,
    which minimizes

    .. math:: \\overline{H_2(y, \\sigma)} + \\lambda\\, KL(u \\,\\|\\, \\bar y)   \\qquad (11)

    Clusters are the argmax of :math:`\\sigma`, so new points are assigned
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
    TEMI                  ``loss='temi'`` (EMA teacher on neighbour pairs)
    ====================  ====================================================

    Images are clustered with a convolutional ``model`` (``'vgg4'``, the
    paper's VGG-4, or a ResNet) trained from scratch, with self-augmentation
    :math:`\\sigma_i = \\frac1T\\sum_t \\sigma(t(x_i))` (section 5.2): ``X``
    may be ``(n, C, H, W)``, ``(n, H, W, C)`` or ``(n, H, W)`` arrays (uint8
    or float in [0, 1]; numpy memmaps are read one batch at a time), 2-D rows
    with ``image_shape=(C, H, W)``, or a map-style ``torch.utils.data.Dataset``.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters K; 1 gives the trivial clustering.
    lam : float, default=1.0
        Fairness weight :math:`\\lambda`, in the convention of
        :func:`skcce.solvers.solve_pseudo_labels` (the loss is a mean over
        the batch; the paper's "lambda = 100 at batch 250" is about 0.4).
        For ``loss='iic'`` it weighs the marginal entropies of IIC's loss.
    prior : array-like of shape (n_clusters,), default=None
        Target cluster proportions :math:`u`; uniform when None.
    loss : {'collision', 'shannon', 'mutual_information', 'imsat', 'iic', 'temi'}, \
            default='collision'
        Cross-entropy to the pseudo-labels (:math:`H_2`, ours, or Shannon's
        for MI-ADM / SeLa), MI-GD's mutual information, the
        augmentation-based baselines IMSAT (MI-D) and IIC, which use the
        augmented copies of ``augment``, or TEMI (Adaloglou et al. 2023), a
        student trained against its EMA teacher on pairs of neighbours by a
        weighted PMI loss (:mod:`skcce._temi`; feature vectors with
        ``augment='neighbors'`` or ``'cross_neighbors'``; ``lam`` unused).
        With ``model='linear'`` TEMI trains its own head: 10 cosine heads
        on L2-normalized features, predicting with the one of lowest loss.
    fairness : {'reverse', 'forward'}, default='reverse'
        :math:`KL(u\\|\\bar y)` (eq. 11) or :math:`KL(\\bar y\\|u)` (eq. 10).
    solver : {'auto', 'em', 'pgd', 'sinkhorn'}, default='auto'
        Pseudo-label solver; 'auto' is EM for the collision CE with the
        reverse form and PGD otherwise; 'em' needs ``loss='collision'`` and
        ``fairness='reverse'``.
    solver_max_iter : int, default=100
        Iteration cap of the solver on each batch.
    solver_tol : float, default=1e-3
        Stopping tolerance of the solver (its Frank-Wolfe gap for EM and PGD),
        which bounds how far each batch's pseudo-labels are from the optimum
        of their (convex) problem, in nats per row.

        .. versionchanged:: 0.2
           1e-3 (was 1e-4): EM stops after fewer iterations per batch.
           The rows "CCE default, solver_tol=1e-4" and "..., 1e-2" of
           ``docs/benchmarks/fixed_features.md`` measure the choice: 1e-3
           kept the mean accuracy within the seed spread of 1e-4, while 1e-2
           lost accuracy on the pretrained-CNN features. The time saved per
           training step is in ``docs/benchmarks/profile_step.md`` (CPU
           time; the wall-clock fit times of the fixed-feature report move
           with the machine's load).
    {shared: model, model_params, optimizer, lr, weight_decay, optimizer_params}
    {shared: batch_size, max_epochs, tol, n_iter_no_change}
    n_init : int, default=1
        Number of restarts from different seeds.  The kept restart is the one
        that agrees most with the others (highest mean adjusted Rand index to
        them, :func:`skcce.selection.consensus_scores`) when there are three
        or more; of two, the one with the higher
        :func:`skcce.selection.neighbor_information_score` (what
        :meth:`score` returns).  On images, the lowest final loss
        (:attr:`loss_`).  ``docs/benchmarks/model_selection.md`` has the
        measurement behind this choice.  With three or more restarts and
        ``refine_epochs``, the restarts are not refined one by one: the kept
        one is refined once, on the mean of every restart's memberships
        aligned to its clusters (:func:`skcce.selection.aligned_mean_proba`).
    augment : str, callable or None, default='cross_neighbors'
        Feature vectors: ``'neighbors'`` trains on :math:`\\sigma_i` averaged
        with :math:`\\sigma_j` of a random one of the ``n_neighbors`` nearest
        neighbours j (computed once per fit); ``'cross_neighbors'`` solves
        :math:`y_i` from :math:`\\sigma_j` and takes the cross-entropy on
        :math:`\\sigma_i`, symmetrized over i and j (the default: it scored
        best on sklearn digits and on pretrained-CNN features of MNIST); it
        needs pseudo-labels, so ``loss='mutual_information'`` takes
        ``'neighbors'`` or None.  Images: ``'default'`` (and, since
        pixel-space neighbours are not meaningful, also ``'neighbors'`` and
        ``'cross_neighbors'``) applies :class:`skcce.augment.SelfAugment`
        (random flip, rotation and color distortion, per image, on the
        training device); a callable ``augment(x)`` or
        ``augment(x, generator)`` maps a float ``(n, C, H, W)`` batch to an
        augmented batch (with ``generator`` it follows ``random_state``).
        None turns augmentation off.
    n_neighbors : int, default=5
        Neighbours per point for ``augment`` (at most ``n_samples - 1`` are used).
    neighbors_algorithm : {'auto', 'exact', 'faiss', 'nndescent'}, default='auto'
        How the neighbour graph is computed
        (:func:`skcce.neighbors.augmentation_neighbors`).
    refine_epochs : int, default=0
        Epochs of a refinement stage after training, for feature vectors with
        neighbour augmentation: the predictions are smoothed over each
        point's neighbours, :math:`t_i = 0.1\\,\\sigma_i + 0.9\\,\\mathrm{mean}_{j \\in N(i)}
        \\sigma_j` (labeled rows keep their one-hot label), and the model is
        trained on the fixed soft targets :math:`t` by the collision
        cross-entropy, at a tenth of ``lr``. The model stays inductive:
        ``predict`` needs no neighbours. 0 turns it off; warm starts (and
        ``partial_fit`` calls after the first) skip it, and so does
        ``loss='temi'`` (with a warning: its model has several heads). ``refine_epochs=5``
        helped on the pretrained-CNN features and on MNIST pixels, and made no
        difference on digits; see the Table 2 reproduction page. With
        ``n_init >= 3`` the targets smooth the restarts' consensus instead
        (see ``n_init``); ``n_init=5, refine_epochs=5`` is the configuration
        the restart table of that page measures.
    {shared: n_augment, image_shape, checkpoint_dir, device, n_jobs, random_state, verbose}
    {shared: callbacks}
    warm_start : bool, default=False
        Continue from the previous fit's model (and optimizer) instead of a
        new initialization; ``n_init`` is then ignored.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training row (argmax of :math:`\\sigma`).
    pseudo_labels_ : ndarray of shape (n_samples, n_clusters) or None
        Pseudo-labels :math:`y` of the training rows for the final model
        (None for the methods without pseudo-labels).
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
    cluster_sizes_history_ : ndarray of shape (``n_iter_``, n_clusters)
        Per epoch, the number of training rows whose prediction fell in each
        cluster during that epoch (what the progress bar shows).
    n_solver_unconverged_ : int
        Pseudo-label solves (one per batch) of the last fit that stopped at
        ``solver_max_iter`` before reaching ``solver_tol``; a fit with any
        warns once (ConvergenceWarning).
    init_scores_ : ndarray of shape (n_init,)
        The score each restart was chosen by (see ``n_init``); NaN where a
        restart was not scored (a single restart, images, a non-finite loss).
    model_ : torch.nn.Module
        The trained network, on the CPU.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Feature names, when X has string column names.

    See Also
    --------
    CollisionClassifier : The supervised estimator on the same loop.

    Notes
    -----
    Weak supervision: ``fit(X, y)`` with ``y`` holding -1 for unlabeled rows
    adds Shannon's cross-entropy on the labeled rows (paper section 5.3), so
    cluster ``k`` is label ``k``.  A ``y`` without any -1 is a ground truth
    handed over by meta-estimators (``GridSearchCV``, ``cross_val_score``) for
    scoring only, and is ignored, as by every scikit-learn clusterer.

    Backbones (``'vgg4'``, ResNets) get batch-normalized logits
    (``model_params={'logit_norm': False}`` turns that off): a network
    trained from scratch starts with nearly every image in one cluster, and
    under the collision cross-entropy an empty cluster receives no gradient,
    so without it deep mode collapses.  On feature vectors, an epoch that
    leaves a cluster empty is followed by a relocation, as in k-means: the
    largest cluster is split in two and the empty cluster's output takes one
    half (``skcce._callbacks.EmptyClusterRelocation``; ``loss='collision'``).

    Ctrl-C (``KeyboardInterrupt``) during ``fit`` keeps the model trained so
    far, with every fitted attribute set, and then re-raises, so that a loop
    around ``fit`` stops too.

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
        **_BaseTorchEstimator._parameter_constraints,
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "lam": [Interval(numbers.Real, 0, None, closed="left")],
        "prior": ["array-like", None],
        "loss": [StrOptions({"collision", "shannon", "mutual_information", "imsat", "iic",
                             "temi"})],
        "fairness": [StrOptions({"reverse", "forward"})],
        "solver": [StrOptions({"auto", "em", "pgd", "sinkhorn"})],
        "solver_max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "solver_tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "augment": [StrOptions({"neighbors", "cross_neighbors", "default"}), callable, None],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "neighbors_algorithm": [StrOptions({"auto", "exact", "faiss", "nndescent"})],
        "refine_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "warm_start": ["boolean"],
    }

    def __init__(self, n_clusters=8, *, lam=1.0, prior=None, loss="collision",
                 fairness="reverse", solver="auto", solver_max_iter=100, solver_tol=1e-3,
                 model="linear", model_params=None, optimizer="adam", lr=1e-2,
                 weight_decay=0.0, optimizer_params=None, batch_size=256, max_epochs=40,
                 tol=None, n_iter_no_change=10, n_init=1, augment="cross_neighbors",
                 n_neighbors=5, neighbors_algorithm="auto", refine_epochs=0, n_augment=2,
                 image_shape=None, checkpoint_dir=None, device="auto", n_jobs=None,
                 random_state=None, verbose=0, callbacks=None, warm_start=False):
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
        self.neighbors_algorithm = neighbors_algorithm
        self.refine_epochs = refine_epochs
        self.n_augment = n_augment
        self.image_shape = image_shape
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.warm_start = warm_start

    # ------------------------------------------------------------------ building blocks
    _feature_augment_hint = ", or use augment='neighbors' or 'cross_neighbors' for feature vectors"

    def _check_params_vs_input(self, X, images):
        super()._check_params_vs_input(X, images)
        if self.solver == "em" and (self.loss != "collision" or self.fairness != "reverse"):
            raise ValueError(f"solver='em' solves loss='collision' with fairness='reverse'; got "
                             f"loss={self.loss!r}, fairness={self.fairness!r} (use solver='auto')")
        if not images and self.augment == "cross_neighbors" and self.loss == "mutual_information":
            raise ValueError("augment='cross_neighbors' needs pseudo-labels; it does not apply "
                             "to loss='mutual_information' (use augment='neighbors')")
        if self.loss == "temi" and (images or self.augment not in ("neighbors",
                                                                    "cross_neighbors")):
            raise ValueError("loss='temi' trains on pairs of neighbours in the neighbour graph "
                             "of feature vectors: it needs feature vectors and augment="
                             f"'neighbors' or 'cross_neighbors', got augment={self.augment!r}"
                             + (" on images" if images else ""))
        if self.solver == "sinkhorn" and self.fairness != "reverse":
            warn("fairness is ignored by solver='sinkhorn', which balances the clusters to the "
                 "prior exactly; it only changes the reported loss", UserWarning)
        if self.refine_epochs and (images or self.augment is None) and not self._warm():
            warn("refine_epochs needs the neighbour graph of feature vectors (augment="
                 "'neighbors' or 'cross_neighbors'); it is ignored here", UserWarning)
        elif self.refine_epochs and self.loss == "temi" and not self._warm():
            warn("refine_epochs is not supported with loss='temi' (its model has several "
                 "heads); it is ignored here", UserWarning)

    def _warm(self):
        return self.warm_start and hasattr(self, "model_")

    def _model_params(self):
        if isinstance(self.model, str) and self.model in BACKBONES:
            # Batch-normalized logits keep every cluster alive in deep mode.
            return {"logit_norm": True, **(self.model_params or {})}
        return self.model_params

    def _build_model(self, input_shape, n_outputs, generator):
        if self.loss == "temi" and self.model == "linear" and n_outputs > 1:
            return TEMIHead(int(np.prod(input_shape)), n_outputs, generator=generator)
        return super()._build_model(input_shape, n_outputs, generator)

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
            objective = obj.InvariantInformationObjective(lam=self.lam)
        elif self.loss == "temi":
            objective = TEMIObjective(neighbors, EMATeacher(), self.n_clusters)
        else:
            objective = obj.SelfLabelingObjective(
                lam=self.lam, prior=prior, loss=self.loss, fairness=self.fairness,
                solver=self._solver_method(), solver_max_iter=self.solver_max_iter,
                solver_tol=self.solver_tol)
            if self.augment == "cross_neighbors" and neighbors is not None:
                objective = obj.CrossNeighborObjective(objective, neighbors)
        return obj.PartialLabelsObjective(objective) if labeled else objective

    def _neighbors(self, X, images, given=None):
        if given is not None and (images or self.augment is None):
            raise ValueError("neighbors is a graph over feature vectors for augment='neighbors' "
                             "or 'cross_neighbors'; it does not apply to "
                             + ("images" if images else "augment=None"))
        if images or self.augment is None:
            return None  # images use image transforms, not pixel-space neighbours
        if given is not None:
            from skcce.neighbors import check_neighbors

            return check_neighbors(given, len(X))
        if X.shape[0] < 2:
            raise ValueError(f"augment={self.augment!r} needs at least 2 samples per call, "
                             f"got n_samples={X.shape[0]}")
        from skcce.neighbors import augmentation_neighbors

        random_state = self.random_state  # None: a fresh seed, not numpy's global generator
        if random_state is None:
            random_state = seeds_from(None, 1)[0]
        return augmentation_neighbors(X, min(self.n_neighbors, X.shape[0] - 1),
                                      algorithm=self.neighbors_algorithm,
                                      random_state=random_state, verbose=self.verbose)

    def _views(self, images, neighbors):
        """Image transforms, or neighbours of feature vectors (the loop's ``views``)."""
        if images:
            augment = self.augment if callable(self.augment) else "default"
            return None if self.augment is None else AugmentViews(resolve_augment(augment),
                                                                  self.n_augment)
        if neighbors is not None and (self.augment == "neighbors"
                                      or self.loss in ("imsat", "iic")):
            return NeighborViews(neighbors)
        return None

    # ------------------------------------------------------------------ fitting
    def _train_once(self, X, source, seed, neighbors, labeled, prior, images, warm, epochs, tag,
                    prefix="", refine=True):
        """Train, refine (unless ``refine`` is False) and evaluate one restart.

        ``prefix`` labels its progress bars.
        """
        objective = self._make_objective(prior, neighbors, labeled)
        callbacks = [CollapseWarning(prior, None if images else standardization_hint(X))]
        if self.loss == "collision" and not images:  # baselines as published; deep mode
            callbacks.insert(0, EmptyClusterRelocation(source, prior))  # has logit_norm
        if self.loss == "temi":  # the EMA teacher follows the optimizer steps
            callbacks.append(getattr(objective, "inner", objective).teacher)
        trainer, result = self._train(
            X, source, seed=seed, objective=objective, n_outputs=self.n_clusters, images=images,
            views=self._views(images, neighbors), callbacks=callbacks, warm=warm,
            epochs=epochs, tag=tag, desc=prefix + "epochs")
        if refine and self._refines(warm, neighbors):
            self._refine(trainer, source, neighbors, labeled, images, prefix)
        stats = objective.solver_stats()  # of training: the evaluation below solves again
        loss, log_proba, y = self._evaluate(trainer, objective, source, prefix)
        return _Run(loss=loss, result=result, trainer=trainer, log_proba=log_proba,
                    pseudo_labels=y, solver_stats=stats, objective=objective)

    def _trivial_run(self, X, source, seed, images):
        """``n_clusters=1``: every point in the one cluster, nothing to train."""
        trainer, result = self._train(X, source, seed=seed, objective=None, n_outputs=1,
                                      images=images, epochs=0)
        log_proba = trainer.predict_log_proba(source, desc="evaluate")
        result.converged = True
        return _Run(loss=0.0, result=result, trainer=trainer, log_proba=log_proba,
                    pseudo_labels=torch.ones_like(log_proba))

    def _evaluate(self, trainer, objective, source, prefix=""):
        """Loss, log-probabilities and pseudo-labels of the final model, without views.

        Rows are visited in a fixed shuffled order (sorted data must not give
        single-class batches), in the batches training used.  With
        ``verbose > 0`` the forward pass (``'evaluate'``) and the per-batch
        loss and pseudo-labels (``'evaluate loss'``) show progress bars,
        labeled after ``prefix``.
        """
        order = fixed_order(len(source))
        log_proba = trainer.predict_log_proba(source, order, desc=prefix + "evaluate")
        trainer.batch_size, trainer.min_batch_size = (self.batch_size,
                                                      self._min_batch_size(self.n_clusters))
        batches = trainer.batch_indices_from(order)
        with progress_bar(batches, verbose=self.verbose, desc=prefix + "evaluate loss",
                          unit="batch") as bar:
            loss, y = obj.evaluate(objective, log_proba, bar)
        return loss, log_proba, y

    def _refines(self, warm, neighbors):
        """Whether fits run the refinement stage (``refine_epochs``, feature vectors)."""
        return (bool(self.refine_epochs) and not warm and neighbors is not None
                and self.loss != "temi")

    def _refine(self, trainer, source, neighbors, labeled, images, prefix="", proba=None):
        """Train ``trainer.model`` on neighbour-smoothed soft targets (``refine_epochs``).

        The targets smooth ``proba`` (n, K), by default the model's own
        predictions.  Its progress bars (``'refine targets'``, ``'refine'``)
        are labeled after ``prefix``.
        """
        if proba is None:
            proba = trainer.predict_log_proba(source, desc=prefix + "refine targets")
            proba = proba.double().exp().numpy()
        targets = ((1 - _REFINE_SMOOTHING) * proba
                   + _REFINE_SMOOTHING * proba[neighbors].mean(axis=1))
        if labeled:
            y = source.labels(np.arange(len(source))).numpy()
            rows = np.flatnonzero(y >= 0)
            targets[rows] = np.eye(self.n_clusters)[y[rows]]
        targets /= targets.sum(axis=1, keepdims=True)
        refine = TargetSource(source, targets.astype(np.float32))
        refiner = self._make_trainer(trainer.model, obj.SoftTargetObjective("collision"),
                                     generator=trainer.generator, source=refine, images=images,
                                     n_outputs=self.n_clusters, epochs=self.refine_epochs,
                                     lr=self.lr / 10, tol=None, desc=prefix + "refine")
        refiner.fit(refine)

    def _prepare(self, X, y, warm):
        images = self._is_images(X)
        self._check_params_vs_input(X, images)
        X, layout = self._validate_X(X, reset=not warm)
        if not warm:
            check_n_clusters(self.n_clusters, len(X))
        elif self.n_clusters != len(self.cluster_sizes_):
            raise ValueError(
                f"n_clusters={self.n_clusters} differs from the n_clusters="
                f"{len(self.cluster_sizes_)} of the fitted model, which warm_start and "
                "partial_fit continue; set it back, or fit a new model (warm_start=False)")
        prior = check_prior(self.prior, self.n_clusters, self.fairness)
        labels = check_partial_labels(y, len(X), self.n_clusters)
        return X, self._source(X, layout, labels), images, labels is not None, prior

    def _fit_runs(self, X, y, warm, epochs, neighbors=None):
        """The best of the restarts, and whether a Ctrl-C stopped them."""
        X, source, images, labeled, prior = self._prepare(X, y, warm)
        n_init = 1 if warm else self.n_init
        if self.n_clusters == 1:
            seed = seeds_from(self.random_state, 1)[0]
            return self._trivial_run(X, source, seed, images), False
        neighbors = self._neighbors(X, images, neighbors)
        # Three or more restarts refine once, after the choice, on their consensus.
        consensus = n_init >= 3 and self._refines(warm, neighbors)
        runs = []
        seeds = seeds_from(self.random_state, n_init)
        with progress_bar(seeds, verbose=self.verbose if n_init > 1 else 0, desc="restarts",
                          unit="restart") as bar:
            for i, seed in enumerate(bar):
                prefix = f"restart {i + 1}/{n_init} " if n_init > 1 else ""
                run = self._train_once(X, source, seed, neighbors, labeled, prior, images, warm,
                                       epochs, tag=str(i), prefix=prefix, refine=not consensus)
                logger.info("init %d/%d: final loss %.6f", i + 1, n_init, run.loss)
                bar.set_postfix(loss=f"{run.loss:.4f}")
                runs.append(run)
                if run.result.interrupted:
                    break
        interrupted = runs[-1].result.interrupted
        best = self._choose_run(runs, X, images)
        if consensus and not interrupted:
            best = self._refine_consensus(best, runs, source, neighbors, labeled, images)
        return best, interrupted

    def _refine_consensus(self, best, runs, source, neighbors, labeled, images):
        """Refine the kept restart on the restarts' consensus (``n_init >= 3``).

        The soft memberships of every restart with a finite loss are aligned
        to the kept one's clusters and averaged
        (:func:`skcce.selection.aligned_mean_proba`); the refinement stage
        then trains the kept model on that mean, smoothed over the
        neighbours, and the model is evaluated again, on the objective it
        trained on (a TEMI head, for one, has its own outputs).  With fewer
        than three finite restarts, the kept one is refined on its own
        predictions.
        """
        from skcce.selection import aligned_mean_proba

        finite = [r for r in runs if np.isfinite(r.loss)]
        proba = None
        if len(finite) >= 3:
            probas = [r.log_proba.double().exp().numpy() for r in finite]
            proba = aligned_mean_proba(probas, reference=[r is best for r in finite].index(True))
        self._refine(best.trainer, source, neighbors, labeled, images, "consensus ", proba)
        best.loss, best.log_proba, best.pseudo_labels = self._evaluate(
            best.trainer, best.objective, source, "consensus ")
        return best

    def _choose_run(self, runs, X, images):
        """The restart to keep: the one that agrees most with the others.

        Three or more restarts with a finite loss: the highest
        :func:`~skcce.selection.consensus_scores` (mean ARI to the other
        restarts); two: the higher
        :func:`~skcce.selection.neighbor_information_score` on feature vectors;
        images, or one restart: the lowest final loss.  The scores of every
        restart are kept in ``init_scores_``.
        """
        from skcce.selection import consensus_scores, neighbor_information_score

        finite = [i for i, r in enumerate(runs) if np.isfinite(r.loss)]
        scores = np.full(len(runs), np.nan)
        if len(finite) >= 3 or (len(finite) == 2 and not images):
            labels = [runs[i].log_proba.argmax(dim=1).numpy() for i in finite]
            if len(finite) >= 3:
                scores[finite] = consensus_scores(labels)
            else:
                scores[finite] = [neighbor_information_score(lab, X, random_state=0)
                                  for lab in labels]
            best = runs[finite[int(np.argmax(scores[finite]))]]
        else:
            best = min([runs[i] for i in finite] or runs, key=lambda r: r.loss)
        best.init_scores = scores
        return best

    def _set_fitted(self, run, append=False):
        labels = run.log_proba.argmax(dim=1).numpy().astype(np.int64)
        history = run.trainer.history
        self._keep_training_state(run.trainer)
        self.labels_ = labels
        self.pseudo_labels_ = None if run.pseudo_labels is None else run.pseudo_labels.numpy()
        self.loss_curve_ = (list(self.loss_curve_) if append else []) + [r.loss for r in history]
        self.n_iter_ = (self.n_iter_ if append else 0) + len(history)
        self.loss_ = float(run.loss)
        self.converged_ = bool(run.result.converged)
        self.cluster_sizes_ = np.bincount(labels, minlength=self.n_clusters)
        sizes = [r.cluster_sizes for r in history if len(r.cluster_sizes) == self.n_clusters]
        sizes = np.array(sizes, dtype=np.int64).reshape(-1, self.n_clusters)
        if append:
            sizes = np.vstack([self.cluster_sizes_history_, sizes])
        self.cluster_sizes_history_ = sizes
        self.n_solver_unconverged_ = run.solver_stats[1]
        self.init_scores_ = np.full(1, np.nan) if run.init_scores is None else run.init_scores

    def _convergence_problems(self, run):
        solves, failed = run.solver_stats
        if not failed:
            return []
        return [f"{failed} of {solves} pseudo-label solves stopped at solver_max_iter="
                f"{self.solver_max_iter} before reaching solver_tol={self.solver_tol}; increase "
                "solver_max_iter or solver_tol (or lower lam)."]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, neighbors=None):
        """Train on ``X`` (Algorithm 1), keeping the best of ``n_init`` restarts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), images, or torch Dataset
            Training data; float32 stays float32.  Images: see the class
            docstring.
        y : array-like of shape (n_samples,), default=None
            Partial labels with -1 for unlabeled rows (weak supervision), or
            a ground truth without -1, which is ignored.
        neighbors : array-like of shape (n_samples, k), default=None
            A precomputed neighbour graph for ``augment='neighbors'`` or
            ``'cross_neighbors'`` (row i: ids of the neighbours of row i,
            never i itself), used instead of computing one.

        Returns
        -------
        self : CollisionClustering
            The fitted estimator.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit(X)
        >>> est.labels_.shape, est.n_iter_
        ((60,), 2)
        """
        with self._fit_state():
            best, interrupted = self._fit_runs(X, y, self._warm(), self.max_epochs, neighbors)
            self._set_fitted(best)
        self._end_fit(best.result, interrupted=interrupted,
                      problems=self._convergence_problems(best))
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

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, random_state=0)
        >>> for chunk in (X[:30], X[30:]):
        ...     est = est.partial_fit(chunk)
        >>> est.n_iter_
        2
        """
        with self._fit_state():
            warm = hasattr(self, "model_")
            run, interrupted = self._fit_runs(X, y, warm, 1)
            self._set_fitted(run, append=warm)
        if interrupted:
            raise KeyboardInterrupt
        return self

    def fit_predict(self, X, y=None, *, neighbors=None):
        """Fit and return the cluster of each training row (equal to ``fit(X).predict(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,), default=None
            Partial labels (see :meth:`fit`).
        neighbors : array-like of shape (n_samples, k), default=None
            A precomputed neighbour graph (see :meth:`fit`).

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Cluster ids.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit_predict(X).shape
        (60,)
        """
        return self.fit(X, y, neighbors=neighbors).labels_

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X):
        """Soft assignments :math:`\\sigma` (rows sum to 1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters)
            In the dtype of ``X`` (float32 or float64; float32 for images).

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit(X)
        >>> est.predict_proba(X[:2]).sum(axis=1).round(6).tolist()
        [1.0, 1.0]
        """
        log_proba, X = self._predict_log_proba(X)
        proba = log_proba.double().exp()
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

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit(X)
        >>> bool((est.predict(X) == est.labels_).all())
        True
        """
        return self._predict_log_proba(X)[0].argmax(dim=1).numpy().astype(np.int64)

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

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit(X)
        >>> est.transform(X[:2]).shape
        (2, 3)
        """
        return self.predict_proba(X)

    def score(self, X, y=None):
        """Label-free validity of the clustering of ``X`` (higher is better).

        On feature vectors, :func:`skcce.selection.neighbor_information_score`:
        the mutual information between the predicted clusters of neighbouring
        rows on the 10-nearest-neighbour graph of ``X`` (on at most 10,000
        rows).  It depends on the labels and ``X`` only, not on ``lam`` or
        the loss, so ``GridSearchCV`` without ``scoring`` compares settings
        by it.  On features wider than 128 the graph is searched in a
        128-component PCA (seeded, so that every call on the same ``X``
        uses the same graph); the model-selection guide gives its measured
        cost next to a fit.  Compare settings with
        the same ``n_clusters`` only: the score grows with the number of
        clusters (choose that with :func:`skcce.selection.select_n_clusters`).
        The score is the same whatever ``n_init``: it rates the kept restart.
        On images, the negative self-labeling loss (eq. 11 or the chosen
        method's, averaged over batches of ``batch_size``): the label-free
        scores were measured on feature vectors only.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        y : None
            Ignored.

        Returns
        -------
        score : float
            The neighbour information score, or minus the mean loss on images.

        Examples
        --------
        >>> from sklearn.datasets import make_blobs
        >>> from skcce import CollisionClustering
        >>> X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
        >>> est = CollisionClustering(n_clusters=3, max_epochs=2, random_state=0).fit(X)
        >>> isinstance(est.score(X), float)
        True
        """
        if not self._is_images(X):
            from skcce.selection import neighbor_information_score

            return float(neighbor_information_score(self, X, random_state=0))
        return self._loss_score(X)

    def _loss_score(self, X):
        """Minus the self-labeling loss of the fitted model on ``X``."""
        trainer, X, layout = self._predictor(X, batch_size=self.batch_size)
        if self.n_clusters == 1:
            return 0.0
        prior = check_prior(self.prior, self.n_clusters, self.fairness)
        objective = self._make_objective(prior, None, False)
        return -float(self._evaluate(trainer, objective, self._source(X, layout))[0])

    @property
    def _n_features_out(self):
        return self.n_clusters

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

