"""The one training loop shared by every estimator and every method (Algorithm 1).

Dependencies point one way (the LightningModule / Trainer split): the
estimator builds the model side (network, objective, views) and a
:class:`Trainer`; the trainer calls the model side, never the reverse.

* :class:`Trainer` owns the loop and nothing method-specific: epochs and
  mini-batches, the device, the precision (autocast), callbacks,
  snapshot/restore of the last finite state and the early stop.
* An *objective* (:mod:`skcce._objectives`) is called as
  ``objective(step, batch) -> StepOutput``; ``step`` is a :class:`ModelStep`
  that gives it what it needs: the forward pass, the views hook and a loader
  of other rows of the training data (e.g. neighbours).  It does not see the
  trainer.
* Side jobs (progress bar, BatchNorm recalibration, collapse warning,
  checkpoints, a user's logging) are callbacks (:mod:`skcce._callbacks`).

The loop is split into small overridable steps, from the outside in::

    fit -> fit_loop -> run_single_epoch -> train_step -> objective(step, batch)

No input validation happens here: the estimators validate first.

Stopping early is a flag (``trainer.stop_training = True``), never an
exception.  A ``KeyboardInterrupt`` stops the loop and returns with
``interrupted=True`` and the model trained so far (the estimators then
re-raise it).  A non-finite loss restores the last good state and stops with
a :class:`~sklearn.exceptions.ConvergenceWarning`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from skcce._callbacks import Callback
from skcce._progress import progress_bar
from skcce._sources import ArraySource
from skcce._validation import warn

__all__ = [
    "ArraySource",
    "Batch",
    "Callback",
    "EpochRecord",
    "ModelStep",
    "StepOutput",
    "TrainResult",
    "Trainer",
    "resolve_device",
]

logger = logging.getLogger(__name__)

_DEVICE_TYPES = ("cpu", "cuda", "mps")
# Rows of feature vectors per forward pass when predicting: about 4M input values,
# at most 16384 rows (the hidden layer of an MLP head stays a few tens of MB).
_PREDICT_VALUES = 2**22
_PREDICT_MAX_ROWS = 16384


@contextlib.contextmanager
def intra_op_threads(n_threads):
    """Run a block with ``n_threads`` torch (and Numba) threads; the caller's counts are restored.

    The matrices of one mini-batch of feature vectors are small, so several
    threads mostly wait for each other (and on a busy machine for a core);
    a fixed count also makes the floating-point reductions, and so a seeded
    fit, independent of the caller's thread settings.  ``None`` leaves the
    caller's settings as they are.

    Parameters
    ----------
    n_threads : int or None
        Threads for the block; ``None`` changes nothing.

    Yields
    ------
    None

    Examples
    --------
    >>> import torch
    >>> from skcce._training import intra_op_threads
    >>> before = torch.get_num_threads()
    >>> with intra_op_threads(1):
    ...     inside = torch.get_num_threads()
    >>> inside, torch.get_num_threads() == before
    (1, True)
    """
    if n_threads is None:
        yield
        return
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(int(n_threads))
    numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def resolve_device(device) -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; strings and devices are checked.

    Raises
    ------
    ValueError
        For a string that names no device, or CUDA when it is not available.

    Examples
    --------
    >>> from skcce._training import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in _DEVICE_TYPES:
        valid = ", ".join(repr(d) for d in ("auto", *_DEVICE_TYPES))
        raise ValueError(f"device must be one of {valid} (optionally with an index, e.g. "
                         "'cuda:0') or a torch.device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r} was requested but MPS is not available")
    return device


@dataclass
class Batch:
    """One mini-batch: row ids into the source, inputs and labels on the device."""

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
    diverged: bool = False


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended; the epochs themselves are in ``trainer.history``."""

    n_epochs: int = 0
    converged: bool = False
    interrupted: bool = False
    diverged: bool = False


class ModelStep:
    """The model side of a training step, as an objective receives it.

    Parameters
    ----------
    forward : callable
        ``forward(x) -> logits`` of the network (under the trainer's precision).
    rows : callable
        ``rows(indices) -> inputs`` of other rows of the training data, on the
        device (neighbours, for instance).
    views : callable, default=None
        Self-augmentation hook ``views(batch, rows, generator) -> list of input
        tensors`` (:class:`skcce.augment.AugmentViews`,
        :class:`skcce.augment.NeighborViews`).
    generator : torch.Generator, default=None
        The loop's generator, for random draws inside the step.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce._training import Batch, ModelStep
    >>> step = ModelStep(torch.nn.Linear(3, 2), rows=None)
    >>> step.log_proba(Batch(np.arange(4), torch.zeros(4, 3))).exp().sum(dim=1).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, forward, rows, *, views=None, generator=None):
        self.forward = forward
        self.rows = rows
        self.views = views
        self.generator = generator if generator is not None else torch.Generator()

    def augmented(self, batch):
        """The views' input tensors for ``batch`` (empty without a views hook)."""
        if self.views is None:
            return []
        return list(self.views(batch, self.rows, self.generator))

    def stacked_log_proba(self, inputs):
        """:math:`\\ln\\sigma` of several same-size inputs in one forward pass, (T, n, K)."""
        logits = self.forward(torch.cat(inputs, dim=0)).float()
        return torch.log_softmax(logits, dim=1).reshape(len(inputs), len(inputs[0]), -1)

    def log_proba(self, batch, views=True):
        """:math:`\\ln\\sigma` of a batch, averaged over the views in probability space."""
        inputs = self.augmented(batch) if views else []
        if not inputs:
            return torch.log_softmax(self.forward(batch.x).float(), dim=1)
        return torch.logsumexp(self.stacked_log_proba(inputs), dim=0) - np.log(len(inputs))


class Trainer:
    """Mini-batch training of a softmax model on a per-batch objective (Algorithm 1).

    Parameters
    ----------
    model : nn.Module
        Maps a batch of inputs to logits (n, K).
    objective : callable
        ``objective(step, batch) -> StepOutput`` with ``step`` a
        :class:`ModelStep`; see :mod:`skcce._objectives`.  None for a trainer
        used only for :meth:`predict_log_proba`.
    optimizer : callable or torch.optim.Optimizer
        Factory ``optimizer(params) -> Optimizer``, or a ready optimizer.
    batch_size : int
        Rows per mini-batch.
    max_epochs : int
        Epochs run by :meth:`fit` unless told otherwise.
    device : torch.device or str, default='cpu'
        Where the model and batches live during training.
    generator : torch.Generator, default=None
        CPU generator for shuffling, neighbour draws and augmentations.
    views : callable, default=None
        Self-augmentation hook passed to the objective (see :class:`ModelStep`).
    tol : float or None, default=1e-4
        Early stop when the epoch loss has not improved by ``tol`` for
        ``n_iter_no_change`` epochs in a row.  None disables it.
    n_iter_no_change : int, default=10
        Patience of the early stop.
    callbacks : sequence of Callback, default=()
        Hooks called during training, in this order.
    optimizer_state : dict, default=None
        State dict loaded into the optimizer when it is created (resuming).
    autocast_dtype : torch.dtype, default=None
        Run the forward pass under :func:`torch.autocast` with this dtype
        (bfloat16 for convolutional networks on CUDA).
    min_batch_size : int, default=2
        A trailing batch smaller than this joins the previous one (a batch
        of one row breaks BatchNorm; one with fewer rows than clusters
        cannot fill them all, and its fairness term is then infinite).
    n_threads : int or None, default=1
        Intra-op threads of torch (and Numba) during :meth:`fit` and
        :meth:`predict_log_proba`, set by :func:`intra_op_threads` and
        restored afterwards; None keeps the caller's settings.
    verbose : int, default=0
        Above 0, :meth:`predict_log_proba` shows a progress bar over its
        chunks (the epochs' bar is the :class:`~skcce._callbacks.ProgressBar`
        callback).

    Attributes
    ----------
    history : list of EpochRecord
        One record per finished epoch (including epochs before a resume).
    stop_training : bool
        Set it in a callback to end the loop after the current batch.
    shard : skcce._distributed.Shard or None
        This process's part of data-parallel training (set under
        ``torch.distributed``, see :mod:`skcce._distributed`), else None.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce._sources import ArraySource
    >>> from skcce._training import Trainer
    >>> from skcce._objectives import MutualInformationObjective
    >>> model = torch.nn.Linear(2, 2)
    >>> trainer = Trainer(model, MutualInformationObjective(lam=1.0),
    ...                   optimizer=lambda p: torch.optim.SGD(p, lr=0.1), batch_size=4,
    ...                   max_epochs=3, generator=torch.Generator().manual_seed(0))
    >>> X = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    >>> result = trainer.fit(ArraySource(X))
    >>> result.n_epochs, len(trainer.history), trainer.predict_log_proba(ArraySource(X)).shape
    (3, 3, torch.Size([10, 2]))
    """

    def __init__(self, model, objective, *, optimizer=None, batch_size=256, max_epochs=1,
                 device="cpu", generator=None, views=None, tol=1e-4, n_iter_no_change=10,
                 callbacks=(), optimizer_state=None, autocast_dtype=None, min_batch_size=2,
                 n_threads=1, verbose=0):
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
        self.optimizer_state = optimizer_state
        self.autocast_dtype = autocast_dtype
        self.min_batch_size = int(min_batch_size)
        self.n_threads = n_threads
        self.verbose = verbose
        self.stop_training = False
        self.shard = None  # set by skcce._distributed.data_parallel under torch.distributed
        self.history = []
        self._good_state = None
        self._step = None

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

    def load_batch(self, source, indices) -> Batch:
        """Assemble the :class:`Batch` for ``indices`` (row ids into ``source``)."""
        y = source.labels(indices)
        return Batch(indices=indices, x=self.to_device(source.rows(indices)),
                     y=None if y is None else self.to_device(y))

    def batch_indices(self, n, shuffle=True):
        """Row ids of each mini-batch of an epoch, shuffled with the trainer's generator."""
        order = torch.randperm(n, generator=self.generator).numpy() if shuffle else np.arange(n)
        if self.shard is not None:  # distributed: this rank's shard of each global batch
            return self.shard.split(self.batch_indices_from(order))
        return self.batch_indices_from(order)

    def batch_indices_from(self, order):
        """Split ``order`` into batches; a tail below ``min_batch_size`` joins the last batch."""
        n = len(order)
        size, tail = self.batch_size, self.min_batch_size
        if self.shard is not None:  # distributed: global batches, every shard >= 2 rows
            size, tail = self.shard.global_sizes(size, tail)
        starts = list(range(0, n, size))
        if len(starts) > 1 and n - starts[-1] < tail:
            starts.pop()
        bounds = starts[1:] + [n]
        return [order[a:b] for a, b in zip(starts, bounds, strict=True)]

    def forward(self, x):
        """Logits of the model for a batch of inputs (under autocast when ``autocast_dtype``)."""
        model = self.model if self.shard is None else self.shard.module(self.model)  # DDP
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return model(x)
        return model(x)

    def model_step(self, source) -> ModelStep:
        """What the objective receives while training on ``source``."""
        return ModelStep(self.forward, lambda indices: self.to_device(source.rows(indices)),
                         views=self.views, generator=self.generator)

    # ------------------------------------------------------------------ training
    def train_step(self, batch) -> StepOutput:
        """One gradient step on the objective of a batch."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective(self._step, batch)
        if torch.isfinite(out.loss):
            out.loss.backward()
            self.optimizer.step()
        return out

    def run_single_epoch(self, source, epoch) -> EpochRecord:
        """One pass over ``source`` in shuffled mini-batches.

        The epoch diverged when the loss tensor (what is differentiated)
        became non-finite.  A non-finite *reported* value with a finite loss
        (the fairness term of a batch that left a cluster empty) is recorded
        as it is and does not stop training.
        """
        start = time.perf_counter()
        total, n_seen, n_batches = 0.0, 0, 0
        counts = None
        for indices in self.batch_indices(len(source)):
            batch = self.load_batch(source, indices)
            out = self.train_step(batch)
            n_batches += 1
            if not torch.isfinite(out.loss):
                return EpochRecord(epoch=epoch, loss=float("nan"), cluster_sizes=np.zeros(0),
                                   n_batches=n_batches, duration=time.perf_counter() - start,
                                   diverged=True)
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
        if self.shard is not None:  # distributed: the epoch over every rank's rows
            total, n_seen, sizes = self.shard.reduce_epoch(total, n_seen, sizes)
        return EpochRecord(epoch=epoch, loss=total / max(n_seen, 1), cluster_sizes=sizes,
                           n_batches=n_batches, duration=time.perf_counter() - start)

    def fit(self, source, epochs=None) -> TrainResult:
        """Train for ``epochs`` (default ``max_epochs``) epochs over ``source``.

        Runs with ``n_threads`` intra-op threads (callbacks included).
        """
        with intra_op_threads(self.n_threads):
            return self._fit(source, epochs)

    def _fit(self, source, epochs):
        self.initialize()
        self._step = self.model_step(source)
        self.stop_training = False
        result = TrainResult()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            self.fit_loop(source, self.max_epochs if epochs is None else epochs, result)
        except KeyboardInterrupt:
            result.interrupted = True
            warn(f"Training interrupted after {len(self.history)} epoch(s); keeping the model "
                 "trained so far.", UserWarning)
            if not self._parameters_finite():
                self.restore()
        finally:
            self.model.eval()
            self._step = None
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def fit_loop(self, source, epochs, result):
        """The epoch loop: history, early stop and divergence."""
        self.snapshot()
        best, no_improve = np.inf, 0
        for record in self.history:  # a resumed run continues the early-stop count
            best, no_improve = _early_stop_update(best, no_improve, record.loss, self.tol)
        for epoch in range(epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            record = self.run_single_epoch(source, epoch)
            if record.diverged:
                result.diverged = True
                self.restore()
                warn(f"The loss became non-finite in epoch {epoch + 1}; the model was restored "
                     "to its last finite state and training stopped. Lower lr, or raise lam if "
                     "the clusters collapsed.", ConvergenceWarning)
                break
            self.snapshot()
            self.history.append(record)
            result.n_epochs += 1
            logger.debug("epoch %d loss %.6f sizes %s", epoch + 1, record.loss,
                         record.cluster_sizes.tolist())
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            best, no_improve = _early_stop_update(best, no_improve, record.loss, self.tol)
            if self.tol is not None and no_improve >= self.n_iter_no_change:
                result.converged = True
                break
            if self.stop_training:
                break

    # ------------------------------------------------------------------ state
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

    def state_copy(self):
        """Deep copy of the model on the CPU (for keeping the best of several runs)."""
        return copy.deepcopy(self.model).to("cpu")

    # ------------------------------------------------------------------ inference
    def predict_chunk_size(self, source):
        """Rows per forward pass when predicting: large chunks for feature vectors.

        A model in eval mode maps each row on its own, so the chunk size only
        sets the per-call overhead; images keep ``batch_size`` (activations).
        """
        shape = tuple(source.input_shape)
        if len(shape) != 1:
            return self.batch_size
        rows = min(_PREDICT_VALUES // max(shape[0], 1), _PREDICT_MAX_ROWS)
        return max(self.batch_size, rows)

    @torch.no_grad()
    def predict_log_proba(self, source, order=None, desc="predict"):
        """:math:`\\ln \\sigma` for every row of ``source``, as a float32 CPU tensor (eval mode).

        Runs with ``n_threads`` intra-op threads, in chunks of
        :meth:`predict_chunk_size` rows, with a progress bar over the chunks
        when ``verbose > 0``.

        Parameters
        ----------
        source : data source
            The rows (:mod:`skcce._sources`).
        order : ndarray of shape (n_rows,), default=None
            The order in which rows are visited (e.g. a fixed shuffle);
            None visits them in order.  The output is in row order either way.
        desc : str, default='predict'
            Label of the progress bar.

        Returns
        -------
        log_proba : torch.Tensor of shape (n_rows, n_outputs)
            :math:`\\ln\\sigma` of each row, float32, on the CPU.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skcce._sources import ArraySource
        >>> from skcce._training import Trainer
        >>> trainer = Trainer(torch.nn.Linear(2, 3), None)
        >>> trainer.predict_log_proba(ArraySource(np.zeros((4, 2), np.float32))).shape
        torch.Size([4, 3])
        """
        with intra_op_threads(self.n_threads):
            return self._predict_log_proba(source, order, desc)

    def _predict_log_proba(self, source, order, desc):
        self.model.to(self.device).eval()
        n = len(source)
        order = np.arange(n) if order is None else order
        out = None
        chunk = self.predict_chunk_size(source)
        with progress_bar(range(0, n, chunk), verbose=self.verbose, desc=desc,
                          unit="batch") as bar:
            for start in bar:
                idx = order[start:start + chunk]
                x = self.to_device(source.rows(idx))
                lp = torch.log_softmax(self.forward(x).float(), dim=1).cpu()
                if out is None:
                    out = torch.empty((n, lp.shape[1]), dtype=torch.float32)
                out[torch.from_numpy(np.asarray(idx))] = lp
        return out


def _early_stop_update(best, no_improve, loss, tol):
    """``(best, epochs without an improvement of tol)`` after an epoch of ``loss``."""
    if tol is None:
        return min(best, loss), 0
    no_improve = no_improve + 1 if loss > best - tol else 0
    return min(best, loss), no_improve
