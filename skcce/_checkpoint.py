"""Per-epoch checkpoints of the training loop, and resuming from them.

:class:`Checkpoint` is a :class:`skcce._training.Callback`: at the end of
every epoch it writes the model and optimizer state, the number of epochs
done, the loop's random generator state and the history to one file,
atomically (a temporary file in the same directory, then :func:`os.replace`),
so a crash, a killed process or a ``KeyboardInterrupt`` loses at most the
epoch in progress, and a failed write leaves the previous checkpoint intact
and no temporary file behind.  Before training, :meth:`Checkpoint.restore`
loads that state back into a trainer and returns the number of epochs
already done; the caller then trains for the rest.

When a fit resumes
------------------
:func:`estimator_checkpoint` names the file of a run
``checkpoint_<key>_<tag>.pt``.  ``key`` is a hash of the run's *signature*:

- the estimator's class and every parameter except ``checkpoint_dir``,
  ``verbose``, ``device``, ``max_epochs``, ``tol``, ``n_iter_no_change`` and
  ``callbacks`` (those may change between a crash and the resume).  Values
  enter by stable descriptions, never by a memory address: a callable by its
  qualified name and a hash of its bytecode, a ``RandomState`` or
  ``Generator`` by a hash of its state, a torch module by its class and the
  shapes of its ``state_dict``;
- a fingerprint of the training data (:func:`data_fingerprint`): shape,
  dtype and a SHA-256 of its rows (all rows up to 16 MiB of data, otherwise
  1,000 evenly spaced rows, read without loading a memmap), of the labels
  when there are any, and for a torch ``Dataset`` its length and 16 evenly
  spaced items.

``tag`` tells apart the runs of one fit (the ``n_init`` restarts).  A fit
resumes if and only if

1. a file with its key exists in ``checkpoint_dir``: for a seeded estimator
   (``random_state`` not None) the file of the same key *and* tag; for an
   unseeded one (``random_state=None``, whose tags are fresh random seeds)
   the most recently written file with its key, whatever its tag;
2. that file was left by a run that did not finish: one interrupted by
   ``KeyboardInterrupt``, killed, or stopped by an exception.  A run that
   finishes deletes its file; a run that diverges (non-finite loss) renames
   it to ``*.pt.diverged``, kept for inspection and never resumed;
3. the file passes validation (it loads with ``weights_only=True``, has the
   expected keys, the model's parameter names and shapes, finite weights,
   and the same signature); otherwise :class:`CheckpointError` is raised,
   naming the file.  Nothing is resumed silently from a damaged file.

So different data, other parameters or a finished run never resume, and
two runs of ``cross_validate`` or of a grid search write different files.
With ``n_init > 1`` only the restart in progress resumes: restarts that had
finished before the crash deleted their files and are trained again, and so
is a run killed after its training loop ended (during the final evaluation
or ``refine_epochs``).
Two identical unseeded fits started at once on one ``checkpoint_dir`` may
both resume the same interrupted file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from skcce._training import Callback, EpochRecord

__all__ = ["Checkpoint", "CheckpointError", "data_fingerprint", "estimator_checkpoint"]

logger = logging.getLogger(__name__)

#: Version of the file layout and of the signature; part of every key.
_FORMAT = 2
#: Parameters a resumed run may change.
_RESUMABLE_CHANGES = frozenset({"checkpoint_dir", "verbose", "device", "max_epochs", "tol",
                                "n_iter_no_change", "callbacks"})
#: Data up to this size is hashed in full; larger data by a sample of rows.
_FULL_HASH_BYTES = 16 * 2**20
_SAMPLE_ROWS = 1000
_DATASET_ITEMS = 16
_KEYS = ("format", "signature", "epoch", "model", "generator", "history")
_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed, or a ``checkpoint_dir`` that cannot be written.

    The message names the file or directory and says how to start over.

    Examples
    --------
    >>> from skcce._checkpoint import CheckpointError
    >>> issubclass(CheckpointError, ValueError)
    True
    """


# --------------------------------------------------------------------------- stable values
def _qualname(obj) -> str:
    name = getattr(obj, "__qualname__", type(obj).__name__)
    return f"{getattr(obj, '__module__', None) or '?'}.{name}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stable(value):
    """A JSON-able description of ``value`` with no memory address in it.

    Equal settings give equal descriptions in any process (on one Python
    version): callables by qualified name and bytecode hash, random states by
    a hash of their state, torch modules by class and parameter shapes.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.size <= 64:
            return {"ndarray": _stable(value.tolist()), "dtype": str(value.dtype)}
        return {"ndarray": list(value.shape), "dtype": str(value.dtype),
                "sha256": _sha(np.ascontiguousarray(value).tobytes())}
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_stable(v) for v in value), key=repr)
    return _stable_object(value)


def _stable_object(value):
    if isinstance(value, np.random.RandomState):
        state = value.get_state(legacy=False)
        return {"RandomState": _sha(repr(_stable(state)).encode())}
    if isinstance(value, np.random.Generator):
        return {"Generator": type(value.bit_generator).__name__,
                "state": _sha(repr(_stable(value.bit_generator.state)).encode())}
    if isinstance(value, torch.Generator):
        return {"torch.Generator": _sha(value.get_state().numpy().tobytes())}
    if isinstance(value, torch.nn.Module):
        return {"module": _qualname(type(value)),
                "state_dict": [[k, list(v.shape), str(v.dtype)]
                               for k, v in value.state_dict().items()]}
    if isinstance(value, type):
        return {"class": _qualname(value)}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, functools.partial):
        return {"partial": _stable(value.func), "args": _stable(value.args),
                "keywords": _stable(value.keywords)}
    if hasattr(value, "get_params") and not isinstance(value, type):
        return {"estimator": _qualname(type(value)), "params": _stable(value.get_params(False))}
    if callable(value) and hasattr(value, "__qualname__"):
        code = getattr(value, "__code__", None)
        described = {"callable": _qualname(value)}
        if code is not None:  # two lambdas of one scope share a name, not their bytecode
            described["code"] = _sha(code.co_code + repr(code.co_names).encode())
        return described
    return {"object": _qualname(type(value)), "repr": _ADDRESS.sub("", repr(value))}


# --------------------------------------------------------------------------- data fingerprint
def _as_array(rows):
    if torch.is_tensor(rows):
        return rows.detach().cpu().numpy()
    if hasattr(rows, "toarray"):  # scipy sparse
        return rows.toarray()
    return np.asarray(rows)


def _hash_array(h, arr):
    arr = np.asarray(arr)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    if arr.dtype.hasobject:
        h.update(repr(_stable(arr.tolist())).encode())
    else:
        h.update(np.ascontiguousarray(arr).tobytes())


def _evenly_spaced(n, k):
    """``k`` increasing, unique row ids from 0 to ``n - 1`` (one read per row, in order)."""
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _array_fingerprint(X):
    """Shape, dtype and a hash of all rows (small data) or of evenly spaced rows."""
    shape = tuple(int(s) for s in X.shape)
    n = shape[0] if shape else 0
    nbytes = X.dtype.itemsize * math.prod(shape)
    n_rows = n if nbytes <= _FULL_HASH_BYTES else min(n, _SAMPLE_ROWS)
    idx = _evenly_spaced(n, n_rows)
    h = hashlib.sha256()
    if shape:
        _hash_array(h, _as_array(X[idx]))
    else:
        _hash_array(h, _as_array(X))
    return {"shape": list(shape), "dtype": str(X.dtype), "rows_hashed": len(idx),
            "sha256": h.hexdigest()}


def _hash_item(h, item):
    if torch.is_tensor(item) or hasattr(item, "__array_interface__"):
        _hash_array(h, _as_array(item))  # tensors, arrays, PIL images
    elif isinstance(item, (tuple, list)):
        h.update(b"[")
        for part in item:
            _hash_item(h, part)
        h.update(b"]")
    elif isinstance(item, dict):
        for key in sorted(item, key=str):
            h.update(str(key).encode())
            _hash_item(h, item[key])
    else:
        h.update(repr(_stable(item)).encode())


def _dataset_fingerprint(dataset):
    n = len(dataset)
    idx = _evenly_spaced(n, min(n, _DATASET_ITEMS))
    first, second = hashlib.sha256(), hashlib.sha256()
    for i in idx.tolist():
        _hash_item(first, dataset[i])
        _hash_item(second, dataset[i])
    fingerprint = {"dataset": _qualname(type(dataset)), "len": n}
    if first.digest() == second.digest():
        return fingerprint | {"items_hashed": len(idx), "sha256": first.hexdigest()}
    # Items differ between two reads (random transforms): hash the raw data when exposed.
    data = getattr(dataset, "data", None)
    if data is not None and hasattr(data, "shape") and hasattr(data, "dtype"):
        return fingerprint | {"data": _array_fingerprint(data)}
    warnings.warn(
        f"the items of the {type(dataset).__name__} differ between two reads (random "
        "transforms?), so checkpoint_dir tells it apart from other data only by its length; "
        "a checkpoint of another dataset of the same length would be resumed. Give the "
        "Dataset deterministic items (skcce augments images itself) or a `data` array.",
        UserWarning, stacklevel=3)
    return fingerprint | {"items": "random"}


def data_fingerprint(X, y=None):
    """A description of the training data that changes when the data does.

    Parameters
    ----------
    X : array-like, memmap, torch tensor or torch Dataset
        The training data.  Arrays give their shape, dtype and a SHA-256 of
        their rows: every row when the data is at most 16 MiB, otherwise
        1,000 evenly spaced rows (only those rows are read, so a memmap is
        not loaded).  A ``Dataset`` gives its class, length and a hash of 16
        evenly spaced items.
    y : array-like, default=None
        Labels or targets, fingerprinted like ``X`` under the key ``'labels'``.

    Returns
    -------
    fingerprint : dict
        JSON-able; equal data gives equal fingerprints in any process.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._checkpoint import data_fingerprint
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> fp = data_fingerprint(X)
    >>> fp["shape"], fp["dtype"], fp["rows_hashed"]
    ([6, 2], 'float64', 6)
    >>> fp == data_fingerprint(X.copy()), fp == data_fingerprint(X[::-1])
    (True, False)
    """
    if isinstance(X, torch.utils.data.Dataset) and not torch.is_tensor(X):
        fingerprint = _dataset_fingerprint(X)
    elif hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__"):
        fingerprint = _array_fingerprint(X)  # ndarray, memmap, tensor, sparse
    else:
        fingerprint = _array_fingerprint(np.asarray(X))
    if y is not None:
        fingerprint["labels"] = _array_fingerprint(_as_array(y))
    return fingerprint


# --------------------------------------------------------------------------- the callback
def _plain(value):
    """Make ``value`` loadable with ``torch.load(weights_only=True)`` (no numpy objects)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return _stable(value)


def _finite(tensor):
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


class Checkpoint(Callback):
    """Save the training state every epoch; resume from it.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    signature : dict, default=None
        Settings the checkpoint belongs to (plain values; others are stored
        by a stable description).  Resuming with a different signature
        raises :class:`CheckpointError`.
    filename : str, default='checkpoint.pt'
        File name inside ``directory``.

    Attributes
    ----------
    epochs_done : int
        Epochs completed, counting those before a resume.

    Examples
    --------
    >>> import tempfile, numpy as np, torch
    >>> from skcce._checkpoint import Checkpoint
    >>> from skcce._training import ArraySource, Trainer
    >>> from skcce._objectives import MutualInformationObjective
    >>> X = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    >>> def trainer():
    ...     return Trainer(torch.nn.Linear(2, 2), MutualInformationObjective(),
    ...                    optimizer=lambda p: torch.optim.SGD(p, lr=0.1), batch_size=5,
    ...                    generator=torch.Generator().manual_seed(0), tol=None)
    >>> ckpt = Checkpoint(tempfile.mkdtemp())
    >>> t = trainer(); t.callbacks.append(ckpt); _ = t.fit(ArraySource(X), epochs=2)
    >>> ckpt.path.exists()  # a finished run deletes its file
    False
    >>> ckpt.save(t)  # as if it had been interrupted
    >>> Checkpoint(ckpt.directory).restore(trainer())
    2
    """

    def __init__(self, directory, *, signature=None, filename="checkpoint.pt"):
        self.directory = Path(directory)
        self.signature = _plain(signature or {})
        self.filename = filename
        self.epochs_done = 0

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.directory / self.filename

    def _error(self, problem):
        return CheckpointError(
            f"the checkpoint {self.path} {problem}; delete it or pass another checkpoint_dir to "
            "start over")

    def check_writable(self):
        """Create the directory if needed and check that a file can be written in it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise CheckpointError(
                f"checkpoint_dir={str(self.directory)!r} is not a writable directory "
                f"({err.strerror or err}); pass a writable directory, or checkpoint_dir=None "
                "to train without checkpoints") from err

    def state(self, trainer) -> dict:
        """Everything needed to continue training, as plain tensors and Python values."""
        state = {
            "format": _FORMAT,
            "signature": self.signature,
            "epoch": self.epochs_done,
            "model": trainer.model.state_dict(),
            "generator": trainer.generator.get_state(),
            "history": [_plain(dataclasses.asdict(r)) for r in trainer.history],
        }
        optimizer = trainer.optimizer
        if isinstance(optimizer, torch.optim.Optimizer):
            state["optimizer"] = optimizer.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, trainer):
        """Write the state atomically: a temporary file in the same directory, then a rename.

        On any failure the temporary file is removed and the previous
        checkpoint is left as it was; an ``OSError`` (full disk, lost
        permission) becomes a :class:`CheckpointError` naming the file.
        """
        state = self.state(trainer)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=self.filename + ".", suffix=".tmp",
                                       dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except OSError as err:
            raise CheckpointError(
                f"could not write the checkpoint {self.path} ({err.strerror or err}); the "
                "previous checkpoint, if any, is intact. Free space or pass another "
                "checkpoint_dir, then fit again to resume") from err
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        logger.debug("checkpoint of epoch %d written to %s", self.epochs_done, self.path)

    def load(self):
        """The saved state dict, or None when there is no checkpoint file.

        Raises
        ------
        CheckpointError
            When the file cannot be read with ``weights_only=True``, lacks an
            expected key, or was written for another signature.
        """
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for damaged files
            raise self._error(f"cannot be read ({type(err).__name__}): it is damaged, "
                              "truncated or not a checkpoint") from err
        if not isinstance(state, dict) or any(k not in state for k in _KEYS):
            missing = _KEYS if not isinstance(state, dict) else [k for k in _KEYS
                                                                  if k not in state]
            raise self._error(f"is not a checkpoint of this version (missing {list(missing)})")
        if state["format"] != _FORMAT:
            raise self._error(f"has format {state['format']!r}, expected {_FORMAT}")
        if state["signature"] != self.signature:
            raise self._error(f"was written for other settings ({state['signature']!r}, now "
                              f"{self.signature!r})")
        return state

    def _check_model(self, saved, model):
        expected = model.state_dict()
        if not isinstance(saved, dict) or set(saved) != set(expected):
            got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise self._error(f"holds model weights {got}, expected {sorted(expected)}")
        for name, value in expected.items():
            if not torch.is_tensor(saved[name]) or saved[name].shape != value.shape:
                shape = getattr(saved[name], "shape", None)
                raise self._error(f"holds {name!r} of shape {tuple(shape or ())}, expected "
                                  f"{tuple(value.shape)}")
            if not _finite(saved[name]):
                raise self._error(f"holds non-finite values in {name!r}")

    def _check_optimizer(self, saved, model):
        params = list(model.parameters())
        try:
            n_saved = sum(len(group["params"]) for group in saved["param_groups"])
            per_param = list(saved["state"].items())
        except (TypeError, KeyError, AttributeError) as err:
            raise self._error("holds an optimizer state of an unknown layout") from err
        if n_saved != len(params):
            raise self._error(f"holds an optimizer state for {n_saved} parameters, the model "
                              f"has {len(params)}")
        for index, buffers in per_param:
            for name, value in (buffers.items() if isinstance(buffers, dict) else ()):
                if not torch.is_tensor(value):
                    continue
                if not _finite(value):
                    raise self._error(f"holds non-finite values in the optimizer's {name!r}")
                if (value.dim() > 0 and isinstance(index, int) and index < len(params)
                        and value.shape != params[index].shape):
                    raise self._error(f"holds an optimizer {name!r} of shape "
                                      f"{tuple(value.shape)} for a parameter of shape "
                                      f"{tuple(params[index].shape)}")

    def _history(self, state):
        history, epoch = state["history"], state["epoch"]
        if not isinstance(epoch, int) or not isinstance(history, list) or len(history) != epoch:
            raise self._error(f"holds {epoch!r} epochs but a history of "
                              f"{len(history) if isinstance(history, list) else '?'}")
        try:
            records = [EpochRecord(**{**r, "cluster_sizes": np.asarray(r["cluster_sizes"])})
                       for r in history]
        except (TypeError, KeyError) as err:
            raise self._error("holds a history of an unknown layout") from err
        if not all(math.isfinite(r.loss) for r in records):
            raise self._error("holds a non-finite loss in its history")
        return records

    def restore(self, trainer) -> int:
        """Load a saved state into ``trainer``; return the epochs already done (0 if none).

        Everything is validated before anything is loaded, so on a
        :class:`CheckpointError` the trainer is unchanged.
        """
        state = self.load()
        if state is None:
            self.epochs_done = 0
            return 0
        self._check_model(state["model"], trainer.model)
        if "optimizer" in state:
            self._check_optimizer(state["optimizer"], trainer.model)
        generator = state["generator"]
        expected = trainer.generator.get_state()
        if (not torch.is_tensor(generator) or generator.dtype != torch.uint8
                or generator.shape != expected.shape):
            raise self._error("holds no valid random generator state")
        history = self._history(state)
        trainer.model.load_state_dict(state["model"])
        trainer.generator.set_state(generator)
        if "optimizer" in state:
            if isinstance(trainer.optimizer, torch.optim.Optimizer):
                try:
                    trainer.optimizer.load_state_dict(state["optimizer"])
                except (ValueError, KeyError, RuntimeError) as err:
                    raise self._error("holds an optimizer state that does not fit") from err
            else:
                trainer.optimizer_state = state["optimizer"]
        if "cuda_rng" in state and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):  # saved on a machine with other GPUs
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        trainer.history = history
        self.epochs_done = int(state["epoch"])
        logger.info("resuming from %s after %d epoch(s)", self.path, self.epochs_done)
        return self.epochs_done

    def on_train_begin(self, trainer):
        self.check_writable()

    def on_epoch_end(self, trainer, record):
        self.epochs_done += 1
        self.save(trainer)

    def on_train_end(self, trainer, result):
        """Delete the file of a finished run; keep an interrupted one; set a diverged one aside."""
        if result.interrupted:
            return
        if result.diverged:
            try:
                os.replace(self.path, self.path.with_name(self.path.name + ".diverged"))
            except FileNotFoundError:  # diverged before the first checkpoint
                pass
            except OSError as err:
                self.path.unlink(missing_ok=True)  # never resume a diverged run
                logger.warning("could not set aside %s (%s); removed it", self.path, err)
            return
        self.path.unlink(missing_ok=True)
        logger.debug("run finished; checkpoint %s removed", self.path)


# --------------------------------------------------------------------------- estimators
def _latest(directory: Path, key: str):
    """Name of the most recently written checkpoint with ``key`` in ``directory``, or None."""
    found = []
    for path in directory.glob(f"checkpoint_{key}*.pt"):
        with contextlib.suppress(OSError):  # removed meanwhile
            found.append((path.stat().st_mtime_ns, path.name))
    return max(found)[1] if found else None


def estimator_checkpoint(estimator, X, *, tag="", y=None):
    """The :class:`Checkpoint` of an estimator with a ``checkpoint_dir``, or None without one.

    The signature holds the estimator's class, its parameters except those a
    resumed run may change (``checkpoint_dir``, ``verbose``, ``device``,
    ``max_epochs``, ``tol``, ``n_iter_no_change``, ``callbacks``) and the
    :func:`data_fingerprint` of ``X`` (and ``y``); the module docstring says
    exactly when a fit resumes.  The directory is checked to be writable
    here, before any training.

    Parameters
    ----------
    estimator : BaseEstimator
        With ``checkpoint_dir`` and ``random_state`` parameters.
    X : array-like, memmap, images or torch Dataset
        The training data, as validated by the estimator (the array or
        Dataset its data source reads).
    tag : str, default=''
        Distinguishes the runs of one fit (e.g. the seed of each ``n_init``
        restart); part of the file name.
    y : array-like, default=None
        Labels or targets of the fit, when there are any.

    Returns
    -------
    checkpoint : Checkpoint or None

    Raises
    ------
    CheckpointError
        When ``checkpoint_dir`` is not a writable directory.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from skcce import CollisionClassifier
    >>> from skcce._checkpoint import estimator_checkpoint
    >>> X = np.zeros((10, 2))
    >>> estimator_checkpoint(CollisionClassifier(), X) is None
    True
    >>> est = CollisionClassifier(checkpoint_dir=tempfile.mkdtemp(), random_state=0)
    >>> estimator_checkpoint(est, X, tag="0").filename  # doctest: +ELLIPSIS
    'checkpoint_..._0.pt'
    """
    directory = getattr(estimator, "checkpoint_dir", None)
    if directory is None:
        return None
    params = {k: v for k, v in estimator.get_params(deep=False).items()
              if k not in _RESUMABLE_CHANGES}
    data = data_fingerprint(X, y)
    signature = _stable({"format": _FORMAT, "estimator": _qualname(type(estimator)),
                         "params": params, "data": data})
    key = _sha(json.dumps(signature, sort_keys=True).encode())[:16]
    checkpoint = Checkpoint(directory, signature=signature,
                            filename=f"checkpoint_{key}{'_' + str(tag) if tag != '' else ''}.pt")
    checkpoint.check_writable()
    if params.get("random_state", 0) is None:
        # Unseeded runs get fresh seeds as tags: resume the latest run with these settings.
        checkpoint.filename = _latest(checkpoint.directory, key) or checkpoint.filename
    return checkpoint
