"""TEMI (Adaloglou et al., BMVC 2023) as an objective of the one training loop.

"Exploring the limits of deep image clustering using pretrained models"
trains a clustering head on frozen embeddings.  Each row :math:`x` is paired
with one of its nearest neighbours :math:`x'` in the embedding space; a
student head :math:`q_s` is trained against an exponential-moving-average
(EMA) copy of itself, the teacher :math:`q_t`, with the weighted pointwise
mutual information loss

.. math::

    \\ell(x, x') = -\\,w(x, x')\\,\\ln \\sum_k
        \\frac{\\big(q_s(k|x)\\,q_t(k|x')\\big)^{\\beta}}{\\tilde q_t(k)},
    \\qquad w(x, x') = \\sum_k q_t(k|x)\\,q_t(k|x'),

symmetrized over :math:`(x, x')` and :math:`(x', x)`, and averaged over
heads.  :math:`\\tilde q_t`
is an EMA of the teacher's mean prediction over batches (it keeps the
clusters balanced), :math:`\\beta < 1` flattens the joint so that confident
but wrong pairs cost less, and :math:`w` down-weights pairs the teacher
places in different clusters (likely false neighbours).

What is kept from the published recipe, and what is simplified
----------------------------------------------------------------
Kept: the loss above with :math:`\\beta = 0.6`; the weight :math:`w` from the
teacher; the cluster-marginal EMA with momentum 0.9; the symmetrized pair
loss; student temperature 0.1; a teacher that is an EMA of the student
(:class:`EMATeacher`, a trainer callback updated after every optimizer step).
The pairs come from skcce's own neighbour graph (``n_neighbors`` nearest
neighbours of the standardized features, computed once per fit), as TEMI
mines its pairs once on the frozen embeddings.

Simplified for CPU-sized runs: one head instead of 50 (the estimator's model
is a single head; the published ensemble mainly picks the head with the
lowest loss), the head is the estimator's ``model`` (linear by default)
instead of a 3-layer MLP on top of a ViT embedding, the teacher momentum is
constant at 0.99 instead of 0.996 raised to 1 on a cosine schedule (a fit of
40 epochs of a few batches has a few hundred steps, too few for 0.996), the
teacher temperature is constant (0.1, no warm-up), and there are no image
augmentations (the embeddings are fixed).  ``lam`` is not used: TEMI has
no fairness weight.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skcce._callbacks import Callback
from skcce._objectives import Objective
from skcce._training import StepOutput
from skcce.augment import random_neighbors

__all__ = ["EMATeacher", "TEMIHead", "TEMIObjective", "temi_loss"]

#: The published exponent of the pair's joint probability.
TEMI_BETA = 0.6
#: Heads trained side by side (the paper uses 50; fewer keep CPU fits cheap).
TEMI_HEADS = 10


class TEMIHead(nn.Module):
    """Several cosine clustering heads on L2-normalized features (TEMI's head, without MLP).

    Head h gives the logits :math:`\\langle x/\\|x\\|, w_{hk}/\\|w_{hk}\\|\\rangle`
    (in [-1, 1]; the objective divides them by its temperature).  In
    training mode :meth:`forward` returns the logits of every head side by
    side, shape (n, n_heads * n_clusters), for the loss to average; in eval
    mode (prediction) the logits of the selected head ``head`` only, shape
    (n, n_clusters).

    Parameters
    ----------
    n_features : int
        Input width.
    n_clusters : int
        Clusters K of each head.
    n_heads : int, default=10
        Number of heads.
    generator : torch.Generator, default=None
        Source of the initial prototypes.

    Examples
    --------
    >>> import torch
    >>> from skcce._temi import TEMIHead
    >>> head = TEMIHead(4, 3, n_heads=2, generator=torch.Generator().manual_seed(0))
    >>> tuple(head(torch.ones(5, 4)).shape), tuple(head.eval()(torch.ones(5, 4)).shape)
    ((5, 6), (5, 3))
    """

    def __init__(self, n_features, n_clusters, *, n_heads=TEMI_HEADS, generator=None):
        super().__init__()
        self.n_clusters = n_clusters
        self.prototypes = nn.Parameter(
            torch.randn(n_heads * n_clusters, n_features, generator=generator))
        self.register_buffer("head", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        logits = F.linear(F.normalize(x.flatten(1), dim=1), F.normalize(self.prototypes, dim=1))
        if self.training:
            return logits
        k = self.n_clusters
        start = int(self.head) * k
        return logits[:, start:start + k]


def temi_loss(student_log_proba, teacher_proba, weight, log_marginal, beta=TEMI_BETA):
    """Weighted PMI loss of TEMI for one direction of the pairs, averaged over rows.

    Parameters
    ----------
    student_log_proba : torch.Tensor of shape (n, K)
        :math:`\\ln q_s(k|x)` of the student on the rows.
    teacher_proba : torch.Tensor of shape (n, K)
        :math:`q_t(k|x')` of the teacher on their partners (no gradient).
    weight : torch.Tensor of shape (n,)
        :math:`w(x, x')` of each pair (no gradient).
    log_marginal : torch.Tensor of shape (K,)
        :math:`\\ln \\tilde q_t(k)`.
    beta : float, default=0.6
        Exponent of the pair's joint probability.

    Returns
    -------
    loss : torch.Tensor
        :math:`-\\overline{w \\ln \\sum_k (q_s q_t)^\\beta / \\tilde q_t}`, a scalar.

    Examples
    --------
    >>> import torch
    >>> from skcce._temi import temi_loss
    >>> p = torch.full((1, 2), 0.5)
    >>> value = temi_loss(p.log(), p, torch.ones(1), p[0].log(), beta=1.0)
    >>> round(float(value), 4)  # -ln(2 * 0.25 / 0.5) = 0
    -0.0
    """
    log_teacher = teacher_proba.clamp_min(1e-30).log()
    pmi = torch.logsumexp(beta * (student_log_proba + log_teacher) - log_marginal, dim=1)
    return -(weight * pmi).mean()


class EMATeacher(Callback):
    """The teacher of TEMI: an exponential moving average of the trained model.

    A copy of ``trainer.model`` is made when training begins; after every
    optimizer step its parameters move to
    :math:`\\theta_t \\leftarrow m\\,\\theta_t + (1 - m)\\,\\theta_s` (buffers
    are copied).  The objective reads the teacher through :meth:`logits`;
    the trainer itself never sees it.

    Parameters
    ----------
    momentum : float, default=0.99
        EMA momentum :math:`m` (1 freezes the teacher, 0 makes it the student).

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from skcce._temi import EMATeacher
    >>> student = torch.nn.Linear(2, 2)
    >>> teacher = EMATeacher(momentum=0.5)
    >>> teacher.on_train_begin(SimpleNamespace(model=student))
    >>> with torch.no_grad():
    ...     _ = student.bias.add_(1.0)
    >>> teacher.on_batch_end(SimpleNamespace(model=student), None, None)
    >>> bool(torch.allclose(teacher.model.bias, student.bias - 0.5))
    True
    """

    def __init__(self, momentum=0.99):
        self.momentum = momentum
        self.model = None
        self.best_head = None  # set by the objective: the head with the lowest recent loss

    def on_train_begin(self, trainer):
        self.model = copy.deepcopy(trainer.model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_batch_end(self, trainer, batch, output):
        m = self.momentum
        for t, s in zip(self.model.parameters(), trainer.model.parameters(), strict=True):
            t.mul_(m).add_(s.detach(), alpha=1.0 - m)
        for t, s in zip(self.model.buffers(), trainer.model.buffers(), strict=True):
            t.copy_(s)

    def on_train_end(self, trainer, result):
        """Predict with the head of lowest loss (a :class:`TEMIHead`'s ``head``)."""
        head = getattr(trainer.model, "head", None)
        if self.best_head is not None and isinstance(head, torch.Tensor):
            head.fill_(int(self.best_head))

    @torch.no_grad()
    def logits(self, x):
        """Logits of the teacher for inputs ``x`` (every head, as the student in training)."""
        self.model.train()
        try:
            return self.model(x).float()
        finally:
            self.model.eval()


class TEMIObjective(Objective):
    """TEMI's symmetrized, teacher-weighted PMI loss on neighbour pairs (see the module).

    For each row i of the batch a random neighbour j is drawn from
    ``neighbors``; the student sees both rows in one forward pass, the
    teacher (``teacher``, an :class:`EMATeacher` registered as a callback of
    the same trainer) predicts both without gradient, and the loss is
    :math:`\\frac12[\\ell(x_i, x_j) + \\ell(x_j, x_i)]` (:func:`temi_loss`),
    averaged over heads when the model's training output holds several
    heads side by side (:class:`TEMIHead`: width ``n_heads * n_clusters``).
    The cluster marginals :math:`\\tilde q_t` (one per head) are updated
    after each batch, and so is a running mean of each head's loss, whose
    argmin is the head the model predicts with after training.  No
    pseudo-labels.

    Parameters
    ----------
    neighbors : ndarray of shape (n_samples, k)
        Neighbour ids of each training row.
    teacher : EMATeacher
        The EMA teacher, updated by the trainer's callbacks.
    n_clusters : int
        Number of clusters K.
    beta : float, default=0.6
        Exponent of the pair's joint probability.
    student_temp, teacher_temp : float, default=0.1
        Softmax temperatures of the student and the teacher.
    marginal_momentum : float, default=0.9
        EMA momentum of the teacher's cluster marginal.
    """

    def __init__(self, neighbors, teacher, n_clusters, *, beta=TEMI_BETA, student_temp=0.1,
                 teacher_temp=0.1, marginal_momentum=0.9):
        self.neighbors = neighbors
        self.teacher = teacher
        self.beta = float(beta)
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.marginal_momentum = float(marginal_momentum)
        self.n_clusters = int(n_clusters)
        self.marginal = None  # (n_heads, K), made on the first batch
        self.head_loss = None
        self.prior = None

    def __call__(self, step, batch) -> StepOutput:
        n, k = len(batch.x), self.n_clusters
        j = random_neighbors(self.neighbors, batch.indices, step.generator)
        x = torch.cat([batch.x, step.rows(j)])
        logits = step.forward(x).float().reshape(2 * n, -1, k)  # (2n, heads, K)
        n_heads = logits.shape[1]
        student = torch.log_softmax(logits / self.student_temp, dim=2)
        teacher = torch.softmax(self.teacher.logits(x).reshape(2 * n, n_heads, k)
                                / self.teacher_temp, dim=2)
        if self.marginal is None:
            self.marginal = torch.full((n_heads, k), 1.0 / k)
            self.head_loss = torch.zeros(n_heads)
        marginal = self.marginal.to(logits.device)
        log_marginal = marginal.log()
        losses = []
        for h in range(n_heads):
            s, t = student[:, h], teacher[:, h]
            weight = (t[:n] * t[n:]).sum(dim=1)
            losses.append(0.5 * (temi_loss(s[:n], t[n:], weight, log_marginal[h], self.beta)
                                 + temi_loss(s[n:], t[:n], weight, log_marginal[h], self.beta)))
        losses = torch.stack(losses)
        loss = losses.mean()
        m = self.marginal_momentum
        self.marginal = (m * marginal + (1 - m) * teacher.mean(dim=0)).cpu()
        self.head_loss = m * self.head_loss + (1 - m) * losses.detach().cpu()
        best = int(self.head_loss.argmin())
        self.teacher.best_head = best
        log_proba = torch.log_softmax(logits[:n, best], dim=1)
        return StepOutput(loss=loss, value=float(loss.detach()), log_proba=log_proba)

    def batch_loss(self, log_proba):
        """The loss of a fixed model with each row as its own partner and teacher.

        :math:`\\tilde q_t` is the batch's mean prediction; this is the value
        ``score`` (images) and the final ``loss_`` report.
        """
        proba = log_proba.exp()
        weight = (proba * proba).sum(dim=1)
        log_marginal = proba.mean(dim=0).clamp_min(1e-30).log()
        loss = temi_loss(log_proba, proba, weight, log_marginal, self.beta)
        value = float(loss.detach())
        return loss, value if np.isfinite(value) else float("nan"), None
