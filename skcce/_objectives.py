"""Per-batch objectives of the self-labeling methods, for the one loop in :mod:`skcce._training`.

An objective is a callable ``objective(step, batch) -> StepOutput``.  ``step``
is the model side of the batch (:class:`skcce._training.ModelStep`): it gives
:math:`\\ln\\sigma` (``step.log_proba``, which applies the views hook), the
augmented inputs (``step.augmented``) and other rows of the training data
(``step.rows``, for neighbours).  The objective solves pseudo-labels where
the method has them and returns the loss to differentiate; it never sees the
trainer.  ``objective.evaluate(log_proba)`` gives the value and pseudo-labels
of a fixed model (for ``score`` and ``n_init``), and :func:`evaluate` applies
it to a whole data set.  No input validation happens here.

=====================  =========================================================
method                 batch objective
=====================  =========================================================
CCE (ours)             :math:`\\overline{H_2(y,\\sigma)}`, y from EM on eq. 11 (or PGD, eq. 10)
MI-ADM                 :math:`\\overline{H(y,\\sigma)}`, y soft, forward :math:`KL(\\bar y\\|u)`
SeLa                   :math:`\\overline{H(y,\\sigma)}`, y hard from Sinkhorn
MI-GD                  :math:`\\overline{H(\\sigma)} + \\lambda KL(\\bar\\sigma\\|u)` (no y)
MI-D (IMSAT)           MI-GD plus :math:`KL(\\sigma(x)\\|\\sigma(t(x)))` over augmentations t
IIC                    :math:`-I(z; z')` of the predictions for two augmentations
=====================  =========================================================
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from skcce._distributed import batch_mean, gather_batch, random_neighbors
from skcce._training import Batch, StepOutput
from skcce.losses import (
    collision_cross_entropy,
    kl_prior_forward_np,
    kl_prior_reverse_np,
    mutual_information_loss,
    shannon_cross_entropy,
)

__all__ = [
    "Objective",
    "SelfLabelingObjective",
    "MutualInformationObjective",
    "CrossNeighborObjective",
    "PartialLabelsObjective",
    "SoftTargetObjective",
    "AugmentedMutualInformationObjective",
    "InvariantInformationObjective",
    "iic_loss",
    "evaluate",
]

class Objective:
    """Base class: ``__call__`` runs the forward pass, subclasses define :meth:`batch_loss`."""

    prior = None

    def solver_stats(self):
        """``(solves, unconverged)``: pseudo-label solves so far and how many hit their cap."""
        return 0, 0

    def __call__(self, step, batch) -> StepOutput:
        log_proba = step.log_proba(batch)
        loss, value, y = self.batch_loss(log_proba)
        return StepOutput(loss=loss, value=value, log_proba=log_proba, y=y)

    def batch_loss(self, log_proba):
        """Return ``(loss tensor, reported value, pseudo-labels or None)`` for one batch."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, log_proba):
        """Value and pseudo-labels of a batch for a fixed model."""
        _, value, y = self.batch_loss(log_proba)
        return value, y


class SelfLabelingObjective(Objective):
    """Cross-entropy to pseudo-labels solved for the batch (Algorithm 1).

    For each batch, :math:`y` minimizes :math:`\\overline{H(y, \\sigma)} + \\lambda
    KL` for the detached :math:`\\sigma` (warm-started from :math:`\\sigma`) by
    :func:`skcce.solvers.solve_pseudo_labels`; the model then descends on
    :math:`\\overline{H(y, \\sigma)}` with :math:`y` fixed.  The reported
    value adds the fairness term, i.e. it is the full loss of eq. 10 / 11.

    Parameters
    ----------
    lam : float
        Fairness weight (the solver's convention: mean over the batch).
    prior : ndarray of shape (K,), default=None
        Cluster proportions; uniform when None.
    loss : {'collision', 'shannon'}, default='collision'
        :math:`H_2` (eq. 9, ours) or Shannon's CE (MI-ADM, SeLa).
    fairness : {'reverse', 'forward'}, default='reverse'
        :math:`KL(u\\|\\bar y)` (eq. 11) or :math:`KL(\\bar y\\|u)` (eq. 10).
    solver : {'em', 'pgd', 'sinkhorn'}, default='em'
        The pseudo-label solver.
    solver_max_iter, solver_tol : int, float
        Passed to the solver.
    """

    def __init__(self, *, lam, prior=None, loss="collision", fairness="reverse", solver="em",
                 solver_max_iter=100, solver_tol=1e-6):
        self.lam = float(lam)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.loss = loss
        self.fairness = fairness
        self.solver = solver
        self.solver_max_iter = solver_max_iter
        self.solver_tol = solver_tol
        self.n_solves = 0
        self.n_unconverged = 0
        self._solver_prior = None

    @staticmethod
    def solver_input(proba):
        """Detached predictions ``proba`` (n, K) as a float64 ndarray for :meth:`solve`."""
        return proba.detach().to("cpu", torch.float64).numpy()

    def solve(self, p):
        """Pseudo-labels (float64 ndarray) of predictions ``p`` from :meth:`solver_input`.

        Rows are renormalised to the simplex.  Every solver is called through
        the unvalidated per-batch core (:func:`skcce.solvers._solve_batch`):
        the estimator validated ``lam``, the prior and the combination once.
        Non-finite predictions (overflowing logits: a diverged step, not a
        solver error) give NaN pseudo-labels.  Under data-parallel training
        the predictions of every rank's shard are gathered, every rank solves
        the same global batch, and each keeps its own rows.
        """
        from skcce import solvers

        p, rows = gather_batch(p)  # distributed: the global batch's rows, this rank's slice
        if not np.isfinite(p).all():
            return np.full(p.shape, np.nan)[rows]
        p = p / p.sum(axis=1, keepdims=True)
        k = p.shape[1]
        if self._solver_prior is None or len(self._solver_prior) != k:
            u = np.full(k, 1.0 / k) if self.prior is None else self.prior
            self._solver_prior = np.ascontiguousarray(u / u.sum(), dtype=np.float64)
        y, converged, _ = solvers._solve_batch(
            p, self.lam, self._solver_prior, self.fairness, self.solver, self.loss,
            max_iter=int(self.solver_max_iter), tol=float(self.solver_tol))
        self.n_solves += 1
        self.n_unconverged += not converged
        return np.asarray(y)[rows]

    def pseudo_labels(self, proba):
        """Solve :math:`y` for detached predictions ``proba`` (n, K); same device, float32."""
        y = self.solve(self.solver_input(proba))
        return torch.as_tensor(y, dtype=torch.float32, device=proba.device)

    def cross_entropy(self, log_proba, y, reduction="mean"):
        """:math:`H_2(y, \\sigma)` or :math:`H(y, \\sigma)` (mean, or per row with
        ``reduction='none'``); ``log_proba`` acts as logits."""
        if self.loss == "collision":
            return collision_cross_entropy(log_proba, y, reduction)
        return shannon_cross_entropy(log_proba, y, reduction)

    def solver_stats(self):
        return self.n_solves, self.n_unconverged

    def fairness_value(self, y):
        """:math:`\\lambda KL` of the batch's mean pseudo-label (a number, no gradient).

        ``lam=0`` is the plain, unbalanced objective: the term is 0 even when
        a cluster is empty (where the KL is infinite).
        """
        if self.lam == 0:
            return 0.0
        ybar = batch_mean(y).cpu().numpy()  # distributed: over the global batch
        kl = kl_prior_reverse_np if self.fairness == "reverse" else kl_prior_forward_np
        return self.lam * kl(ybar, self.prior)

    def batch_loss(self, log_proba):
        y = self.pseudo_labels(log_proba.detach().exp())
        loss = self.cross_entropy(log_proba, y)
        return loss, float(loss.detach()) + self.fairness_value(y), y


class MutualInformationObjective(Objective):
    """MI-GD (Bridle 1991, Krause 2010): gradient descent on :math:`\\overline{H(\\sigma)} +
    \\lambda KL(\\bar\\sigma \\| u)`, with no pseudo-labels.

    Parameters
    ----------
    lam : float
        Weight of the fairness term (1 gives the mutual information).
    prior : ndarray of shape (K,), default=None
        Cluster proportions; uniform when None.
    """

    def __init__(self, *, lam=1.0, prior=None):
        self.lam = float(lam)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)

    def batch_loss(self, log_proba):
        prior = None if self.prior is None else torch.as_tensor(self.prior, dtype=torch.float32)
        loss = mutual_information_loss(log_proba, prior, self.lam)
        return loss, float(loss.detach()), None


class CrossNeighborObjective(Objective):
    """Cross pseudo-labels between neighbours, symmetrized.

    For each row i and a random neighbour j, :math:`y_i` is solved from
    :math:`\\sigma_j` and :math:`y_j` from :math:`\\sigma_i`; the loss is
    :math:`\\frac12[\\overline{H(y_i,\\sigma_i)} + \\overline{H(y_j,\\sigma_j)}]`.
    With the collision CE this couples neighbours through a symmetric
    measure (:math:`H_2` is symmetric in its two distributions).

    Parameters
    ----------
    base : SelfLabelingObjective
        Gives the solver, the cross-entropy and the evaluation.
    neighbors : ndarray of shape (n_samples, k)
        Neighbour ids of each training row.
    """

    def __init__(self, base, neighbors):
        self.base = base
        self.neighbors = neighbors
        self.prior = base.prior

    def __call__(self, step, batch) -> StepOutput:
        n = len(batch.x)
        j = random_neighbors(self.neighbors, batch.indices, step.generator)  # global draws
        pair = Batch(indices=batch.indices, x=torch.cat([batch.x, step.rows(j)]))
        log_proba = step.log_proba(pair, views=False)
        # One conversion and one cross-entropy call for the pair; y_i is solved from the
        # neighbours' sigma (rows n:) and y_j from the batch's (rows :n).
        p = self.base.solver_input(log_proba.detach().exp())
        y = torch.as_tensor(np.concatenate([self.base.solve(p[n:]), self.base.solve(p[:n])]),
                            dtype=torch.float32, device=log_proba.device)
        per_row = self.base.cross_entropy(log_proba, y, reduction="none")
        loss = 0.5 * (per_row[:n].mean() + per_row[n:].mean())
        fair = 0.5 * (self.base.fairness_value(y[:n]) + self.base.fairness_value(y[n:]))
        value = float(loss.detach()) + fair
        return StepOutput(loss=loss, value=value, log_proba=log_proba[:n], y=y[:n])

    def evaluate(self, log_proba):
        return self.base.evaluate(log_proba)

    def solver_stats(self):
        return self.base.solver_stats()


class PartialLabelsObjective(Objective):
    """Adds Shannon CE on the labeled rows (label >= 0) to another objective (paper 5.3).

    The term is the mean of :math:`-\\ln\\sigma_{i,y_i}` over the labeled rows of the
    batch, whatever their share, so that a few labels are enough to tie the cluster ids to
    the label ids.

    Parameters
    ----------
    inner : Objective
        The self-labeling objective.
    weight : float, default=1.0
        Weight of the supervised term.
    """

    def __init__(self, inner, weight=1.0):
        self.inner = inner
        self.weight = weight
        self.prior = inner.prior

    def __call__(self, step, batch) -> StepOutput:
        out = self.inner(step, batch)
        if batch.y is None:
            return out
        mask = batch.y >= 0
        if bool(mask.any()):
            sup = F.nll_loss(out.log_proba[mask], batch.y[mask])
            out.loss = out.loss + self.weight * sup
            out.value += self.weight * float(sup.detach())
        return out

    def evaluate(self, log_proba):
        return self.inner.evaluate(log_proba)

    def solver_stats(self):
        return self.inner.solver_stats()


class AugmentedMutualInformationObjective(Objective):
    """IMSAT / MI-D (Hu et al. 2017): mutual information plus self-augmentation consistency.

    The loss is :math:`\\overline{H(\\sigma)} + \\lambda KL(\\bar\\sigma\\|u)`
    (MI-GD, on the clean batch) plus ``sat_weight`` times the self-augmented
    training term :math:`\\frac1T\\sum_t \\overline{KL(\\sigma(x)\\,\\|\\,\\sigma(t(x)))}`
    with :math:`\\sigma(x)` held fixed; the T augmented copies come from
    the step's ``views`` hook.  No pseudo-labels.

    Parameters
    ----------
    lam : float, default=1.0
        Fairness weight (1 gives the mutual information).
    prior : ndarray of shape (K,), default=None
        Cluster proportions; uniform when None.
    sat_weight : float, default=1.0
        Weight of the augmentation-consistency term.
    """

    def __init__(self, *, lam=1.0, prior=None, sat_weight=1.0):
        self.lam = float(lam)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.sat_weight = float(sat_weight)

    def _mi(self, log_proba):
        prior = None if self.prior is None else torch.as_tensor(self.prior, dtype=torch.float32)
        return mutual_information_loss(log_proba, prior, self.lam)

    def __call__(self, step, batch) -> StepOutput:
        lp = step.stacked_log_proba([batch.x] + step.augmented(batch))
        clean = lp[0]
        loss = self._mi(clean)
        if lp.shape[0] > 1:
            target = clean.detach()
            sat = (target.exp() * (target - lp[1:])).sum(dim=2).mean()
            loss = loss + self.sat_weight * sat
        return StepOutput(loss=loss, value=float(loss.detach()), log_proba=clean.detach())

    def batch_loss(self, log_proba):
        loss = self._mi(log_proba)
        return loss, float(loss.detach()), None


def iic_loss(log_p1, log_p2, lam=1.0, eps=1e-8):
    """Negative mutual information between the cluster ids of two views (IIC, Ji et al. 2019).

    :math:`P = \\mathrm{sym}(\\frac1n\\sum_i \\sigma(x_i)\\sigma(x'_i)^\\top)` is the
    joint distribution of the two predictions; the loss is
    :math:`-\\sum_{jk} P_{jk}(\\ln P_{jk} - \\lambda\\ln P_j - \\lambda\\ln P_k)`.

    Parameters
    ----------
    log_p1, log_p2 : torch.Tensor of shape (n, K)
        Log-probabilities of the two views.
    lam : float, default=1.0
        Weight of the marginal entropies (1 is the mutual information).
    eps : float, default=1e-8
        Floor of the joint's entries before the log.

    Returns
    -------
    loss : torch.Tensor
        A scalar (:math:`\\ge -\\ln K` for ``lam=1``).

    Examples
    --------
    >>> import torch
    >>> from skcce._objectives import iic_loss
    >>> lp = torch.log(torch.eye(2).repeat(5, 1) * 0.98 + 0.01)
    >>> round(float(iic_loss(lp, lp)), 2)  # two confident, balanced, agreeing views: -ln 2
    -0.6
    """
    p = (log_p1.exp().T @ log_p2.exp()) / log_p1.shape[0]
    p = ((p + p.T) / 2).clamp_min(eps)
    p = p / p.sum()
    pi, pj = p.sum(dim=1, keepdim=True), p.sum(dim=0, keepdim=True)
    return -(p * (p.log() - lam * pi.log() - lam * pj.log())).sum()


class InvariantInformationObjective(Objective):
    """IIC (Ji et al. 2019): maximize the mutual information between two views' predictions.

    The two views are the first two augmented copies from the step's
    ``views`` hook, or the clean batch and one copy when the hook gives one
    (the batch twice without augmentation).  No pseudo-labels.

    Parameters
    ----------
    lam : float, default=1.0
        Weight of the marginal entropies in :func:`iic_loss`.
    """

    def __init__(self, *, lam=1.0):
        self.lam = float(lam)
        self.prior = None

    def __call__(self, step, batch) -> StepOutput:
        views = step.augmented(batch)
        inputs = views[:2] if len(views) >= 2 else [batch.x] + (views or [batch.x])
        lp = step.stacked_log_proba(inputs)
        loss = iic_loss(lp[0], lp[1], self.lam)
        mean = torch.logsumexp(lp.detach(), dim=0) - np.log(2)
        return StepOutput(loss=loss, value=float(loss.detach()), log_proba=mean)

    def batch_loss(self, log_proba):
        loss = iic_loss(log_proba, log_proba, self.lam)
        return loss, float(loss.detach()), None


class SoftTargetObjective(Objective):
    """Mean :math:`H_2(\\hat y, \\sigma)` (eq. 9) or :math:`H(\\hat y, \\sigma)` to given targets.

    The batch's ``y`` holds the (n, K) targets (:class:`skcce._sources.TargetSource`).

    Parameters
    ----------
    loss : {'collision', 'shannon'}
        The cross-entropy.
    """

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, step, batch) -> StepOutput:
        log_proba = step.log_proba(batch)
        ce = collision_cross_entropy if self.loss == "collision" else shannon_cross_entropy
        loss = ce(log_proba, batch.y)
        return StepOutput(loss=loss, value=float(loss.detach()), log_proba=log_proba.detach())


@torch.no_grad()
def evaluate(objective, log_proba, batches):
    """Mean value and pseudo-labels of ``objective`` for fixed predictions, batch by batch.

    Parameters
    ----------
    objective : Objective
        Gives ``evaluate(log_proba) -> (value, pseudo-labels or None)`` per batch.
    log_proba : torch.Tensor of shape (n, K)
        :math:`\\ln\\sigma` of every row.
    batches : list of ndarray
        Row ids of each batch (the scale at which the fairness term was trained).

    Returns
    -------
    loss : float
        Mean over rows of the per-batch values.
    pseudo_labels : torch.Tensor of shape (n, K) or None

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce._objectives import MutualInformationObjective, evaluate
    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    >>> loss, y = evaluate(MutualInformationObjective(), lp, [np.arange(2)])
    >>> round(loss, 4), y
    (0.6931, None)
    """
    total, y_all = 0.0, None
    for rows in batches:
        idx = torch.from_numpy(np.asarray(rows))
        value, y = objective.evaluate(log_proba[idx])
        total += value * len(idx)
        if y is not None:
            if y_all is None:
                y_all = torch.zeros(log_proba.shape, dtype=torch.float32)
            y_all[idx] = y.float().cpu()
    return total / max(len(log_proba), 1), y_all
