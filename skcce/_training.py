"""The one training loop shared by every estimator and every method (Algorithm 1).

:class:`Trainer` owns the epoch / mini-batch loop and nothing method-specific:
what is minimized on a batch is an *objective* (see :mod:`skcce._objectives`)
passed in, the network is passed in, and so are the optimizer factory, the
data source, the optional ``views`` hook (self-augmentation) and callbacks.
The loop is split into small overridable steps, from the outside in::

    fit -> fit_loop -> run_single_epoch -> train_step -> objective(trainer, batch)
                                                        -> trainer.log_proba(batch)
                                                           -> views, forward

No input validation happens here: the estimators validate first.

Stopping early is a flag (``trainer.stop_training = True``), never an
exception.  A ``KeyboardInterrupt`` stops the loop, warns, and returns
normally with the model trained so far.  A non-finite loss restores the last
good state and stops with a :class:`~sklearn.exceptions.ConvergenceWarning`.
"""

from __future__ import annotations

import copy
import functools
import logging
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from skcce.networks import BACKBONES

__all__ = [
    "ArraySource",
    "Batch",
    "Callback",
    "EpochRecord",
    "StepOutput",
    "TrainResult",
    "Trainer",
    "TransformViews",
    "resolve_device",
]

logger = logging.getLogger(__name__)


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}

#: Parameter constraints shared by every estimator built on :class:`Trainer`
#: (model, optimizer, loop, execution); estimators extend this dict.
TRAINING_PARAMETER_CONSTRAINTS = {
    "model": [StrOptions({"linear", "mlp", *BACKBONES}), callable, torch.nn.Module],
    "model_params": [dict, None],
    "image_shape": [tuple, list, None],
    "n_augment": [Interval(numbers.Integral, 1, None, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), type],
    "lr": [Interval(numbers.Real, 0, None, closed="neither")],
    "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
    "optimizer_params": [dict, None],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
    "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device],
    "checkpoint_dir": [str, os.PathLike, None],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


def optimizer_factory(optimizer, lr, weight_decay, optimizer_params=None):
    """``params -> torch.optim.Optimizer`` for an estimator's optimizer parameters.

    Parameters
    ----------
    optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class
        The optimizer.
    lr, weight_decay : float
        Passed to the optimizer.
    optimizer_params : dict, default=None
        Further keyword arguments of the optimizer.

    Returns
    -------
    factory : callable

    Examples
    --------
    >>> import torch
    >>> from skcce._training import optimizer_factory
    >>> factory = optimizer_factory("sgd", 0.1, 0.0, {"momentum": 0.9})
    >>> opt = factory(torch.nn.Linear(2, 2).parameters())
    >>> type(opt).__name__, opt.defaults["momentum"]
    ('SGD', 0.9)
    """
    cls = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer
    return functools.partial(cls, lr=lr, weight_decay=weight_decay, **(optimizer_params or {}))


def fixed_order(n):
    """A fixed shuffle of ``range(n)`` for passes that do not train.

    Sorted data must not give single-class batches when evaluating the
    batch-level loss or recomputing BatchNorm statistics; the same order
    every time keeps those passes reproducible.
    """
    return np.random.default_rng(0).permutation(n)


def resolve_device(device) -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; strings and devices pass through.

    Examples
    --------
    >>> from skcce._training import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
    return device


# --------------------------------------------------------------------------- data
class ArraySource:
    """Rows of an indexable array (ndarray or ``np.memmap``) with optional partial labels.

    Only the rows of one batch are copied (and converted to ``dtype``) at a
    time, so memory stays O(batch) beyond the caller's array.  Another data
    source (e.g. a torch ``Dataset``) only needs ``__len__``, ``input_shape``,
    ``rows(indices)`` and ``labels(indices)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
        Indexable with an integer array.
    y : ndarray of shape (n_samples,), default=None
        Partial labels, -1 for unlabeled rows.
    dtype : torch.dtype, default=torch.float32
        Dtype of the batches.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._training import ArraySource
    >>> src = ArraySource(np.arange(6.0).reshape(3, 2))
    >>> len(src), src.input_shape, src.rows(np.array([2, 0])).tolist()
    (3, (2,), [[4.0, 5.0], [0.0, 1.0]])
    """

    def __init__(self, X, y=None, dtype=torch.float32):
        self.X = X
        self.y = None if y is None else np.asarray(y, dtype=np.int64)
        self.dtype = dtype
        self._np_dtype = torch.empty((), dtype=dtype).numpy().dtype

    def __len__(self):
        return len(self.X)

    @property
    def input_shape(self):
        return tuple(self.X.shape[1:])

    def rows(self, indices) -> torch.Tensor:
        # Integer-array indexing copies just these rows; the copy is writable.
        chunk = np.asarray(self.X[np.asarray(indices)])
        return torch.from_numpy(np.array(chunk, dtype=self._np_dtype, copy=None, order="C"))

    def labels(self, indices):
        if self.y is None:
            return None
        return torch.from_numpy(self.y[np.asarray(indices)])


@dataclass
class Batch:
    """One mini-batch: row ids into the source, inputs and partial labels on the device."""

    indices: np.ndarray
    x: torch.Tensor
    y: torch.Tensor | None = None


@dataclass
class StepOutput:
    """What an objective returns for one batch.

    ``loss`` carries the gradient; ``value`` is the full self-labeling loss
    reported in ``loss_curve_`` (it includes the fairness term, which has no
    gradient w.r.t. the model when pseudo-labels are fixed); ``log_proba`` is
    the detached log of :math:`\\sigma` used for cluster sizes; ``y`` the
    batch's pseudo-labels, if any.
    """

    loss: torch.Tensor
    value: float
    log_proba: torch.Tensor
    y: torch.Tensor | None = None


@dataclass
class EpochRecord:
    """History entry of one epoch."""

    epoch: int
    loss: float
    cluster_sizes: np.ndarray
    n_batches: int
    duration: float


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    loss_curve: list = field(default_factory=list)
    n_epochs: int = 0
    converged: bool = False
    interrupted: bool = False
    diverged: bool = False
    history: list = field(default_factory=list)


class Callback:
    """Base class with no-op hooks; subclass and override what you need.

    A hook may set ``trainer.stop_training = True`` to end the loop after the
    current batch.  Checkpointing, logging and schedulers are callbacks.
    """

    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch):
        pass

    def on_batch_end(self, trainer, batch, output):
        pass

    def on_epoch_end(self, trainer, record):
        pass

    def on_train_end(self, trainer, result):
        pass


class TransformViews:
    """``views`` hook returning ``n_views`` random transforms of the batch (paper section 5.2).

    Parameters
    ----------
    transform : callable
        ``transform(x, generator) -> tensor`` on a batch tensor.
    n_views : int, default=2
        Number of transformed copies whose :math:`\\sigma` are averaged.

    Examples
    --------
    >>> import torch
    >>> from skcce._training import Batch, TransformViews
    >>> views = TransformViews(lambda x, g: x + torch.randn(x.shape, generator=g), n_views=3)
    >>> b = Batch(indices=None, x=torch.zeros(4, 2))
    >>> len(views(b, None, torch.Generator().manual_seed(0)))
    3
    """

    def __init__(self, transform, n_views=2):
        self.transform = transform
        self.n_views = n_views

    def __call__(self, batch, trainer, generator):
        return [self.transform(batch.x, generator) for _ in range(self.n_views)]


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Mini-batch training of a softmax model on a per-batch objective (Algorithm 1).

    Parameters
    ----------
    model : nn.Module
        Maps a batch of inputs to logits (n, K).
    objective : callable
        ``objective(trainer, batch) -> StepOutput``; see :mod:`skcce._objectives`.
        It may be None for a trainer used only for :meth:`predict_proba`.
    optimizer : callable or torch.optim.Optimizer
        Factory ``optimizer(params) -> Optimizer``, or a ready optimizer.
    batch_size : int
        Rows per mini-batch.  A trailing batch of one row joins the previous one.
    max_epochs : int
        Epochs run by :meth:`fit` unless told otherwise.
    device : torch.device or str, default='cpu'
        Where the model and batches live during training.
    generator : torch.Generator, default=None
        CPU generator for shuffling, neighbour draws and augmentations.
    views : callable, default=None
        Self-augmentation hook ``views(batch, trainer, generator) -> list of input
        tensors``; :math:`\\sigma_i` is the mean of their softmax outputs.
    tol : float or None, default=1e-4
        Early stop when the epoch loss has not improved by ``tol`` for
        ``n_iter_no_change`` epochs in a row.  None disables it.
    n_iter_no_change : int, default=10
        Patience of the early stop.
    callbacks : sequence of Callback, default=()
        Hooks called during training.
    verbose : int, default=0
        > 0 shows a tqdm bar over epochs with the loss and cluster sizes.
    optimizer_state : dict, default=None
        State dict loaded into the optimizer when it is created (resuming).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce._training import ArraySource, Trainer
    >>> from skcce._objectives import MutualInformationObjective
    >>> model = torch.nn.Linear(2, 2)
    >>> trainer = Trainer(model, MutualInformationObjective(lam=1.0),
    ...                   optimizer=lambda p: torch.optim.SGD(p, lr=0.1), batch_size=4,
    ...                   max_epochs=3, generator=torch.Generator().manual_seed(0))
    >>> X = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    >>> result = trainer.fit(ArraySource(X))
    >>> result.n_epochs, trainer.predict_proba(ArraySource(X)).shape
    (3, (10, 2))
    """

    def __init__(self, model, objective, *, optimizer=None, batch_size=256, max_epochs=1,
                 device="cpu", generator=None, views=None, tol=1e-4, n_iter_no_change=10,
                 callbacks=(), verbose=0, optimizer_state=None):
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator()
        self.views = views
        self.tol = tol
        self.n_iter_no_change = int(n_iter_no_change)
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.optimizer_state = optimizer_state
        self.source = None
        # bf16 autocast on CUDA devices that support it (set by the estimators for conv nets)
        self.autocast_dtype = None
        self.stop_training = False
        self.history = []
        self._good_state = None

    # ------------------------------------------------------------------ setup
    def initialize(self):
        """Move the model to the device and build the optimizer (once)."""
        self.model.to(self.device)
        if self.optimizer is not None and not isinstance(self.optimizer, torch.optim.Optimizer):
            self.optimizer = self.optimizer(self.model.parameters())
            if self.optimizer_state is not None:
                self.optimizer.load_state_dict(self.optimizer_state)
        return self

    def to_device(self, tensor):
        """Copy a CPU batch tensor to the training device."""
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    def load_rows(self, indices):
        """Inputs of the given rows of the current source, on the device."""
        return self.to_device(self.source.rows(indices))

    def load_batch(self, source, indices) -> Batch:
        """Assemble the :class:`Batch` for ``indices`` (row ids into ``source``)."""
        y = source.labels(indices)
        return Batch(indices=indices, x=self.to_device(source.rows(indices)),
                     y=None if y is None else self.to_device(y))

    def batch_indices(self, n, shuffle=True):
        """Row ids of each mini-batch of an epoch, shuffled with the trainer's generator."""
        order = torch.randperm(n, generator=self.generator).numpy() if shuffle else np.arange(n)
        return self.batch_indices_from(order)

    # ------------------------------------------------------------------ forward
    def forward(self, x):
        """Logits of the model for a batch of inputs (under autocast when ``autocast_dtype``)."""
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.model(x)
        return self.model(x)

    def log_proba(self, batch, views=True):
        """:math:`\\ln \\sigma` for a batch, averaged over the views in probability space."""
        if not views or self.views is None:
            return torch.log_softmax(self.forward(batch.x).float(), dim=1)
        inputs = self.views(batch, self, self.generator)
        logits = self.forward(torch.cat(inputs, dim=0)).float()
        log_p = torch.log_softmax(logits, dim=1).reshape(len(inputs), len(batch.x), -1)
        return torch.logsumexp(log_p, dim=0) - np.log(len(inputs))

    # ------------------------------------------------------------------ training
    def train_step(self, batch) -> StepOutput:
        """One gradient step on the objective of a batch."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective(self, batch)
        if torch.isfinite(out.loss):
            out.loss.backward()
            self.optimizer.step()
        return out

    def run_single_epoch(self, source, epoch) -> EpochRecord:
        """One pass over ``source`` in shuffled mini-batches; loss is NaN if it diverged."""
        start = time.perf_counter()
        total, n_seen, n_batches = 0.0, 0, 0
        counts = None
        for indices in self.batch_indices(len(source)):
            batch = self.load_batch(source, indices)
            out = self.train_step(batch)
            n_batches += 1
            if not (np.isfinite(out.value) and torch.isfinite(out.loss)):
                total, n_seen = float("nan"), 1
                break
            k = out.log_proba.shape[1]
            c = torch.bincount(out.log_proba.argmax(dim=1), minlength=k).cpu()
            counts = c if counts is None else counts + c
            total += out.value * len(indices)
            n_seen += len(indices)
            for cb in self.callbacks:
                cb.on_batch_end(self, batch, out)
            if self.stop_training:
                break
        sizes = np.zeros(0, dtype=np.int64) if counts is None else counts.numpy()
        return EpochRecord(epoch=epoch, loss=total / max(n_seen, 1), cluster_sizes=sizes,
                           n_batches=n_batches, duration=time.perf_counter() - start)

    def fit(self, source, epochs=None) -> TrainResult:
        """Train for ``epochs`` (default ``max_epochs``) epochs over ``source``."""
        self.initialize()
        self.source = source
        self.stop_training = False
        result = TrainResult()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            self.fit_loop(source, self.max_epochs if epochs is None else epochs, result)
        except KeyboardInterrupt:
            result.interrupted = True
            warnings.warn(
                f"Training interrupted after {result.n_epochs} epoch(s); keeping the model "
                "trained so far.", UserWarning, stacklevel=2)
            if not self._parameters_finite():
                self.restore()
        finally:
            self.model.eval()
        self.recalibrate_batch_norm(source)
        self._warn_collapse(result)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def fit_loop(self, source, epochs, result):
        """The epoch loop: history, early stop, divergence and the progress bar."""
        self.snapshot()
        best, no_improve = np.inf, 0
        bar = _progress(epochs, self.verbose)
        for epoch in bar:
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            record = self.run_single_epoch(source, epoch)
            if not np.isfinite(record.loss):
                result.diverged = True
                self.restore()
                warnings.warn(
                    f"The loss became non-finite in epoch {epoch + 1}; the model was restored to "
                    "its last finite state and training stopped. Lower lr, or raise lam if the "
                    "clusters collapsed.", ConvergenceWarning, stacklevel=2)
                break
            self.snapshot()
            self.history.append(record)
            result.history.append(record)
            result.loss_curve.append(record.loss)
            result.n_epochs += 1
            if self.verbose > 0:
                bar.set_postfix(loss=f"{record.loss:.4f}", sizes=_sizes_str(record.cluster_sizes))
            logger.debug("epoch %d loss %.6f sizes %s", epoch + 1, record.loss,
                         record.cluster_sizes.tolist())
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            if self.tol is not None:
                no_improve = no_improve + 1 if record.loss > best - self.tol else 0
                best = min(best, record.loss)
                if no_improve >= self.n_iter_no_change:
                    result.converged = True
                    break
            if self.stop_training:
                break

    # ------------------------------------------------------------------ state
    @torch.no_grad()
    def recalibrate_batch_norm(self, source):
        """Recompute BatchNorm running statistics of the final model over ``source``.

        Running averages with momentum lag behind the weights, and after a few
        epochs (or a few hundred batches) eval-mode predictions drift from the
        train-mode ones the loss saw: measured on 600 MNIST images with VGG-4,
        2 epochs, predictions went from 2 used clusters to 10 and accuracy
        from 0.25 to 0.47 once the statistics were recomputed.  One pass
        without views, in a fixed shuffled order (sorted data would give
        single-class batches), with cumulative averaging (``momentum=None``).
        """
        norms = [m for m in self.model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms or len(source) < 2:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.source = source
        self.model.train()
        try:
            for idx in self.batch_indices_from(fixed_order(len(source))):
                self.forward(self.load_rows(idx))
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.model.eval()

    def batch_indices_from(self, order):
        """Split ``order`` into batches, merging a one-row tail (it breaks BatchNorm)."""
        n = len(order)
        starts = list(range(0, n, self.batch_size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        bounds = starts[1:] + [n]
        return [order[a:b] for a, b in zip(starts, bounds, strict=True)]

    def snapshot(self):
        """Remember the current model state (on the CPU) as the last good one."""
        self._good_state = {k: v.detach().to("cpu", copy=True)
                            for k, v in self.model.state_dict().items()}

    def restore(self):
        """Load the last good state back into the model."""
        if self._good_state is not None:
            self.model.load_state_dict(self._good_state)

    def _parameters_finite(self):
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _warn_collapse(self, result):
        if not result.history:
            return
        sizes = result.history[-1].cluster_sizes
        prior = getattr(self.objective, "prior", None)
        wanted = np.ones(len(sizes), bool) if prior is None else np.asarray(prior) > 0
        empty = np.flatnonzero((sizes == 0) & wanted)
        if empty.size:
            warnings.warn(
                f"{empty.size} of {len(sizes)} clusters received no points in the last epoch "
                "(pseudo-label collapse). Raise lam (the fairness weight), lower lr, or lower "
                "n_clusters.", ConvergenceWarning, stacklevel=3)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_log_proba(self, source, order=None):
        """:math:`\\ln \\sigma` for every row of ``source``, as a float32 CPU tensor (eval mode)."""
        self.model.to(self.device).eval()
        self.source = source
        n = len(source)
        order = np.arange(n) if order is None else order
        out = None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            lp = torch.log_softmax(self.forward(self.load_rows(idx)).float(), dim=1).cpu()
            if out is None:
                out = torch.empty((n, lp.shape[1]), dtype=torch.float32)
            out[torch.from_numpy(np.asarray(idx))] = lp
        return out

    def predict_proba(self, source):
        """:math:`\\sigma` for every row of ``source`` as a float32 ndarray."""
        return self.predict_log_proba(source).exp().numpy()

    @torch.no_grad()
    def evaluate(self, source, order):
        """Self-labeling loss and pseudo-labels of the final model, without views.

        Rows are visited in ``order`` in chunks of ``batch_size`` (the scale
        at which the fairness term was trained; pass a fixed random order so
        that sorted data does not make single-class batches).

        Returns
        -------
        loss : float
            Mean over rows of the objective's per-batch value.
        log_proba : torch.Tensor of shape (n, K)
        pseudo_labels : torch.Tensor of shape (n, K) or None
        """
        log_proba = self.predict_log_proba(source, order)
        n = len(source)
        total, y_all = 0.0, None
        for start in range(0, n, self.batch_size):
            idx = torch.from_numpy(np.asarray(order[start:start + self.batch_size]))
            value, y = self.objective.evaluate(log_proba[idx])
            total += value * len(idx)
            if y is not None:
                if y_all is None:
                    y_all = torch.zeros(log_proba.shape, dtype=torch.float32)
                y_all[idx] = y.float().cpu()
        return total / max(n, 1), log_proba, y_all

    def state_copy(self):
        """Deep copy of the model on the CPU (for keeping the best of several runs)."""
        return copy.deepcopy(self.model).to("cpu")


def _progress(epochs, verbose):
    if verbose > 0:
        from tqdm.auto import tqdm

        return tqdm(range(epochs), desc="epochs", leave=False)
    return range(epochs)


def _sizes_str(sizes):
    if len(sizes) <= 12:
        return ",".join(str(int(s)) for s in sizes)
    return f"min {int(sizes.min())} max {int(sizes.max())}"
