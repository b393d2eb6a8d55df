"""Per-epoch checkpoints of the training loop, and resuming from them.

:class:`Checkpoint` is a :class:`skcce._training.Callback`: at the end of
every epoch it writes the model and optimizer state, the number of epochs
done, the loop's random generator state and the history to one file,
atomically (write to a temporary file, then rename), so a crash or a
``KeyboardInterrupt`` loses at most the epoch in progress.  Before training,
:meth:`Checkpoint.restore` loads that state back into a trainer and returns
the number of epochs already done; the caller then trains for the rest.

A checkpoint stores a ``signature`` (the estimator's parameters and the data
shape) and refuses to resume a run with different settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from skcce._training import Callback, EpochRecord

__all__ = ["Checkpoint", "estimator_checkpoint"]

logger = logging.getLogger(__name__)


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
    return repr(value)


class Checkpoint(Callback):
    """Save the training state every epoch; resume from it.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    signature : dict, default=None
        Settings the checkpoint belongs to (plain values; others are stored
        by ``repr``).  Resuming with a different signature raises ValueError.
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
    >>> ckpt2 = Checkpoint(ckpt.directory)
    >>> ckpt2.restore(trainer())
    2
    """

    def __init__(self, directory, *, signature=None, filename="checkpoint.pt"):
        self.directory = Path(directory)
        self.signature = _plain(signature or {})
        self.filename = filename
        self.epochs_done = 0

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    def state(self, trainer) -> dict:
        """Everything needed to continue training, as plain tensors and Python values."""
        state = {
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
        """Write the state atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        torch.save(self.state(trainer), tmp)
        os.replace(tmp, self.path)
        logger.debug("checkpoint of epoch %d written to %s", self.epochs_done, self.path)

    def load(self):
        """The saved state dict, or None when there is no checkpoint file."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("signature") != self.signature:
            raise ValueError(
                f"the checkpoint {self.path} was written for other settings "
                f"({state.get('signature')!r}, now {self.signature!r}); delete it or use "
                "another checkpoint_dir"
            )
        return state

    def restore(self, trainer) -> int:
        """Load a saved state into ``trainer``; return the epochs already done (0 if none)."""
        state = self.load()
        if state is None:
            self.epochs_done = 0
            return 0
        trainer.model.load_state_dict(state["model"])
        trainer.generator.set_state(state["generator"])
        if "optimizer" in state:
            if isinstance(trainer.optimizer, torch.optim.Optimizer):
                trainer.optimizer.load_state_dict(state["optimizer"])
            else:
                trainer.optimizer_state = state["optimizer"]
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        trainer.history = [
            EpochRecord(**{**r, "cluster_sizes": np.asarray(r["cluster_sizes"])})
            for r in state["history"]
        ]
        self.epochs_done = int(state["epoch"])
        logger.info("resuming from %s after %d epoch(s)", self.path, self.epochs_done)
        return self.epochs_done

    def on_epoch_end(self, trainer, record):
        self.epochs_done += 1
        self.save(trainer)


def estimator_checkpoint(estimator, n_samples, *, tag=""):
    """The :class:`Checkpoint` of an estimator with a ``checkpoint_dir``, or None without one.

    The signature holds the estimator's class, its parameters except those a
    resumed run may change (``checkpoint_dir``, ``verbose``, ``device``,
    ``max_epochs``, ``tol``, ``n_iter_no_change``), the number of samples and
    ``n_features_in_``.

    Parameters
    ----------
    estimator : BaseEstimator
        With a ``checkpoint_dir`` parameter.
    n_samples : int
        Rows of the training data.
    tag : str, default=''
        Distinguishes several runs of one fit (e.g. the seed of each
        ``n_init`` restart); part of the file name.

    Returns
    -------
    checkpoint : Checkpoint or None

    Examples
    --------
    >>> from skcce import CollisionClassifier
    >>> from skcce._checkpoint import estimator_checkpoint
    >>> estimator_checkpoint(CollisionClassifier(), 10) is None
    True
    """
    directory = getattr(estimator, "checkpoint_dir", None)
    if directory is None:
        return None
    skip = {"checkpoint_dir", "verbose", "device", "max_epochs", "tol", "n_iter_no_change"}
    params = {k: v for k, v in estimator.get_params(deep=False).items() if k not in skip}
    signature = {"estimator": type(estimator).__name__, "params": params,
                 "n_samples": int(n_samples),
                 "n_features_in": int(getattr(estimator, "n_features_in_", -1))}
    filename = f"checkpoint{'_' + tag if tag else ''}.pt"
    return Checkpoint(directory, signature=signature, filename=filename)
