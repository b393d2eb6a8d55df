"""Callbacks of the training loop: hooks the :class:`~skcce._training.Trainer` calls.

A callback subclasses :class:`Callback` and overrides the hooks it needs.
Users pass them through the estimators' ``callbacks`` parameter to log,
stop early (``trainer.stop_training = True``; never by raising) or save
their own checkpoints.  The side jobs of the loop are callbacks too:

=========================  ===================================================
callback                   job
=========================  ===================================================
:class:`ProgressBar`       tqdm bar over epochs with the loss and cluster sizes
:class:`BatchNormRecalibration`  recompute BatchNorm statistics after training
:class:`CollapseWarning`   warn when clusters are empty at the end (clustering)
:class:`EmptyClusterRelocation`  give an empty cluster half of the largest one
=========================  ===================================================

A callback sees the trainer's ``model``, ``optimizer``, ``generator``,
``history`` (a list of :class:`~skcce._training.EpochRecord`) and
``stop_training``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from skcce._progress import progress_bar
from skcce._validation import warn

__all__ = ["Callback", "ProgressBar", "BatchNormRecalibration", "CollapseWarning",
           "EmptyClusterRelocation", "fixed_order"]


class Callback:
    """Base class with no-op hooks; subclass it and override what you need.

    A hook may set ``trainer.stop_training = True`` to end the loop after the
    current batch (the epoch's record is still kept).  The hooks, all no-ops
    here, are called with the :class:`Trainer` first:

    ===============================================  ================================
    hook                                             called
    ===============================================  ================================
    ``on_train_begin(trainer)``                      once, before the first epoch
    ``on_epoch_begin(trainer, epoch)``               before each epoch (from 0)
    ``on_batch_end(trainer, batch, output)``         after each gradient step, with
                                                     the ``Batch`` and ``StepOutput``
    ``on_epoch_end(trainer, record)``                after each finished epoch, with
                                                     its ``EpochRecord``
    ``on_train_end(trainer, result)``                once, with the ``TrainResult``
    ===============================================  ================================

    Examples
    --------
    >>> from skcce._callbacks import Callback
    >>> class StopAtLoss(Callback):
    ...     def on_epoch_end(self, trainer, record):
    ...         if record.loss < 0.5:
    ...             trainer.stop_training = True
    """

    def on_train_begin(self, trainer):
        """Called once before the first epoch."""

    def on_epoch_begin(self, trainer, epoch):
        """Called before each epoch (``epoch`` counts from 0)."""

    def on_batch_end(self, trainer, batch, output):
        """Called after each gradient step with the batch and its ``StepOutput``."""

    def on_epoch_end(self, trainer, record):
        """Called after each finished epoch with its ``EpochRecord``."""

    def on_train_end(self, trainer, result):
        """Called once after training with the ``TrainResult``."""


def fixed_order(n):
    """A fixed shuffle of ``range(n)`` for passes that do not train.

    Sorted data must not give single-class batches when evaluating the
    batch-level loss or recomputing BatchNorm statistics; the same order
    every time keeps those passes reproducible.

    Examples
    --------
    >>> from skcce._callbacks import fixed_order
    >>> sorted(fixed_order(4).tolist())
    [0, 1, 2, 3]
    """
    return np.random.default_rng(0).permutation(n)


def _sizes_str(sizes):
    if len(sizes) <= 12:
        return ",".join(str(int(s)) for s in sizes)
    return f"min {int(sizes.min())} max {int(sizes.max())}"


class ProgressBar(Callback):
    """A tqdm bar over the epochs, with the epoch loss and the cluster sizes.

    The estimators add it when ``verbose > 0``, labeled by the phase:
    ``'epochs'`` (``'restart 2/5 epochs'`` for a restart of several) or
    ``'refine'``.

    Parameters
    ----------
    total : int
        Number of epochs.
    desc : str, default='epochs'
        Label of the bar.

    Examples
    --------
    >>> from skcce._callbacks import ProgressBar
    >>> ProgressBar(5, desc="refine").desc
    'refine'
    """

    def __init__(self, total, desc="epochs"):
        self.total = total
        self.desc = desc
        self.bar = None

    def on_train_begin(self, trainer):
        self.bar = progress_bar(total=self.total, verbose=1, desc=self.desc, unit="epoch")

    def on_epoch_end(self, trainer, record):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record.loss:.4f}", sizes=_sizes_str(record.cluster_sizes))

    def on_train_end(self, trainer, result):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class BatchNormRecalibration(Callback):
    """Recompute the BatchNorm running statistics of the final model over the training data.

    Running averages with momentum lag behind the weights, and after a few
    epochs (or a few hundred batches) eval-mode predictions drift from the
    train-mode ones the loss saw: measured on 600 MNIST images with VGG-4,
    2 epochs, predictions went from 2 used clusters to 10 and accuracy
    from 0.25 to 0.47 once the statistics were recomputed.  One pass
    without views, in a fixed shuffled order (sorted data would give
    single-class batches), with cumulative averaging (``momentum=None``).

    Parameters
    ----------
    source : data source
        The training data (:mod:`skcce._sources`).
    """

    def __init__(self, source):
        self.source = source

    def on_train_end(self, trainer, result):
        recalibrate_batch_norm(trainer, self.source)


@torch.no_grad()
def recalibrate_batch_norm(trainer, source):
    """Recompute the running statistics of ``trainer.model``'s BatchNorm layers over ``source``.

    See :class:`BatchNormRecalibration`.  The model is left in eval mode.
    """
    norms = [m for m in trainer.model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(source) < 2:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    trainer.model.train()
    try:
        for idx in trainer.batch_indices_from(fixed_order(len(source))):
            trainer.forward(trainer.to_device(source.rows(idx)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        trainer.model.eval()


class CollapseWarning(Callback):
    """Warn when clusters that the prior wants received no point in the last epoch.

    Parameters
    ----------
    prior : ndarray of shape (n_clusters,) or None
        Clusters with a zero prior may stay empty; None is uniform.
    hint : str or None, default=None
        A sentence about the data appended to the warning (e.g. from
        :func:`standardization_hint`).
    """

    def __init__(self, prior=None, hint=None):
        self.prior = prior
        self.hint = hint

    def on_train_end(self, trainer, result):
        if not result.n_epochs:  # nothing trained in this run (e.g. resumed at its end)
            return
        sizes = trainer.history[-1].cluster_sizes
        wanted = np.ones(len(sizes), bool) if self.prior is None else np.asarray(self.prior) > 0
        empty = np.flatnonzero((sizes == 0) & wanted)
        if empty.size:
            hint = f" {self.hint}" if self.hint else ""
            warn(f"{empty.size} of {len(sizes)} clusters received no points in the last epoch "
                 "(pseudo-label collapse). Raise lam (the fairness weight), lower lr, or lower "
                 f"n_clusters.{hint}", ConvergenceWarning)


def output_layer(model, n_outputs):
    """The model's last :class:`torch.nn.Linear` with ``n_outputs`` outputs, or None."""
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n_outputs:
            last = module
    return last


class EmptyClusterRelocation(Callback):
    r"""After an epoch that left clusters empty, give each one half of the largest cluster.

    With saturated predictions (a one-hot :math:`\sigma`), the collision
    cross-entropy has no gradient toward a cluster that no point predicts, so
    a cluster emptied early stays empty even on well-separated data; k-means
    relocates an empty centre for the same reason.  At the end of such an
    epoch, on a sample of the training rows, the largest cluster's rows (in
    the input space of the model's output layer) are split by 2-means, and
    the empty cluster's output row becomes the largest one's plus a
    hyperplane between the two halves: the far half now predicts the empty
    cluster.  The optimizer's running moments of that row are reset.  Epochs
    with no empty cluster change nothing.

    Parameters
    ----------
    source : training-data source
        Gives ``len(source)`` and ``source.rows(indices)``.
    prior : ndarray of shape (n_clusters,) or None
        Clusters with a zero prior may stay empty; None is uniform.
    max_rows : int, default=2048
        Rows sampled to split the largest cluster.
    random_state : int, default=0
        Seed of the sample (drawn apart from the trainer's generator, so the
        training's random stream is not shifted).
    """

    def __init__(self, source, prior=None, max_rows=2048, random_state=0):
        self.source = source
        self.prior = prior
        self.max_rows = max_rows
        self.random_state = random_state
        self.n_relocated = 0

    def on_epoch_end(self, trainer, record):
        sizes = record.cluster_sizes
        if record.diverged or len(sizes) < 2:
            return
        wanted = np.ones(len(sizes), bool) if self.prior is None else np.asarray(self.prior) > 0
        empty = np.flatnonzero((sizes == 0) & wanted)
        layer = output_layer(trainer.model, len(sizes))
        if not empty.size or layer is None:
            return
        rng = np.random.default_rng([self.random_state, record.epoch])
        n = len(self.source)
        rows = np.sort(rng.choice(n, size=min(self.max_rows, n), replace=False))
        inputs = []
        hook = layer.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
        try:
            with torch.no_grad():
                trainer.model.eval()
                logits = trainer.forward(trainer.to_device(self.source.rows(rows)))
        finally:
            hook.remove()
        h = inputs[-1].double().cpu().numpy()
        assigned = logits.argmax(dim=1).cpu().numpy()
        for k in empty:
            self._relocate(trainer, layer, h, assigned, int(k))

    def _relocate(self, trainer, layer, h, assigned, k):
        from sklearn.cluster import KMeans

        j = int(np.bincount(assigned, minlength=layer.out_features).argmax())
        members = np.flatnonzero(assigned == j)
        if len(members) < 2:
            return
        halves = KMeans(2, n_init=1, random_state=0).fit(h[members])
        c1, c2 = halves.cluster_centers_
        d = c2 - c1
        norm2 = float(d @ d)
        if not norm2 > 0:
            return
        beta = 4.0 / norm2  # logit(k) - logit(j) = -2 at c1, +2 at c2
        with torch.no_grad():
            w, b = layer.weight, layer.bias
            w[k] = w[j] + torch.as_tensor(beta * d, dtype=w.dtype, device=w.device)
            if b is not None:
                b[k] = b[j] - beta * float(d @ (c1 + c2) / 2)
            for p in (w, b):
                state = {} if p is None or trainer.optimizer is None else \
                    trainer.optimizer.state.get(p, {})
                for value in state.values():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        value[k] = 0
        assigned[members[halves.labels_ == 1]] = k
        self.n_relocated += 1


#: rows read to judge the scale of the features (the first ones: a memmap reads one window)
_HINT_ROWS = 2048


def standardization_hint(X):
    """A sentence advising standardization when the columns of ``X`` have very unequal scales.

    The defaults were chosen on standardized features; on raw embeddings
    (column standard deviations spread over orders of magnitude) the linear
    head's logits are dominated by a few columns and the pseudo-labels can
    collapse.  Only the first rows are read.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature vectors.

    Returns
    -------
    hint : str or None
        None when the column scales look standardized (median standard
        deviation within [0.1, 10] and the 5th-95th percentile ratio below 100).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._callbacks import standardization_hint
    >>> X = np.random.default_rng(0).normal(size=(500, 4))
    >>> standardization_hint(X) is None
    True
    >>> X = X[:, :1] * np.logspace(-4, 1, 20)  # 20 columns, scales 1e-4 to 10
    >>> print(standardization_hint(X))  # doctest: +ELLIPSIS
    The features look unstandardized (column standard deviations from ... standardize them ...
    """
    sample = np.asarray(X[:_HINT_ROWS], dtype=np.float64)
    if sample.ndim != 2 or sample.shape[0] < 2:
        return None
    std = sample.std(axis=0)
    std = std[std > 0]
    if std.size == 0:
        return None
    lo, med, hi = np.percentile(std, [5, 50, 95])
    if 0.1 <= med <= 10 and hi <= 100 * lo:
        return None
    return (f"The features look unstandardized (column standard deviations from {lo:.2g} to "
            f"{hi:.2g} in the first rows); standardize them first (e.g. StandardScaler in a "
            "Pipeline), as the defaults assume.")
