"""``_BaseTorchEstimator``: what the skcce estimators share (the ``_BaseKMeans`` pattern).

The base owns, once for every estimator:

* the shared parameters (model, optimizer, loop, execution) and their
  constraints; subclasses extend ``_parameter_constraints``;
* input handling, decided once per call: feature vectors (validated by
  scikit-learn, float32 kept), images (arrays in any layout, numpy memmaps
  checked in place, never loaded whole) or a torch ``Dataset``;
* the up-front combination check :meth:`_check_params_vs_input`, which
  raises or warns before any work, in the estimator's own vocabulary;
* trainer construction (optimizer, callbacks, precision, checkpoint) and the
  prediction trainer;
* the all-or-nothing fitted state (:meth:`_fit_state`): a fit that fails
  leaves the estimator exactly as it was; a fit interrupted by Ctrl-C keeps
  the model trained so far and re-raises ``KeyboardInterrupt``;
* one convergence warning (:meth:`_warn_convergence`).

Subclasses (:class:`~skcce.CollisionClustering`,
:class:`~skcce.CollisionClassifier`) keep only what differs: their own
parameters, objective and fitted attributes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import numbers
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skcce._callbacks import BatchNormRecalibration, Callback, ProgressBar
from skcce._checkpoint import estimator_checkpoint
from skcce._distributed import (
    data_parallel,
    rank_device,
    restore_checkpoint,
    shared_seed,
    writes_checkpoints,
)
from skcce._sources import ArraySource, DatasetSource, image_source, is_dataset
from skcce._training import Trainer, resolve_device
from skcce._validation import check_float32_range, warn
from skcce.augment import check_images
from skcce.networks import BACKBONES, build_model

__all__ = ["OPTIMIZERS", "optimizer_factory", "is_image_input", "prepare_images"]

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def optimizer_factory(optimizer, lr, weight_decay, optimizer_params=None):
    """``params -> torch.optim.Optimizer`` for an estimator's optimizer parameters.

    Parameters
    ----------
    optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class
        The optimizer.
    lr : float
        Learning rate.
    weight_decay : float
        L2 penalty.
    optimizer_params : dict, default=None
        Further keyword arguments of the optimizer.

    Returns
    -------
    factory : callable
        Called with the model's parameters.

    Examples
    --------
    >>> import torch
    >>> from skcce._base import optimizer_factory
    >>> factory = optimizer_factory("sgd", 0.1, 0.0, {"momentum": 0.9})
    >>> opt = factory(torch.nn.Linear(2, 2).parameters())
    >>> type(opt).__name__, opt.defaults["momentum"]
    ('SGD', 0.9)
    """
    cls = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer
    return functools.partial(cls, lr=lr, weight_decay=weight_decay, **(optimizer_params or {}))


# --------------------------------------------------------------------------- image input
def is_image_input(X, model=None, image_shape=None) -> bool:
    """Whether an estimator should treat ``X`` as images rather than feature vectors.

    True when ``image_shape`` is given, ``X`` is a torch Dataset, ``model``
    names a convolutional backbone, or ``model`` is a custom module and ``X``
    a 3-D / 4-D array.  The feature-vector models ``'linear'`` and ``'mlp'``
    take 2-D input only (unless ``image_shape`` says the rows are images).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._base import is_image_input
    >>> is_image_input(np.zeros((2, 28, 28)), "vgg4"), is_image_input(np.zeros((2, 5)), "linear")
    (True, False)
    """
    if image_shape is not None or is_dataset(X):
        return True
    if isinstance(model, str):
        return model in BACKBONES
    return getattr(X, "ndim", 2) in (3, 4)


def _check_finite_chunked(X, chunk=4096):
    if X.dtype == np.uint8:
        return
    for start in range(0, X.shape[0], chunk):
        if not np.isfinite(X[start : start + chunk]).all():
            raise ValueError("Input X contains NaN or infinity.")


def prepare_images(estimator, X, *, image_shape=None, reset=True):
    """Validate image input for an estimator without copying it; return ``(X, layout)``.

    Arrays (including read-only numpy memmaps) are inspected in place; a
    torch tensor is viewed as an array.  On ``reset`` the estimator's
    ``n_features_in_`` (pixels per image) and ``_image_shape`` are set;
    otherwise the images must have the shape seen in ``fit``.

    Parameters
    ----------
    estimator : BaseEstimator
        Receives ``n_features_in_`` and ``_image_shape``.
    X : ndarray, numpy memmap, torch.Tensor or torch Dataset
        Images (see :func:`skcce.augment.check_images`) or a Dataset.
    image_shape : tuple of int, optional
        ``(C, H, W)``, required for 2-D ``X``.
    reset : bool, default=True
        True in ``fit``, False in ``predict``.

    Returns
    -------
    X : ndarray or Dataset
        The images, not copied.
    layout : ImageLayout or None
        None for a Dataset.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.base import BaseEstimator
    >>> from skcce._base import prepare_images
    >>> est = BaseEstimator()
    >>> _, layout = prepare_images(est, np.zeros((3, 28, 28), np.uint8))
    >>> est.n_features_in_, layout.shape
    (784, (1, 28, 28))
    """
    if is_dataset(X):
        shape = DatasetSource(X).input_shape
        layout = None
    else:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"images need at least one sample, got an array of shape {X.shape}")
        layout = check_images(X, image_shape)
        _check_finite_chunked(X)
        shape = layout.shape
    if reset:
        estimator.n_features_in_ = math.prod(shape)
        estimator._image_shape = shape
    elif getattr(estimator, "_image_shape", None) != shape:
        raise ValueError(
            f"X holds images of shape {shape}, but the estimator was fitted on "
            f"{getattr(estimator, '_image_shape', None)}"
        )
    return X, layout


def _state_to_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _state_to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_state_to_cpu(v) for v in state)
    return copy.deepcopy(state)


# --------------------------------------------------------------------------- the base
class _BaseTorchEstimator(BaseEstimator):
    """Base class of the estimators trained by :class:`skcce._training.Trainer`.

    Not for direct use.  Subclasses define ``__init__`` (the shared
    parameters below with the same defaults, plus their own), extend
    ``_parameter_constraints``, and implement ``fit``.
    """

    _parameter_constraints: dict = {
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
        "callbacks": [list, tuple, None],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"),
                   Interval(numbers.Integral, None, -1, closed="right"), None],
        "checkpoint_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ------------------------------------------------------------------ input
    def _is_images(self, X):
        return is_image_input(X, self.model, self.image_shape)

    def _validate_X(self, X, *, reset):
        """``(X, layout)``: validated features (layout None) or images checked in place."""
        if self._is_images(X):
            return prepare_images(self, X, image_shape=self.image_shape, reset=reset)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        check_float32_range(X)
        return X, None

    def _source(self, X, layout, y=None):
        """The loop's data source for validated ``X`` (see :mod:`skcce._sources`)."""
        if layout is None and not is_dataset(X):
            return ArraySource(X, y)
        return image_source(X, layout, y, pin_memory=self._device().type == "cuda")

    def _device(self):
        return rank_device(resolve_device(self.device))  # distributed: cuda:LOCAL_RANK

    def _n_threads(self):
        """torch threads of the fit and of predictions: ``n_jobs`` (None: 1, -1: all cores)."""
        if self.n_jobs is None:
            return 1
        return max(1, os.cpu_count() + 1 + self.n_jobs) if self.n_jobs < 0 else self.n_jobs

    def _check_params_vs_input(self, X, images):
        """Raise or warn, before any work, on parameters that do not fit together or with ``X``.

        Subclasses extend it (``super()._check_params_vs_input(X, images)``).
        """
        self._device()  # an unknown or unavailable device fails here, not in torch
        if self.callbacks is not None:
            bad = [c for c in self.callbacks if not isinstance(c, Callback)]
            if bad:
                raise ValueError("callbacks must be skcce.Callback instances; got "
                                 f"{type(bad[0]).__name__}")
        if self.augment is not None and not images and (
                callable(self.augment) or self.augment == "default"):
            raise ValueError("augment='default' or a callable transforms images; pass images "
                             "(or image_shape=(C, H, W))" + self._feature_augment_hint)

    _feature_augment_hint = ", or leave augment=None for feature vectors"

    # ------------------------------------------------------------------ model and trainer
    def _model_params(self):
        return self.model_params

    def _build_model(self, input_shape, n_outputs, generator):
        return build_model(self.model, input_shape, n_outputs, generator=generator,
                           model_params=self._model_params())

    def _make_optimizer(self, lr=None):
        return optimizer_factory(self.optimizer, self.lr if lr is None else lr,
                                 self.weight_decay, self.optimizer_params)

    def _make_trainer(self, model, objective, *, generator, source, images, n_outputs,
                      views=None, callbacks=(), optimizer_state=None, epochs=None, lr=None,
                      tol="default", desc="epochs"):
        """A :class:`Trainer` with the estimator's settings and callbacks.

        The callbacks run in this order: BatchNorm recalibration, the
        subclass's ``callbacks``, the user's ``callbacks``, the progress bar
        (labeled ``desc``, when ``verbose > 0``).
        A trailing batch with fewer rows than ``n_outputs`` (at least 2)
        joins the previous one: a batch that cannot hold every cluster would
        leave one empty by construction.
        """
        device = self._device()
        epochs = self.max_epochs if epochs is None else epochs
        all_callbacks = [BatchNormRecalibration(source), *callbacks, *(self.callbacks or ())]
        if self.verbose > 0:
            all_callbacks.append(ProgressBar(epochs, desc))
        autocast = None  # bf16 for convolutional networks on GPUs that support it
        if device.type == "cuda" and images and torch.cuda.is_bf16_supported():
            autocast = torch.bfloat16
        return data_parallel(Trainer(model, objective, optimizer=self._make_optimizer(lr),
                       batch_size=self.batch_size, max_epochs=epochs, device=device,
                       generator=generator, views=views,
                       tol=self.tol if tol == "default" else tol,
                       n_iter_no_change=self.n_iter_no_change, callbacks=all_callbacks,
                       optimizer_state=optimizer_state, autocast_dtype=autocast,
                       min_batch_size=self._min_batch_size(n_outputs),
                       n_threads=self._n_threads(), verbose=self.verbose))

    def _min_batch_size(self, n_outputs):
        return max(2, n_outputs)

    def _fit_trainer(self, trainer, source, X, *, epochs, tag="", resume=True):
        """Run ``trainer`` for ``epochs``, resuming from and saving to ``checkpoint_dir``."""
        checkpoint = self._checkpoint(source, X, tag) if resume and epochs > 0 else None
        if checkpoint is not None:
            if writes_checkpoints():  # distributed: rank 0 writes, every rank resumes
                trainer.callbacks.append(checkpoint)
            epochs = max(epochs - restore_checkpoint(checkpoint, trainer), 0)
        return trainer.fit(source, epochs=epochs)

    def _checkpoint(self, source, X, tag):
        # the fingerprint covers the labels or targets too: other targets on the same X
        # must not resume
        y = getattr(source, "targets", getattr(source, "y", None))
        return estimator_checkpoint(self, X, tag=tag, y=y)

    def _train(self, X, source, *, seed, objective, n_outputs, images, views=None,
               callbacks=(), warm=False, epochs=None, tag="", desc="epochs"):
        """One run: a new seeded model, or the fitted one on ``warm``; ``(trainer, result)``.

        A warm run continues the previous fit's optimizer and generator
        states and neither resumes from nor writes a checkpoint.  ``desc``
        labels the epochs' progress bar.
        """
        generator = torch.Generator().manual_seed(shared_seed(seed))  # same on every rank
        optimizer_state = None
        if warm:
            model = copy.deepcopy(self.model_)
            optimizer_state = self._optimizer_state
            generator.set_state(self._generator_state)
        else:
            model = self._build_model(source.input_shape, n_outputs, generator)
        trainer = self._make_trainer(model, objective, generator=generator, source=source,
                                     images=images, n_outputs=n_outputs, views=views,
                                     callbacks=callbacks, optimizer_state=optimizer_state,
                                     epochs=epochs, desc=desc)
        epochs = self.max_epochs if epochs is None else epochs
        return trainer, self._fit_trainer(trainer, source, X, epochs=epochs, tag=tag,
                                          resume=not warm)

    def _keep_training_state(self, trainer):
        """Set ``model_`` and keep the optimizer and generator states for a warm start."""
        self.model_ = trainer.state_copy()
        self._optimizer_state = _state_to_cpu(trainer.optimizer.state_dict())
        self._generator_state = trainer.generator.get_state()

    # ------------------------------------------------------------------ prediction
    def _predictor(self, X, batch_size=None):
        """``(trainer, X, layout)``: a prediction trainer for the fitted model and validated X.

        With ``verbose > 0`` its passes show a progress bar over their batches.
        """
        check_is_fitted(self, "model_")
        X, layout = self._validate_X(X, reset=False)
        device = self._device()
        model = self.model_ if device.type == "cpu" else copy.deepcopy(self.model_)
        batch_size = max(self.batch_size, 1024) if batch_size is None else batch_size
        return (Trainer(model, None, batch_size=batch_size, device=device,
                        n_threads=self._n_threads(), verbose=self.verbose), X, layout)

    def _predict_log_proba(self, X):
        """:math:`\\ln\\sigma` of ``X`` as a float32 torch tensor, and the validated ``X``."""
        trainer, X, layout = self._predictor(X)
        return trainer.predict_log_proba(self._source(X, layout)), X

    # ------------------------------------------------------------------ fitted state
    @contextlib.contextmanager
    def _fit_state(self):
        """On any error, put the estimator's state back as it was: nothing is left half-fitted."""
        saved = dict(self.__dict__)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _end_fit(self, result, *, interrupted=False, problems=()):
        """After the fitted state is set: the convergence warning, or re-raise a Ctrl-C."""
        if interrupted or result.interrupted:
            raise KeyboardInterrupt
        self._warn_convergence(result, problems)

    def _warn_convergence(self, result, problems=()):
        """The one ConvergenceWarning of a fit: ``max_epochs`` reached, and ``problems``.

        Parameters
        ----------
        result : TrainResult
            How the kept run ended.
        problems : sequence of str
            Further sentences from the subclass, each naming the parameter to
            change (e.g. unconverged pseudo-label solves).
        """
        problems = list(problems)
        if self.tol is not None and not (result.converged or result.diverged):
            problems.insert(0, f"{type(self).__name__} stopped at max_epochs={self.max_epochs} "
                               f"before the loss settled (tol={self.tol}); increase max_epochs "
                               "or tol.")
        if problems:
            warn(" ".join(problems), ConvergenceWarning)


# --------------------------------------------------------------------------- shared docs
#: numpydoc entries of the parameters every estimator shares, filled into the class
#: docstrings by :func:`shared_docs` (one text, so the two estimators cannot drift).
_PARAMETER_DOCS = {
    "model": """model : str, nn.Module class, callable or nn.Module, default='linear'
    ``'linear'``: one linear layer, Kaiming init, zero bias (the paper);
    ``'mlp'``: hidden layers with BatchNorm and ReLU; ``'vgg4'``: the
    paper's VGG-4 (Table 7; images of shape (1, 28, 28), (3, 32, 32) or
    (3, 96, 96)); ``'resnet18'`` / ``'resnet50'``: torchvision ResNets
    (``model_params={'weights': ...}`` takes None, a torchvision weights
    name or a state_dict file); a class or factory is called as
    ``model(**model_params)``.  A model whose output width is not the
    number of clusters (classes) gets a linear head.""",
    "model_params": """model_params : dict, default=None
    Keyword arguments of the model, e.g. ``{'hidden_layer_sizes': (512,),
    'batch_norm': True}`` for ``'mlp'``.""",
    "optimizer": (
        "optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class, default='adam'\n"
        """    Optimizer, created as ``optimizer(params, lr=lr, weight_decay=weight_decay,
    **optimizer_params)``."""),
    "lr": """lr : float, default=1e-2
    Learning rate.""",
    "weight_decay": """weight_decay : float, default=0.0
    L2 penalty of the optimizer.""",
    "optimizer_params": """optimizer_params : dict, default=None
    Extra keyword arguments of the optimizer (e.g. ``{'momentum': 0.9}``).""",
    "batch_size": """batch_size : int, default=256
    Rows per mini-batch.  A trailing batch too small to train on joins the
    previous one.""",
    "max_epochs": """max_epochs : int, default=40
    Maximum number of passes over the data. Chosen by the sweep in
    ``docs/benchmarks/defaults_sweep.md``: longer training helped on every
    dataset there.""",
    "tol": """tol : float or None, default=None
    Early stop when the epoch loss has not decreased by ``tol`` for
    ``n_iter_no_change`` epochs, with a ConvergenceWarning when
    ``max_epochs`` comes first; None (the default) trains for exactly
    ``max_epochs``.""",
    "n_iter_no_change": """n_iter_no_change : int, default=10
    Patience of the early stop.""",
    "n_augment": """n_augment : int, default=2
    Augmented copies T per image whose :math:`\\sigma` are averaged.""",
    "image_shape": """image_shape : tuple of int, default=None
    ``(C, H, W)`` of 2-D rows that hold flattened images (so the
    estimator fits in a Pipeline).""",
    "checkpoint_dir": """checkpoint_dir : str or os.PathLike, default=None
    Save the model, optimizer, epoch and random-generator states there
    after every epoch; a later ``fit`` with the same settings and the same
    data (a fingerprint of its rows and labels) resumes from it
    (``max_epochs``, ``tol`` and ``device`` may differ), so a crash or
    ``KeyboardInterrupt`` loses at most one epoch.  A finished fit removes
    its file.  The reliability page of the docs says exactly when a fit
    resumes.""",
    "device": """device : {'auto', 'cpu', 'cuda'} or torch.device, default='auto'
    Where to train and predict ('auto': CUDA when available; 'cuda:1' and
    'mps' work too).  The fitted :attr:`model_` is kept on the CPU, so a
    fitted estimator loads anywhere.""",
    "random_state": """random_state : int, RandomState instance or None, default=None
    Seeds the initial weights, the shuffling and the random draws through
    local generators; global random states are never touched (None draws
    a fresh seed from the operating system).""",
    "n_jobs": """n_jobs : int, default=None
    Number of torch (and Numba) threads used by ``fit`` and by predictions, set for
    the call and restored afterwards.  None means 1: the matrices of a
    mini-batch of feature vectors are too small for threads to pay off,
    and a fixed count makes a seeded fit give the same result whatever the
    caller's ``torch.set_num_threads``.  -1 uses every core (for
    convolutional networks on a CPU); results then depend on the count.""",
    "verbose": """verbose : int, default=0
    > 0 shows a progress bar, with its rate and ETA, for each long phase:
    the training epochs, with the loss and cluster (class) sizes
    (``'epochs'``), and predictions (``'predict'``); for clustering also
    the neighbour graph (``'exact neighbours'``, ``'faiss index'``,
    ``'faiss search'``), the ``n_init`` restarts (``'restarts'``, with each
    restart's bars labeled ``'restart 2/5 ...'``), the refinement
    (``'refine targets'``, ``'refine'``) and the final evaluation of the
    training data (``'evaluate'``, ``'evaluate loss'``).  Finished bars
    are cleared; 0 shows nothing.""",
    "callbacks": """callbacks : list of skcce.Callback, default=None
    Hooks called by the training loop (``on_train_begin``,
    ``on_epoch_begin``, ``on_batch_end``, ``on_epoch_end``,
    ``on_train_end``) to log, stop early (set ``trainer.stop_training =
    True``) or save a model your own way; see :class:`skcce.Callback`.""",
}


def shared_docs(cls):
    """Class decorator: replace each docstring line ``{shared: a, b}`` by the docs of ``a``, ``b``.

    Examples
    --------
    >>> from skcce._base import shared_docs
    >>> @shared_docs
    ... class A:
    ...     '''Summary.
    ...
    ...     Parameters
    ...     ----------
    ...     {shared: lr}
    ...     '''
    >>> print(A.__doc__.splitlines()[4])
        lr : float, default=1e-2
    """
    lines = []
    for line in cls.__doc__.splitlines():
        stripped = line.strip()
        if stripped.startswith("{shared:") and stripped.endswith("}"):
            indent = line[: len(line) - len(line.lstrip())]
            for name in stripped[len("{shared:"):-1].split(","):
                entry = _PARAMETER_DOCS[name.strip()].splitlines()
                lines.extend(indent + text if text else text for text in entry)
        else:
            lines.append(line)
    cls.__doc__ = "\n".join(lines)
    return cls
