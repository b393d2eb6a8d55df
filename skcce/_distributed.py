"""Data-parallel training on ``torch.distributed`` (DistributedDataParallel).

When a process group is initialized (by the script under ``torchrun`` or
Spark's ``TorchDistributor``, or by Ray Train's ``TorchTrainer``) and holds more than one
process, every :class:`~skcce._training.Trainer` an estimator builds trains
data-parallel.  Each rank:

* draws the same shuffled order of all rows (the generators are seeded
  identically; rank 0's generator state is broadcast at every epoch start),
  cuts it into *global* batches of ``world_size * batch_size`` rows and reads
  only its contiguous shard of each;
* runs the forward pass through :class:`torch.nn.parallel.DistributedDataParallel`,
  so the gradients are averaged over the ranks (each shard's loss is
  weighted by its share of the global batch, so uneven tail shards average
  correctly);
* solves the pseudo-labels of the *global* batch: the detached predictions
  of the shards (a few rows times K numbers) are all-gathered, every rank
  solves the same EM on the same global batch (deterministic) and keeps its
  own rows.  The fairness term (the per-cluster column sums of the EM) thus
  sees the global batch.  Gathering :math:`\\sigma` once per solve costs one
  collective per step and leaves the Numba kernels alone; all-reducing the
  column sums inside every EM iteration would give the same result with one
  collective per iteration;
* draws the random neighbours of ``augment='cross_neighbors'`` for the whole
  global batch with the shared generator and keeps its slice, so the draws
  match a one-process run with batch ``world_size * batch_size``;
* all-reduces the epoch loss and cluster counts, so the history and every
  early-stop decision are the same on every rank.

Hooks in :mod:`skcce._training`, :mod:`skcce._objectives` and
:mod:`skcce._base` call the functions here; outside distributed training
(no process group, or a group of one process) every hook is the identity.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from skcce._callbacks import Callback

__all__ = ["is_distributed", "data_parallel", "rank_device", "shared_seed",
           "writes_checkpoints", "restore_checkpoint", "gather_batch", "batch_mean",
           "random_neighbors"]

#: The global batch of the training step running now (None outside a distributed step).
_STEP = contextvars.ContextVar("skcce_distributed_step", default=None)


def is_distributed() -> bool:
    """Whether an initialized ``torch.distributed`` process group holds more than one process.

    Examples
    --------
    >>> from skcce._distributed import is_distributed
    >>> is_distributed()
    False
    """
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _local_rank():
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return dist.get_rank() % max(torch.cuda.device_count(), 1)


def rank_device(device):
    """``device``, with CUDA pinned to this rank's GPU (``cuda:LOCAL_RANK``) under distributed.

    Parameters
    ----------
    device : torch.device
        The estimator's resolved device.

    Returns
    -------
    device : torch.device
        Unchanged outside distributed training or when it names a GPU index.

    Examples
    --------
    >>> import torch
    >>> from skcce._distributed import rank_device
    >>> rank_device(torch.device("cpu"))
    device(type='cpu')
    """
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", _local_rank())
    return device


def _comm_device():
    """Where collective tensors live: ``cuda:LOCAL_RANK`` for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", _local_rank())
    return torch.device("cpu")


def shared_seed(seed):
    """Rank 0's ``seed`` on every rank (an unseeded fit draws a different seed per process).

    Parameters
    ----------
    seed : int
        This rank's seed.

    Returns
    -------
    seed : int
        The seed every rank uses.

    Examples
    --------
    >>> from skcce._distributed import shared_seed
    >>> shared_seed(7)
    7
    """
    if not is_distributed():
        return seed
    t = torch.tensor([int(seed)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def writes_checkpoints() -> bool:
    """Whether this process writes checkpoint files: rank 0 only under distributed training.

    Examples
    --------
    >>> from skcce._distributed import writes_checkpoints
    >>> writes_checkpoints()
    True
    """
    return not is_distributed() or dist.get_rank() == 0


def restore_checkpoint(checkpoint, trainer):
    """Restore ``trainer`` from ``checkpoint`` on every rank; the epochs already done.

    Every rank reads the same file, so ``checkpoint_dir`` must be a folder
    all ranks see (a shared file system across nodes).  Ranks that resumed a
    different number of epochs raise instead of training out of step.

    Parameters
    ----------
    checkpoint : skcce._checkpoint.Checkpoint
        The fit's checkpoint.
    trainer : Trainer
        Receives the saved state.

    Returns
    -------
    epochs : int
        Epochs done before (0 without a file).
    """
    done = checkpoint.restore(trainer)
    if is_distributed():
        t = torch.tensor([done, -done], dtype=torch.int64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(
                f"the ranks found different checkpoints in {checkpoint.directory} (between "
                f"{-int(t[1])} and {int(t[0])} epochs done); checkpoint_dir must be a folder "
                "every rank sees, e.g. on a shared file system")
    return done


# --------------------------------------------------------------------------- one step
@dataclass
class _GlobalBatch:
    """The global batch a rank's shard belongs to: its rows and each rank's share."""

    indices: np.ndarray
    bounds: np.ndarray  # rank r holds indices[bounds[r]:bounds[r + 1]]
    rank: int
    device: torch.device

    @property
    def rows(self):
        return slice(int(self.bounds[self.rank]), int(self.bounds[self.rank + 1]))

    @property
    def sizes(self):
        return np.diff(self.bounds)

    def all_gather(self, local):
        """Concatenate every rank's ``local`` rows (float tensors of shape (n_r, ...))."""
        sizes = self.sizes
        pad = int(sizes.max())
        buf = torch.zeros((pad, *local.shape[1:]), dtype=local.dtype, device=self.device)
        buf[: len(local)] = local.to(self.device)
        parts = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(parts, buf)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).cpu()


def gather_batch(p):
    """The global batch's predictions and this rank's rows in it (identity outside a step).

    Parameters
    ----------
    p : ndarray of shape (n_rows, K)
        This rank's detached predictions.

    Returns
    -------
    p : ndarray of shape (n_global, K)
        Every rank's rows, in the order of the global batch.
    rows : slice
        This rank's rows of ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._distributed import gather_batch
    >>> p, rows = gather_batch(np.eye(2))
    >>> p.shape, rows
    ((2, 2), slice(None, None, None))
    """
    step = _STEP.get()
    if step is None:
        return p, slice(None)
    return step.all_gather(torch.from_numpy(np.ascontiguousarray(p))).numpy(), step.rows


def batch_mean(y):
    """Mean over the rows of the global batch of a shard's ``y`` (n_rows, K), in float64.

    Examples
    --------
    >>> import torch
    >>> from skcce._distributed import batch_mean
    >>> batch_mean(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist()
    [0.5, 0.5]
    """
    y = y.detach().double()
    step = _STEP.get()
    if step is None:
        return y.mean(dim=0)
    total = y.sum(dim=0).to(step.device)
    dist.all_reduce(total)
    return total.cpu() / len(step.indices)


def random_neighbors(neighbors, indices, generator):
    """:func:`skcce.augment.random_neighbors`, drawn for the global batch and sliced.

    The draws consume the shared generator exactly as a one-process run over
    the global batch does, so every rank stays in step with the others.

    Examples
    --------
    Outside a distributed step it is the plain draw:

    >>> import numpy as np, torch
    >>> from skcce import augment
    >>> from skcce._distributed import random_neighbors
    >>> graph = np.arange(12).reshape(4, 3)
    >>> a = random_neighbors(graph, [3, 1], torch.Generator().manual_seed(0))
    >>> b = augment.random_neighbors(graph, [3, 1], torch.Generator().manual_seed(0))
    >>> bool((a == b).all())
    True
    """
    from skcce.augment import random_neighbors as draw

    step = _STEP.get()
    if step is None:
        return draw(neighbors, indices, generator)
    return draw(neighbors, step.indices, generator)[step.rows]


# --------------------------------------------------------------------------- the trainer side
class Shard:
    """This rank's part of a trainer's work: its shards, the DDP wrapper and the reductions.

    Set as ``trainer.shard`` by :func:`data_parallel`; the trainer's hooks
    call it.

    Parameters
    ----------
    device : torch.device
        The trainer's device.
    """

    def __init__(self, device):
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        self.device = torch.device(device)
        self.comm_device = _comm_device()
        self._ddp = None
        self._batches = {}

    def global_sizes(self, batch_size, min_batch_size):
        """``(rows of a global batch, smallest global tail batch)`` for per-process sizes.

        A global batch holds ``batch_size`` rows per process; a trailing
        global batch joins the previous one below ``min_batch_size`` rows
        (the rule of a one-process run, whose fairness term sees the same
        global batch) or when a shard would get fewer than 2 rows (a
        BatchNorm layer cannot train on one).
        """
        return batch_size * self.world_size, max(min_batch_size, 2 * self.world_size)

    def split(self, batches):
        """This rank's contiguous shard of each global batch (sizes differ by at most 1)."""
        self._batches = {}
        shards = []
        for indices in batches:
            n = len(indices)
            if n < self.world_size:
                raise ValueError(f"a batch of {n} rows cannot be shared among "
                                 f"{self.world_size} processes; pass at least as many rows "
                                 "as processes")
            sizes = n // self.world_size + (np.arange(self.world_size) < n % self.world_size)
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            step = _GlobalBatch(np.asarray(indices), bounds, self.rank, self.comm_device)
            shard = step.indices[step.rows]
            self._batches[int(shard[0])] = step  # rows appear once per epoch
            shards.append(shard)
        return shards

    def step(self, indices):
        """The :class:`_GlobalBatch` of this rank's shard ``indices``."""
        return self._batches[int(np.asarray(indices)[0])]

    def module(self, model):
        """The DistributedDataParallel wrapper in a training step, else ``model`` itself.

        Forward passes without gradient (evaluation, BatchNorm
        recalibration) use the plain model: no collective, and every rank
        does them alike.
        """
        if not (model.training and torch.is_grad_enabled()):
            return model
        if self._ddp is None or self._ddp.module is not model:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(model, device_ids=ids)
        return self._ddp

    def sync_generator(self, generator):
        """Give every rank rank 0's generator state (the order of the epoch depends on it)."""
        state = generator.get_state().to(self.comm_device)
        dist.broadcast(state, src=0)
        generator.set_state(state.cpu())

    def reduce_epoch(self, total, n_seen, sizes):
        """``(total, n_seen, sizes)`` summed over the ranks: the epoch of the whole data."""
        t = torch.tensor([total, n_seen, *np.asarray(sizes, dtype=np.float64)],
                         dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        t = t.cpu().numpy()
        return float(t[0]), int(round(t[1])), np.rint(t[2:]).astype(np.int64)


class _ShardedObjective:
    """The trainer's objective run on one shard inside its global batch.

    Sets the step context (for the gathers of :func:`gather_batch`), weights
    the shard's loss by its share of the global batch (DDP then averages the
    gradients to those of the global mean) and makes a non-finite loss on
    any rank non-finite on all, so every rank skips the same steps.
    """

    def __init__(self, objective, shard):
        self.objective = objective
        self.shard = shard

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, step, batch):
        context = self.shard.step(batch.indices)
        token = _STEP.set(context)
        try:
            out = self.objective(step, batch)
        finally:
            _STEP.reset(token)
        finite = torch.tensor([float(torch.isfinite(out.loss).all())],
                              device=self.shard.comm_device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite.item()):
            out.loss = out.loss * float("nan")
        else:
            share = len(batch.indices) * self.shard.world_size / len(context.indices)
            if share != 1.0:
                out.loss = out.loss * share
        return out


class _GeneratorSync(Callback):
    """Broadcast rank 0's generator state at the start of every epoch."""

    def __init__(self, shard):
        self.shard = shard

    def on_epoch_begin(self, trainer, epoch):
        self.shard.sync_generator(trainer.generator)


def data_parallel(trainer):
    """Make ``trainer`` train data-parallel when a process group is initialized.

    Sets ``trainer.shard``, wraps its objective and adds the generator sync
    callback; outside distributed training ``trainer`` is returned unchanged.

    Parameters
    ----------
    trainer : Trainer
        A freshly built trainer.

    Returns
    -------
    trainer : Trainer
        The same object.

    Examples
    --------
    >>> import torch
    >>> from skcce._training import Trainer
    >>> from skcce._distributed import data_parallel
    >>> data_parallel(Trainer(torch.nn.Linear(2, 2), None)).shard is None
    True
    """
    if not is_distributed():
        return trainer
    trainer.shard = Shard(trainer.device)
    if trainer.objective is not None:
        trainer.objective = _ShardedObjective(trainer.objective, trainer.shard)
    trainer.callbacks.insert(0, _GeneratorSync(trainer.shard))
    return trainer
